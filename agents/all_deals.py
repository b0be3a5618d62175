"""Every deal of every partition, on every worker: a follower of the deals changelog.

A worker's Faust ``deals`` table holds only the partitions it is assigned, but the
forecast, attainment and commission need every deal with its observations.  The table's
changelog topic (``<app_id>-deals-changelog``: compacted, key = deal id, value =
:class:`~agents.records.DealRecord` bytes, tombstones possible) holds all of them, so each
worker follows it from the beginning with a plain consumer without a group, the way
the partials reader follows the partials topic (:func:`agents.followers.follow_topic`).

The event path stays cheap: a record only replaces the raw bytes of its key.  Decoding
happens when someone asks for :meth:`AllDeals.deals` (the forecast timer, off the event
loop), and a decoded deal is kept until the bytes of its key change.

*Caught up* means: every partition's position has reached the end offset measured when
the follower started (not "a fetch came back empty", which a slow broker also produces).
Until then the global figures would miss deals, and the worker computes none.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from agents.followers import follow_topic
from agents.records import DealRecord
from agents.settings import Settings
from streams.deals import Deal

log = logging.getLogger(__name__)


class DealDecoder:
    """Decodes raw deal records, keeping each decoded deal until the bytes of its key
    change: a forecast run decodes only what changed since the previous run.  One caller
    at a time (the runs are); it works in whichever process runs the forecast."""

    def __init__(self) -> None:
        self._cache: dict[bytes, tuple[bytes, Deal]] = {}

    def decode(self, records: Iterable[tuple[bytes, bytes]]) -> tuple[list[Deal], list[tuple[bytes, str]]]:
        """The deals of ``records`` (key, value), and the records that did not decode
        (key, error): a record this version cannot read is left out, never fatal."""
        cache = self._cache
        out: list[Deal] = []
        bad: list[tuple[bytes, str]] = []
        seen: set[bytes] = set()
        for key, value in records:
            seen.add(key)
            hit = cache.get(key)
            if hit is not None and hit[0] == value:
                out.append(hit[1])
                continue
            try:
                deal = DealRecord.from_bytes(value).deal
            except Exception as exc:  # a record this version cannot read: skip, say so
                bad.append((key, repr(exc)))
                continue
            cache[key] = (value, deal)
            out.append(deal)
        for key in cache.keys() - seen:
            del cache[key]
        return out, bad


def changelog_topic(settings: Settings, table: str = "deals") -> str:
    """The changelog topic Faust keeps for ``table`` (``<app_id>-<table>-changelog``)."""
    return f"{settings.app_id}-{table}-changelog"


class AllDeals:
    """Raw deal records by key, decoded on demand (module doc)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = changelog_topic(settings)
        self._raw: dict[bytes, bytes] = {}
        self._decoder = DealDecoder()
        self.caught_up = False
        self.version = 0  # bumped on every change: recompute only when it moved

    # ----------------------------------------------------------------- records
    def put(self, key: bytes, value: bytes | None) -> None:
        """One changelog record; a tombstone (None or empty) forgets the key."""
        if not value:
            if self._raw.pop(key, None) is not None:
                self.version += 1
            return
        if self._raw.get(key) != value:
            self._raw[key] = value
            self.version += 1

    def __len__(self) -> int:
        return len(self._raw)

    def snapshot(self) -> list[tuple[bytes, bytes]]:
        """The raw records as they are now: taken on the event loop, so that decoding in
        another thread never sees the dict change under it."""
        return list(self._raw.items())

    def decode(self, snapshot: Iterable[tuple[bytes, bytes]]) -> list[Deal]:
        """The deals of a :meth:`snapshot` (see :class:`DealDecoder`); a record that does
        not decode is logged and left out."""
        deals, bad = self._decoder.decode(snapshot)
        for key, error in bad:
            log.warning("all_deals_undecodable key=%r error=%s", key[:80], error)
        return deals

    def deals(self) -> list[Deal]:
        """Every current deal (decoded lazily, see :meth:`decode`)."""
        return self.decode(self.snapshot())

    # ----------------------------------------------------------------- follower
    async def follow(self) -> None:
        """Follow the changelog from the beginning, without a consumer group (module doc)."""
        await follow_topic(self.settings, self.topic, self.put, self._caught_up, "all_deals")

    def _caught_up(self) -> None:
        self.caught_up = True
        log.info("all_deals_caught_up topic=%s deals=%s", self.topic, len(self._raw))
