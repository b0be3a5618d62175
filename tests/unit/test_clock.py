"""Clocks: fixed and wall time, per-partition watermarks and lateness."""

from __future__ import annotations

import time

import pytest

from streams.clock import NO_WATERMARK_MS, Clock, WallClock, Watermark
from tests.unit.clocks import FixedClock


def test_fixed_clock_moves_only_when_told() -> None:
    clock = FixedClock(1_000)
    assert clock.now_ms() == 1_000
    assert clock.advance(250) == 1_250
    assert clock.now_ms() == 1_250
    clock.set(10)
    assert clock.now_ms() == 10
    with pytest.raises(ValueError):
        clock.advance(-1)


def test_wall_clock_is_epoch_millis() -> None:
    before = int(time.time() * 1000)
    now = WallClock().now_ms()
    after = int(time.time() * 1000)
    assert isinstance(now, int)
    assert before - 1 <= now <= after + 1


def test_every_clock_satisfies_the_protocol() -> None:
    for clock in (WallClock(), FixedClock(), Watermark(0)):
        assert isinstance(clock, Clock)


def test_watermark_before_any_event_is_the_epoch_and_nothing_is_late() -> None:
    wm = Watermark(allowed_lateness_ms=5_000)
    assert not wm.seen
    assert wm.now_ms() == NO_WATERMARK_MS == 0
    assert wm.observe(1) is False  # the first event can never be late
    assert wm.seen


def test_watermark_is_max_event_minus_lateness_and_flags_late_events() -> None:
    wm = Watermark(allowed_lateness_ms=1_000)
    assert wm.observe(10_000) is False
    assert wm.now_ms() == 9_000  # 10_000 - 1_000
    assert wm.observe(9_500) is False  # within lateness
    assert wm.observe(9_000) is False  # exactly at the watermark: on time
    assert wm.observe(8_999) is True  # older than the watermark: late
    assert wm.now_ms() == 9_000  # late and older events never move it
    assert wm.observe(12_000) is False
    assert wm.now_ms() == 11_000
    assert wm.observe(10_999) is True  # 12_000 - 1_000: the largest event time is 12_000


def test_watermark_is_monotonic_whatever_the_order() -> None:
    wm = Watermark(0)
    seen = []
    for t in (5, 3, 9, 1, 9, 7):
        wm.observe(t)
        seen.append(wm.now_ms())
    assert seen == [5, 5, 9, 9, 9, 9]


def test_negative_lateness_is_refused() -> None:
    with pytest.raises(ValueError):
        Watermark(-1)
