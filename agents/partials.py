"""Partials exchange: each partition's partial on the compacted internal partials topic.

A worker publishes the partial of every partition it owns under a *base key*
(``deals:<p>``, ``pulse:<p>``); every worker reads them all and merges the latest one per
base key (README "Wire format and topics").  A partial's size grows with the number of
distinct dimension values (owners, teams, regions, stages, days, stalled deals), so a
publication is split into chunks of at most :data:`CHUNK_BYTES` bytes and no record ever
reaches the broker's message size limit (1 MB by default), whatever the input:

* chunk 0 goes under the base key itself (so it replaces a partial of an older format),
  chunk ``i`` under ``<base>#<i>``; all chunks of a base key go to one partition of the
  partials topic (:func:`partition_for`), so they are read in the order written;
* a chunk's value is a one-line JSON header, ``\\n``, then the chunk's slice of the
  partial's UTF-8 JSON: ``{"writer": "3f2a9c", "seq": 17, "part": 0, "parts": 3}``.
  ``seq`` numbers the publications of a base key (one more than the highest seen);
  ``(writer, seq)`` identifies one publication;
* a reader assembles a publication once all its parts arrived and then replaces the base
  key's partial: the latest *complete* publication in log order wins.  Chunks of a
  publication that never completes (its writer died half-way, or compaction already
  replaced one of its chunks) are never used;
* a publication with fewer chunks than the previous one tombstones the extra chunk keys,
  so compaction removes them.

Values without a header (the unchunked JSON of earlier versions) are ignored: their
partitions are republished in the current format when their owner starts.

Every worker follows the topic (:class:`PartialsReader`: no consumer group, from the
beginning) into its :class:`PartialBook`; the merged views every answer and the global
outputs come from are the merge of the book's latest partial per partition.
"""

from __future__ import annotations

import asyncio
import json
import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import uuid4

from agents.followers import follow_topic
from agents.settings import Settings
from streams.pipeline_views import merge_partials

log = logging.getLogger(__name__)

CHUNK_BYTES = 256 * 1024  # a quarter of Kafka's default max.message.bytes: room for key + header
_SEP = "#"
_MAX_PENDING = 4  # incomplete publications kept per base key (writers overlap in a rebalance)


def chunk_key(base: str, part: int) -> str:
    return base if part == 0 else f"{base}{_SEP}{part}"


def split_key(key: str) -> tuple[str, int]:
    """``deals:3#2`` -> (``deals:3``, 2); ``deals:3`` -> (``deals:3``, 0)."""
    base, sep, part = key.rpartition(_SEP)
    if sep and part.isdigit():
        return base, int(part)
    return key, 0


def partition_for(base: str, partitions: int) -> int:
    """The partials-topic partition of every chunk of ``base`` (stable across processes)."""
    return zlib.crc32(base.encode()) % partitions


