"""A clock for the tests of the core (production uses streams.clock.WallClock and
Watermark; anything with ``now_ms()`` is a :class:`streams.clock.Clock`)."""

from __future__ import annotations


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
