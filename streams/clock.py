"""Injectable clocks: wall time for the live worker, event time per partition.

Nothing in the core calls ``time.time()`` itself (docs/design.md, principle 6):
whoever needs "now" is handed a :class:`Clock`.  All times are integer epoch milliseconds.

Event time is tracked with a :class:`Watermark` per Kafka partition: the largest event time
seen minus the allowed lateness.  An event older than the watermark is *late*; it is still
applied where the state holds it, and the caller counts it (``salesops_late_events_total``).

Which clock drives stalled-deal detection is the worker's choice, and both are sound:

* the partition's own :class:`Watermark` (``streams.deal_step.DealPartition`` takes it as
  its clock when no wall clock is given) -- deterministic, right for replays and
  backfills, and the :class:`~streams.stalled.StallIndex` is per partition too.  Its cost:
  a partition that receives no events does not age, so its alerts wait for the next event
  (and all alerts lag by the allowed lateness);
* :class:`WallClock` -- alerts on time in a quiet partition, but a replay of old events
  would see every old deal as stalled.

Global numbers (the merged views of every partition: API ``as_of``, aggregate topics) in
watermark mode use the *largest* partition watermark: the replay has reached at least
that time, ages and trailing windows follow the most advanced partition, and a partition
that lags only shows its deals younger than they are (ages are clamped at 0), never
holds every window back the way the minimum over partitions would.
"""

from __future__ import annotations

import time
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
