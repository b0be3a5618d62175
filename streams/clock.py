"""Injectable clocks: wall time for the live worker, fixed time for tests, event time per partition.

Nothing in the core calls ``time.time()`` itself (docs/design.md, principle 6):
whoever needs "now" is handed a :class:`Clock`.  All times are integer epoch milliseconds.

Event time is tracked with a :class:`Watermark` per Kafka partition: the largest event time
seen minus the allowed lateness.  An event older than the watermark is *late*; it is still
applied where the state holds it, and the caller counts it (``salesops_late_events_total``).

Which clock drives stalled-deal detection is the worker's choice, and both are sound:

* the partition's own watermark (``WatermarkClock.for_partition(p)``) -- deterministic, right
  for replays and backfills, and the :class:`~streams.stalled.StallIndex` is per partition
  too.  Its cost: a partition that receives no events does not age, so its alerts wait for
  the next event (and all alerts lag by the allowed lateness);
* :class:`WallClock` -- alerts on time in a quiet partition, but a replay of old events
  would see every old deal as stalled.
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from typing import Protocol, runtime_checkable

#: What a watermark reads before it has seen any event: the epoch.  Every real deal entered
#: its stage after 1970, so nothing is due and nothing is late before the first event.
NO_WATERMARK_MS = 0


@runtime_checkable
class Clock(Protocol):
    """A source of "now" in epoch milliseconds."""

    def now_ms(self) -> int: ...


class WallClock:
    """The system clock (UTC epoch ms); for the live worker only, never inside the core."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class FixedClock:
    """A clock that only moves when told to: for tests and deterministic replays."""

    def __init__(self, now_ms: int = 0) -> None:
        self._now_ms = int(now_ms)

    def now_ms(self) -> int:
        return self._now_ms

    def set(self, now_ms: int) -> None:
        """Jump to ``now_ms`` (backwards too: a test may need it)."""
        self._now_ms = int(now_ms)

    def advance(self, ms: int) -> int:
        """Move forward by ``ms`` (>= 0) and return the new time."""
        if ms < 0:
            raise ValueError(f"advance() takes a non-negative duration, got {ms}")
        self._now_ms += int(ms)
        return self._now_ms


class Watermark:
    """Event-time progress of one partition: max event time seen minus the allowed lateness.

    Contract:

    * monotonic: ``now_ms()`` never goes back, whatever order events arrive in;
    * before any event ``now_ms()`` is :data:`NO_WATERMARK_MS` (0, the epoch) -- an ``int``
      rather than ``None`` so a watermark *is* a :class:`Clock` and callers need no special
      case; ``seen`` tells whether any event arrived;
    * an event is late when it is strictly older than the watermark *before* it is observed
      (an event exactly at the watermark is on time).
    """

    def __init__(self, allowed_lateness_ms: int) -> None:
        if allowed_lateness_ms < 0:
            raise ValueError(f"allowed_lateness_ms must be >= 0, got {allowed_lateness_ms}")
        self.allowed_lateness_ms = int(allowed_lateness_ms)
        self._max_event_ms: int | None = None

    @property
    def seen(self) -> bool:
        """True once at least one event has been observed."""
        return self._max_event_ms is not None

    @property
    def max_event_ms(self) -> int | None:
        """The largest event time observed, None before any event."""
        return self._max_event_ms

    def now_ms(self) -> int:
        if self._max_event_ms is None:
            return NO_WATERMARK_MS
        return self._max_event_ms - self.allowed_lateness_ms

    def observe(self, event_ms: int) -> bool:
        """Fold one event time in; return True if the event is late (older than the watermark)."""
        late = self._max_event_ms is not None and event_ms < self.now_ms()
        if self._max_event_ms is None or event_ms > self._max_event_ms:
            self._max_event_ms = int(event_ms)
        return late


class WatermarkClock:
    """Watermarks of the partitions a worker holds, created on first use of a partition.

    ``now_ms()`` is the minimum over the partitions that have seen an event (0 when none
    has): the time up to which *every* partition of this worker is complete, which is what
    global, merged views may close windows on.  Partitions without events are left out of
    the minimum, or one idle partition would hold every window open forever.  Per-partition
    work (window closing of a partition's partial, stall detection in its
    :class:`~streams.stalled.StallIndex`) uses :meth:`for_partition` instead.
    """

    def __init__(self, allowed_lateness_ms: int) -> None:
        if allowed_lateness_ms < 0:
            raise ValueError(f"allowed_lateness_ms must be >= 0, got {allowed_lateness_ms}")
        self.allowed_lateness_ms = int(allowed_lateness_ms)
        self._partitions: dict[Hashable, Watermark] = {}

    def for_partition(self, partition: Hashable) -> Watermark:
        """The partition's watermark (a :class:`Clock`), created empty on first use."""
        wm = self._partitions.get(partition)
        if wm is None:
            wm = self._partitions[partition] = Watermark(self.allowed_lateness_ms)
        return wm

    def observe(self, partition: Hashable, event_ms: int) -> bool:
        """Fold an event of ``partition`` in; True if it is late for that partition."""
        return self.for_partition(partition).observe(event_ms)

    def forget(self, partition: Hashable) -> None:
        """Drop a partition given up in a rebalance; its new owner rebuilds it from events."""
        self._partitions.pop(partition, None)

    def partitions(self) -> list[Hashable]:
        return list(self._partitions)

    def now_ms(self) -> int:
        marks = [wm.now_ms() for wm in self._partitions.values() if wm.seen]
        return min(marks) if marks else NO_WATERMARK_MS
