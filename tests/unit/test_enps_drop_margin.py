"""The margin of error of an eNPS drop (exported as salesops_enps_drop_margin_points, used by
the SalesopsEnpsDrop rule): a drop inside it is noise of two small samples."""

from __future__ import annotations

import math

import pytest

from streams.events import DAY_MS
from streams.pulse import enps_drop_margins, enps_drops
from tests.unit.test_pulse import NOW, K, scores, views_of


def test_drop_margin_combines_both_windows_margins() -> None:
    # team a, previous 30 days: 4 promoters + 1 passive (n 5): p .8, d 0 -> variance .8 - .64 = .16,
    #   margin 196 x sqrt(.16 / 5) = 35.06
    # last 30 days: 2 P, 1 Pa, 2 D (n 5): p .4, d .4 -> variance .8, margin 196 x sqrt(.8 / 5) = 78.4
    # drop 80 - 0 = 80 points; margin of the difference sqrt(35.06^2 + 78.4^2) = 85.88 > 80
    prev, cur = NOW - 40 * DAY_MS, NOW - DAY_MS
    events = scores("a", [10, 9, 9, 9, 8], at=prev) + scores("a", [10, 9, 7, 6, 0], at=cur)
    partial = views_of(events, dimensions=("team",)).partial()
    margins = enps_drop_margins(partial, NOW, K)
    assert margins == {"team:a": pytest.approx(math.hypot(196 * math.sqrt(0.16 / 5), 78.4))}
    assert margins["team:a"] == pytest.approx(85.88, abs=0.01)
    assert [d["drop"] for d in enps_drops(partial, NOW, K, 10.0)] == [80.0]


def test_drop_margin_only_for_groups_visible_in_both_windows() -> None:
    # 4 answers in the last 30 days < k = 5: no drop, no margin
    events = scores("a", [10] * 5, at=NOW - 40 * DAY_MS) + scores("a", [0] * 4, at=NOW - DAY_MS)
    partial = views_of(events, dimensions=("team",)).partial()
    assert enps_drop_margins(partial, NOW, K) == {}
    assert enps_drops(partial, NOW, K, float("-inf")) == []
