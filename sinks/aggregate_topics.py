"""Aggregate-topic sink: merged views as Avro records on compacted topics.

Each row has a stable key (its dimension), so a compacted topic keeps the latest value
of every dimension.  Only rows whose content changed since the last publication are
sent (``as_of`` is left out of the comparison), and a row that disappeared is sent as a
tombstone (null value) so compaction drops it.  Records are handed to an async ``send``
(the worker's Faust producer) in one batch per flush.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from schemas.codec import Codec
from sinks.base import SinkUnavailable

Send = Callable[[str, bytes, bytes | None], Awaitable[Any]]


class AggregateTopicSink:
    name = "aggregate-topics"

    def __init__(self, send: Send) -> None:
        self._send = send
        self._published: dict[str, dict[str, str]] = {}
        self._pending: dict[str, tuple[Codec, int, dict[str, dict[str, Any]]]] = {}

    def add(self, topic: str, codec: Codec, as_of: int, rows: dict[str, dict[str, Any]]) -> None:
        """Buffer the full current set of rows of one view (``{key: record-without-as_of}``)."""
        self._pending[topic] = (codec, as_of, rows)

    async def aflush(self) -> int:
        """Send changed rows and tombstones; return how many records were sent."""
        sent = 0
        for topic, (codec, as_of, rows) in list(self._pending.items()):
            before = self._published.get(topic, {})
            now = {k: json.dumps(v, sort_keys=True, default=str) for k, v in rows.items()}
            try:
                for key, fingerprint in now.items():
                    if before.get(key) != fingerprint:
                        await self._send(topic, key.encode(), codec.encode({**rows[key], "as_of": as_of}))
                        sent += 1
                for key in before.keys() - now.keys():
                    await self._send(topic, key.encode(), None)
                    sent += 1
            except Exception as exc:  # the producer's errors vary by client; all mean "retry"
                raise SinkUnavailable(f"publishing to {topic} failed: {exc}") from exc
            self._published[topic] = now
            del self._pending[topic]
        return sent
