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

**What a topic already holds.**  Which rows are on a topic is known from what this sink
acknowledged, and a publisher that just started (a restart, or partition 0 moving to
another worker) has acknowledged nothing: a row an earlier publisher wrote that is gone
from the views now would never get its tombstone and stay on the compacted topic.  So
before its first flush to a topic the sink reads the keys the topic holds (``existing``)
and counts them as published with unknown content: the first flush rewrites every current
row and sends a tombstone for every other key.  :meth:`forget` (the worker stopped
publishing) drops what it knows, so a later return to publishing reads the topics again.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from schemas.codec import Codec
from sinks.base import Sink, SinkError, SinkUnavailable, ViewRows

#: ``await send(topic, key, value)`` enqueues a record and returns its delivery
Send = Callable[[str, bytes, bytes | None], Awaitable[Awaitable[Any]]]
#: ``await existing(topic)``: the keys the topic holds now (its latest record not a tombstone)
Existing = Callable[[str], Awaitable[set[bytes]]]
#: the fingerprint of a row read from the topic: differs from every real one
UNKNOWN = ""


class AggregateTopicSink(Sink):
    """``codecs`` maps each view to the Avro record of its topic, ``topic_of`` a view to
    its topic name."""

    name = "aggregate-topics"

    def __init__(
        self,
        send: Send,
        codecs: dict[str, Codec],
        topic_of: Callable[[str], str],
        existing: Existing | None = None,
    ) -> None:
        self._send = send
        self._existing = existing
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
        await self._learn(list(self._pending))
        for topic, (codec, as_of, rows) in list(self._pending.items()):
            sent += await self._flush_topic(topic, codec, as_of, rows, unencodable)
        if unencodable:
            raise SinkUnavailable("rows the schema cannot hold: " + "; ".join(unencodable))
        return sent

    def forget(self) -> None:
        self._published.clear()

    async def _learn(self, topics: list[str]) -> None:
        """Count the keys each of ``topics`` holds as published (module doc); the topics
        are read concurrently, and one that cannot be read is asked again next flush."""
        unknown = [t for t in topics if t not in self._published]
        if not unknown:
            return
        if self._existing is None:
            self._published.update((t, {}) for t in unknown)
            return
        found = await asyncio.gather(*(self._existing(t) for t in unknown), return_exceptions=True)
        failed = []
        for topic, held in zip(unknown, found, strict=True):
            if isinstance(held, BaseException):  # a broker outage, a timeout
                failed.append(f"{topic}: {type(held).__name__}: {held}".rstrip(": "))
            else:
                self._published[topic] = {k.decode(errors="replace"): UNKNOWN for k in held}
        if failed:
            raise SinkUnavailable("cannot read which keys these topics hold: " + "; ".join(failed))

    async def _flush_topic(
        self, topic: str, codec: Codec, as_of: int, rows: dict[str, dict[str, Any]], unencodable: list[str]
    ) -> int:
        """One topic's share of :meth:`flush`; rows its schema cannot hold are added to
        ``unencodable`` and the topic stays pending."""
        published = self._published[topic]
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
