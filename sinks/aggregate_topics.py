"""Aggregate-topic sink: merged views as Avro records on compacted topics.

Each row has a stable key (its dimension), so a compacted topic keeps the latest value
of every dimension.  Only rows whose content changed since the last publication are
sent (``as_of`` is left out of the comparison), and a row that disappeared is sent as a
tombstone (null value) so compaction drops it.  Records are handed to an async ``send``
(the worker's Faust producer) in one batch per flush; ``send`` returns the record's
delivery (an awaitable of the broker's acknowledgement), and a row counts as published
only once its delivery is acknowledged.

Failures never lose a row: what was acknowledged is remembered per row, so the next flush
sends exactly what is still missing, whether its send was refused or its delivery failed
later (a batch the producer gave up on, a record abandoned when the worker stopped).  A
refused send stops the flush (the broker is likely unreachable: the other topics wait
too); a row its schema cannot hold is skipped and the rest of the batch still goes out.
Either way :meth:`flush` ends with :class:`SinkUnavailable` naming what failed, and the
caller counts it and retries.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from schemas.codec import Codec
from sinks.base import Sink, SinkError, SinkUnavailable, ViewRows

#: ``await send(topic, key, value)`` enqueues a record and returns its delivery
Send = Callable[[str, bytes, bytes | None], Awaitable[Awaitable[Any]]]


class AggregateTopicSink(Sink):
    """``codecs`` maps each view to the Avro record of its topic, ``topic_of`` a view to
    its topic name."""

    name = "aggregate-topics"

    def __init__(self, send: Send, codecs: dict[str, Codec], topic_of: Callable[[str], str]) -> None:
        self._send = send
        self._codecs = codecs
        self._topic_of = topic_of
        self._published: dict[str, dict[str, str]] = {}
        self._pending: dict[str, tuple[Codec, int, dict[str, dict[str, Any]]]] = {}

    def setup(self) -> None:
        """Nothing to connect: the worker's producer is the connection."""

    def add(self, item: ViewRows) -> None:
        """Buffer the full current set of rows of one view; a view without a codec is a bug
        in the caller, refused at once."""
        codec = self._codecs.get(item.view)
        if codec is None:
            raise SinkError(f"no aggregate topic schema for view {item.view!r}")
        self._pending[self._topic_of(item.view)] = (codec, item.as_of, item.rows)

    async def flush(self) -> int:
        """Send changed rows and tombstones and wait for their acknowledgements; return
        how many records were acknowledged."""
        sent = 0
        unencodable: list[str] = []
        for topic, (codec, as_of, rows) in list(self._pending.items()):
            sent += await self._flush_topic(topic, codec, as_of, rows, unencodable)
        if unencodable:
            raise SinkUnavailable("rows the schema cannot hold: " + "; ".join(unencodable))
        return sent

    async def _flush_topic(
        self, topic: str, codec: Codec, as_of: int, rows: dict[str, dict[str, Any]], unencodable: list[str]
    ) -> int:
        """One topic's share of :meth:`flush`; rows its schema cannot hold are added to
        ``unencodable`` and the topic stays pending."""
        published = self._published.setdefault(topic, {})
        now = {k: json.dumps(v, sort_keys=True, default=str) for k, v in rows.items()}
        changes: list[tuple[str, str | None]] = [
            (key, fingerprint) for key, fingerprint in now.items() if published.get(key) != fingerprint
        ]
        changes += [(key, None) for key in sorted(published.keys() - now.keys())]
        skipped = 0
        deliveries: list[tuple[str, str | None, Awaitable[Any]]] = []
        refused: Exception | None = None
        failed: Exception | None = None
        for key, fingerprint in changes:
            value = None
            if fingerprint is not None:
                try:
                    value = codec.encode({**rows[key], "as_of": as_of})
                except Exception as exc:  # fastavro raises several types for a bad datum
                    skipped += 1
                    if skipped == 1:
                        unencodable.append(f"{topic} key {key[:80]!r}: {type(exc).__name__}: {exc}")
                    continue
            try:
                delivery = await self._send(topic, key.encode(), value)
            except Exception as exc:  # the producer's errors vary by client; all mean "retry"
                refused = exc
                break
            deliveries.append((key, fingerprint, delivery))
        sent = 0
        for key, fingerprint, delivery in deliveries:
            try:
                await delivery
            except Exception as exc:
                failed = failed or exc
                continue
            sent += 1
            if fingerprint is None:
                del published[key]
            else:
                published[key] = fingerprint
        error = refused or failed
        if error is not None:
            raise SinkUnavailable(f"publishing to {topic} failed: {error}") from error
        if skipped:
            unencodable[-1] += f" ({skipped} rows skipped)"
        else:
            del self._pending[topic]
        return sent
