"""Input partitions without a committed offset restart from their beginning, not from
wherever the client's fetch position happens to be.

Why this exists: while Faust recovers tables after a rebalance, its consumer still fetches,
and ``Consumer.getmany`` *drops* what it fetched (flow stopped, or the generation changed
mid-iteration), then calls ``perform_seek`` to go back to the committed offsets.  aiokafka's
``seek_to_committed`` only seeks when the committed offset is a positive number
(``if offset and offset > 0``), so a partition that has never been committed (or was
committed at 0) keeps the position *after* the dropped records.  The stream then starts
after them, and Faust's commit (the end of the first contiguous run of acked offsets)
commits past them: the first fetch of that partition, up to ``broker_max_poll_records``
records, is lost for good.  faust-streaming 0.15.3 (``faust/transport/consumer.py``
``getmany``), aiokafka 0.14 (``AIOKafkaConsumer.seek_to_committed``).

:func:`install` wraps the app consumer's ``perform_seek``: after Faust's seek, every
assigned partition of the given input topics that has no positive committed offset is
sought to offset 0 (the broker answers "out of range" if the log starts later, and the
consumer's ``auto_offset_reset=earliest`` moves it to the first record).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection
from typing import Any

log = logging.getLogger(__name__)


def unstarted(
    assignment: Collection[Any], committed: Callable[[Any], int | None], topics: Collection[str]
) -> list[Any]:
    """The assigned partitions of ``topics`` whose committed offset is missing or 0."""
    return sorted(
        (tp for tp in assignment if tp.topic in topics and not committed(tp)),
        key=lambda tp: (tp.topic, tp.partition),
    )


def install(consumer: Any, topics: Collection[str]) -> None:
    """Make ``consumer.perform_seek`` also rewind never-committed input partitions."""
    faust_seek: Callable[[], Awaitable[None]] = consumer.perform_seek

    async def perform_seek() -> None:
        await faust_seek()
        # perform_seek stored the positive committed offsets it found
        rewind = unstarted(consumer.assignment(), consumer._committed_offset.get, topics)
        for tp in rewind:
            await consumer.seek(tp, 0)
        if rewind:
            log.info(
                "rewind_uncommitted partitions=%s", ",".join(f"{tp.topic}:{tp.partition}" for tp in rewind)
            )

    consumer.perform_seek = perform_seek