@dataclass
class PartialExchange:
    """Chunks this worker's partials for publishing and reassembles what it reads.

    One object per worker: the publisher side numbers publications after the highest
    ``seq`` it has seen for a base key (its own or another worker's), and tombstones chunk
    keys that an earlier publication of the base key used.
    """

    chunk_bytes: int = CHUNK_BYTES
    writer: str = field(default_factory=lambda: uuid4().hex[:12])
    _seq: dict[str, int] = field(default_factory=dict)
    _parts: dict[str, int] = field(default_factory=dict)
    _pending: dict[str, dict[tuple[str, int], dict[int, bytes]]] = field(default_factory=dict)

    def encode(self, base: str, partial: Any) -> list[tuple[str, bytes | None]]:
        """The records (key, value) of one publication of ``partial`` under ``base``:
        its chunks, then tombstones for chunk keys an earlier publication left behind."""
        body = json.dumps(partial, separators=(",", ":")).encode()
        size = self.chunk_bytes
        parts = max(1, -(-len(body) // size))
        seq = self._seq.get(base, 0) + 1
        self._seq[base] = seq
        out: list[tuple[str, bytes | None]] = []
        for i in range(parts):
            header = json.dumps({"writer": self.writer, "seq": seq, "part": i, "parts": parts})
            out.append((chunk_key(base, i), header.encode() + b"\n" + body[i * size : (i + 1) * size]))
        out += [(chunk_key(base, i), None) for i in range(parts, self._parts.get(base, 0))]
        self._parts[base] = parts
        return out

    def receive(self, key: str, value: bytes | None) -> tuple[str, Any] | None:
        """Fold one record of the partials topic in; ``(base, partial)`` when it completes
        a publication, else None."""
        base, part = split_key(key)
        pending = self._pending.setdefault(base, {})
        if value is None:  # a tombstoned chunk key: no publication can use what it held
            for chunks in pending.values():
                chunks.pop(part, None)
            return None
        head, sep, body = value.partition(b"\n")
        try:
            if not sep:
                raise ValueError("no header")
            header = json.loads(head)
            writer, seq, parts = header["writer"], int(header["seq"]), int(header["parts"])
            if int(header["part"]) != part or not 0 <= part < parts:
                raise ValueError(f"part {header['part']} under key {key!r}")
        except (ValueError, TypeError, KeyError) as exc:
            log.debug("partial_ignored key=%s reason=%r", key, exc)
            return None
        self._seq[base] = max(self._seq.get(base, 0), seq)
        self._parts[base] = max(self._parts.get(base, 0), parts)
        publication = (str(writer), seq)
        chunks = pending.pop(publication, {})  # re-inserted last: the dict stays in arrival order
        chunks[part] = body
        if len(chunks) < parts:
            pending[publication] = chunks
            while len(pending) > _MAX_PENDING:
                del pending[next(iter(pending))]
            return None
        try:
            partial = json.loads(b"".join(chunks[i] for i in range(parts)))
        except ValueError as exc:
            log.warning("partial_unreadable base=%s writer=%s seq=%s error=%s", base, writer, seq, exc)
            return None
        return base, partial


@dataclass
class PartialBook:
    """Latest partial per ``<view>:<partition>`` as read from the partials topic."""

    latest: dict[str, dict[str, Any]] = field(default_factory=dict)
    version: int = 0  # bumped on every put: global outputs are recomputed only on change

    def put(self, key: str, partial: dict[str, Any]) -> None:
        self.latest[key] = partial
        self.version += 1

    def parts(self, view: str) -> list[dict[str, Any]]:
        prefix = view + ":"
        return [v for k, v in sorted(self.latest.items()) if k.startswith(prefix)]


def merge_deal_partials(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The global deal partial: views merged, firing stalled alerts of every partition,
    and the highest partition watermark."""
    return {
        "views": merge_partials([p["views"] for p in parts]),
        "stalled": sorted((a for p in parts for a in p.get("stalled", [])), key=lambda a: a["alert_id"]),
        "watermark": max((p.get("watermark", 0) for p in parts), default=0),
    }


class PartialsReader:
    """Follows the partials topic and the alerts topic (for ``on_alert``: the eNPS drop
    alerts a publisher must know) from the beginning on every worker
    (:func:`agents.followers.follow_topic`).  ``caught_up`` turns true once both were read
    to the end offsets measured at start: until then the merged views would miss
    partitions."""

    def __init__(
        self,
        settings: Settings,
        book: PartialBook,
        exchange: PartialExchange,
        on_alert: Callable[[bytes], None],
    ) -> None:
        self.settings = settings
        self.book = book
        self.exchange = exchange
        self.on_alert = on_alert
        self.caught_up = False
        self._pending = {settings.topic("partials"), settings.alerts_topic}

    def _partial(self, key: bytes, value: bytes | None) -> None:
        if value is not None:
            done = self.exchange.receive(key.decode(), value)
            if done is not None:
                self.book.put(*done)

    def _alert(self, _key: bytes, value: bytes | None) -> None:
        if value is not None:
            self.on_alert(value)

    def _read_to_end(self, topic: str) -> Callable[[], None]:
        def caught_up() -> None:
            self._pending.discard(topic)
            if not self._pending:
                self.caught_up = True
                log.info("partials_reader_caught_up partials=%s", len(self.book.latest))

        return caught_up

    async def run(self) -> None:
        s = self.settings
        partials, alerts = s.topic("partials"), s.alerts_topic
        async with asyncio.TaskGroup() as followers:
            followers.create_task(
                follow_topic(s, partials, self._partial, self._read_to_end(partials), "partials")
            )
            followers.create_task(follow_topic(s, alerts, self._alert, self._read_to_end(alerts), "alerts"))
