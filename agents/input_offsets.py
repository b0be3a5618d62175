"""Every input record is processed before its offset is committed: no skipped fetch.

Two quirks of the client stack can skip input records, and Faust then commits past them:

1. While it recovers tables after a rebalance, Faust's consumer still fetches;
   ``Consumer.getmany`` *drops* what it fetched (flow stopped, generation changed) and
   calls ``perform_seek`` to go back to the committed offsets.  aiokafka's
   ``seek_to_committed`` only seeks when the committed offset is positive
   (``if offset and offset > 0``), so a never-committed partition keeps its position
   after the dropped records: its first fetch (up to ``broker_max_poll_records``) was
   skipped.  faust-streaming 0.15.3 ``transport/consumer.py``, aiokafka 0.14.
2. Faust's drain loop remembers the last offset it delivered per partition
   (``Consumer._read_offset``), silently drops records below it and *acks* any jump past
   it as a "gap" (meant for compacted or transactional topics).  After a seek back in the
   middle of a pipelined fetch, the records it dropped left a jump, and the jump was
   acked, so the commit skipped them.

3. Faust commits the end of the first run of consecutive acked offsets *wherever it
   starts*: its head-gap check runs only when a positive offset was committed, and even
   then lets one missing record through (``min(acked) - committed > 1``).  Records acked
   past a skipped range are committed before the range is processed.

The fix, installed by :func:`install` on the app's consumer:

* after Faust's ``perform_seek``, never-committed input partitions are sought to 0 (the
  broker answers "out of range" when the log starts later and ``auto_offset_reset``
  moves to the first record);
* Faust's read offsets are never consulted (:class:`_Unread`): nothing is dropped as
  already read (a record delivered twice is applied twice, which the core makes a no-op)
  and no jump is acked as a gap;
* :class:`InputPositions` follows the next offset expected per input partition; when a
  record arrives past it, the agent seeks back to the first missing offset, so the
  skipped records are fetched again;
* a followed partition commits only when its acked offsets start at its start (the
  committed offset, or the partition's earliest offset when none was committed): until
  the skipped records are acked, nothing past them is committed.

Compacted inputs (the stall-check topic) have real gaps and are not followed; with read
offsets off, Faust no longer acks their gaps either, so after a compaction their commits
wait at the first gap and a restart re-reads those checks (each is a no-op when repeated).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
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


class _Unread(dict[Any, int | None]):
    """Faust's ``_read_offset`` that always reads as "nothing read yet"."""

    def __getitem__(self, tp: Any) -> None:
        return None


class InputPositions:
    """The next offset expected per followed input partition (see the module docstring)."""

    def __init__(self, committed: Callable[[Any], int | None], topics: Collection[str]) -> None:
        self._committed = committed
        self.topics = frozenset(topics)
        self._expected: dict[Any, int] = {}
        self._sought: dict[Any, int] = {}
        self._earliest: dict[Any, int] = {}

    def reset(self, earliest: Mapping[Any, int] | None = None) -> None:
        """Forget positions: after a seek they restart from the committed offsets, or from
        ``earliest`` for the partitions without one."""
        self._expected.clear()
        self._sought.clear()
        self._earliest = dict(earliest or {})

    def start(self, tp: Any) -> int:
        """The first offset this partition must process: the committed offset, else its
        earliest offset."""
        committed = self._committed(tp)
        return committed if committed is not None else self._earliest.get(tp, 0)

    def may_commit(self, tp: Any, acked: Collection[int]) -> bool:
        """False while the acked offsets of a followed partition do not start at its start."""
        return tp.topic not in self.topics or not acked or min(acked) <= self.start(tp)

    def observe(self, tp: Any, offset: int) -> int | None:
        """Note a delivered record; the first missing offset when it arrived past the
        expected one and no seek back to it was asked for yet, else None."""
        if tp.topic not in self.topics:
            return None
        expected = self._expected.get(tp)
        if expected is None:
            expected = self.start(tp)
        if offset <= expected:
            self._expected[tp] = max(expected, offset + 1)
            return None
        self._expected[tp] = expected
        if self._sought.get(tp) == expected:
            return None
        self._sought[tp] = expected
        return expected


def install(consumer: Any, topics: Collection[str], followed: Collection[str]) -> InputPositions:
    """Patch the app consumer as described above; ``topics`` are the input topics,
    ``followed`` those of them without compaction."""
    positions = InputPositions(lambda tp: consumer._committed_offset.get(tp), followed)
    consumer._read_offset = _Unread()
    faust_seek: Callable[[], Awaitable[None]] = consumer.perform_seek
    faust_new_offset: Callable[[Any], int | None] = consumer._new_offset

    async def perform_seek() -> None:
        await faust_seek()
        # perform_seek stored the positive committed offsets it found
        rewind = unstarted(consumer.assignment(), consumer._committed_offset.get, topics)
        earliest = dict(await consumer.earliest_offsets(*rewind)) if rewind else {}
        positions.reset(earliest)
        if rewind:
            # seek_wait seeks in the consumer's own thread; Consumer.seek calls the client
            # from this thread, and the client's fetcher can miss the wake-up and stall
            await consumer.seek_wait({tp: earliest.get(tp, 0) for tp in rewind})
        if rewind:
            log.info(
                "rewind_uncommitted partitions=%s", ",".join(f"{tp.topic}:{tp.partition}" for tp in rewind)
            )

    def new_offset(tp: Any) -> int | None:
        if not positions.may_commit(tp, consumer._acked[tp]):
            return None  # a head gap: the skipped records are being fetched again
        return faust_new_offset(tp)

    consumer.perform_seek = perform_seek
    consumer._new_offset = new_offset
    return positions
