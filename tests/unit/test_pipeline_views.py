"""Pipeline views: hand-computed scenarios, incremental == rebuilt, empty after removal,
merge of partials == single partial."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.deals import Deal, apply, fold
from streams.events import DealEvent
from streams.periods import PeriodError, day_of, month_period, parse_period, quarter_period
from streams.pipeline_views import (
    AGING_BASE_MS,
    AGING_CELLS,
    OPEN_FIELDS,
    PipelineViews,
    aging,
    aging_summary,
    empty_partial,
    funnel,
    merge_aging_summaries,
    merge_partials,
    money,
    movement,
    pipeline_rows,
    weighted_cents,
)
from streams.pipelines import load_pipelines, load_rates

CONFIG = load_pipelines()
RATES = load_rates()  # USD reporting, EUR = 1.08
UTC_TZ = ZoneInfo("UTC")
DAY = 86_400_000


def t(day: int, month: int = 3, hour: int = 12) -> int:
    """Epoch ms of 2024-<month>-<day> <hour>:00 UTC."""
    return int(datetime(2024, month, day, hour, tzinfo=UTC).timestamp() * 1000)


def ev(
    deal_id: str,
    event_id: str,
    at: int,
    stage: str,
    event_type: str = "UPDATED",
    amount: str = "1000",
    currency: str = "USD",
    pipeline: str = "enterprise",
    **attrs: Any,
) -> DealEvent:
    return DealEvent(
        event_id, "crm", deal_id, event_type, at, pipeline, stage, Decimal(amount), currency, **attrs
    )


def views_of(*deals: Deal, tz: ZoneInfo = UTC_TZ) -> PipelineViews:
    v = PipelineViews(CONFIG, RATES, tz)
    for d in deals:
        v.replace(None, d)
    return v


def counter(partial: dict, pipeline: str, stage: str, name: str) -> dict[str, int]:
    return partial["funnel"].get(pipeline, {}).get(stage, {}).get(name, {})


def stage_row(result: dict, pipeline: str, stage: str) -> dict:
    p = next(p for p in result["pipelines"] if p["pipeline"] == pipeline)
    return next(s for s in p["stages"] if s["stage"] == stage)


def pipeline_result(result: dict, pipeline: str) -> dict:
    return next(p for p in result["pipelines"] if p["pipeline"] == pipeline)


# enterprise: discovery(0) solution(1) proposal(2) negotiation(3), won rank 4; lost unranked
SKIPPER = [  # discovery -> proposal (skips solution) -> won (skips negotiation)
    ev("a", "1", t(1), "discovery", "CREATED"),
    ev("a", "2", t(3), "proposal"),
    ev("a", "3", t(10), "won", "WON"),
]
REGRESSOR = [  # discovery -> proposal -> solution (backwards) -> lost; 500 EUR
    ev("b", "1", t(1), "discovery", "CREATED", "500", "EUR"),
    ev("b", "2", t(2), "proposal", amount="500", currency="EUR"),
    ev("b", "3", t(5), "solution", amount="500", currency="EUR"),
    ev("b", "4", t(8), "lost", "LOST", amount="500", currency="EUR"),
]
OPEN_ONE = [ev("c", "1", t(4), "discovery", "CREATED", "2000", owner_id="o1", team="t1", region="emea")]


def test_skipped_stages_count_as_passed_through() -> None:
    p = views_of(fold(SKIPPER, CONFIG)).partial()
    # discovery: entered 03-01, left forwards 03-03; solution skipped on 03-03
    assert counter(p, "enterprise", "discovery", "entered") == {"2024-03-01": 1}
    assert counter(p, "enterprise", "discovery", "advanced") == {"2024-03-03": 1}
    assert counter(p, "enterprise", "discovery", "cohort_advanced") == {"2024-03-01": 1}
    for name in ("entered", "exited", "advanced", "cohort_advanced"):
        assert counter(p, "enterprise", "solution", name) == {"2024-03-03": 1}
        # negotiation skipped by the jump to won on 03-10
        assert counter(p, "enterprise", "negotiation", name) == {"2024-03-10": 1}
    assert counter(p, "enterprise", "proposal", "exited") == {"2024-03-10": 1}
    assert counter(p, "enterprise", "proposal", "regressed") == {}
    # won on 03-10 after 9 days, 1000 USD
    assert p["closed"]["enterprise"] == {
        "2024-03-10": {"won_count": 1, "won_cents": 100_000, "cycle_ms_sum": 9 * DAY}
    }
    assert p["open"]["by_stage"] == {} and p["aging"] == {}


def test_regression_is_not_a_conversion() -> None:
    p = views_of(fold(REGRESSOR, CONFIG)).partial()
    # proposal left backwards on 03-05: exited + regressed, no advance, no cohort advance
    assert counter(p, "enterprise", "proposal", "exited") == {"2024-03-05": 1}
    assert counter(p, "enterprise", "proposal", "regressed") == {"2024-03-05": 1}
    assert counter(p, "enterprise", "proposal", "advanced") == {}
    assert counter(p, "enterprise", "proposal", "cohort_advanced") == {}
    # solution: skipped on 03-02 (entered, exited, advanced), re-entered 03-05, lost 03-08
    assert counter(p, "enterprise", "solution", "entered") == {"2024-03-02": 1, "2024-03-05": 1}
    assert counter(p, "enterprise", "solution", "exited") == {"2024-03-02": 1, "2024-03-08": 1}
    assert counter(p, "enterprise", "solution", "advanced") == {"2024-03-02": 1}
    # the 03-05 visit never reached proposal again: only the skipped entry is a cohort win
    assert counter(p, "enterprise", "solution", "cohort_advanced") == {"2024-03-02": 1}
    # lost 500 EUR = 540.00 USD
    assert p["closed"]["enterprise"] == {"2024-03-08": {"lost_count": 1, "lost_cents": 54_000}}


def test_funnel_rates_win_rate_size_cycle_velocity() -> None:
    partial = views_of(*(fold(e, CONFIG) for e in (SKIPPER, REGRESSOR, OPEN_ONE))).partial()
    r = funnel(partial, CONFIG, month_period(2024, 3), t(31))
    # discovery: 3 entered (a, b, c), 2 exited, both forwards -> 2/2; cohort 2/3
    d = stage_row(r, "enterprise", "discovery")
    assert (d["entered"], d["exited"], d["advanced"], d["window_conversion"]) == (3, 2, 2, 1.0)
    assert (d["cohort_entered"], d["cohort_advanced"], d["cohort_conversion"]) == (3, 2, 2 / 3)
    # solution: a skipped (1 adv), b skipped (1 adv), b re-entered and lost -> 2/3 exits advanced
    s = stage_row(r, "enterprise", "solution")
    assert (s["entered"], s["exited"], s["advanced"], s["regressed"]) == (3, 3, 2, 0)
    assert s["window_conversion"] == pytest.approx(2 / 3)
    # proposal: a to won (advanced), b back to solution (regressed) -> 1/2
    pr = stage_row(r, "enterprise", "proposal")
    assert (pr["exited"], pr["advanced"], pr["regressed"], pr["window_conversion"]) == (2, 1, 1, 0.5)
    p = pipeline_result(r, "enterprise")
    # 1 won of 2 closed; by value 1000 / (1000 + 540) USD
    assert p["win_rate_count"] == 0.5
    assert p["win_rate_value"] == pytest.approx(100_000 / 154_000)
    assert (p["won_value"], p["lost_value"], p["avg_deal_size"], p["avg_cycle_days"]) == (
        "1000.00",
        "540.00",
        "1000.00",
        9.0,
    )
    assert (p["won_cents"], p["lost_cents"], p["avg_deal_size_cents"]) == (100_000, 54_000, 100_000)
    # velocity: 1 open deal x 1000 x 0.5 / 9 days
    assert p["open_deals"] == 1
    assert p["sales_velocity_per_day"] == pytest.approx(1000 * 0.5 / 9)
    # an empty window: every ratio undefined
    empty = funnel(partial, CONFIG, month_period(2024, 1), t(31))
    e = pipeline_result(empty, "enterprise")
    assert e["win_rate_count"] is None and e["avg_deal_size"] is None
    assert e["sales_velocity_per_day"] is None
    assert stage_row(empty, "enterprise", "discovery")["window_conversion"] is None


def test_pipeline_rows_currency_probability_and_dimensions() -> None:
    deals = [
        # 1000 EUR in discovery (p 0.1): 1080.00 USD, weighted 108.00
        fold(
            [ev("e1", "1", t(1), "discovery", amount="1000", currency="EUR", owner_id="o1", team="t1")],
            CONFIG,
        ),
        # 200 USD in proposal with a deal-level probability 0.25 overriding 0.5: weighted 50.00
        fold([ev("e2", "1", t(1), "proposal", amount="200", probability=0.25, owner_id="o1")], CONFIG),
        # unknown stage: counted, probability 0
        fold([ev("e3", "1", t(1), "legal", amount="300", region="apac")], CONFIG),
        # a currency without a rate: counted, 0 value, flagged unpriced
        fold([ev("e4", "1", t(1), "proposal", amount="999", currency="CHF")], CONFIG),
    ]
    rows = pipeline_rows(views_of(*deals).partial())
    by_stage = {(r["pipeline"], r["stage"]): r for r in rows["by_stage"]}
    assert by_stage["enterprise", "discovery"] == {
        "pipeline": "enterprise",
        "stage": "discovery",
        "deals": 1,
        "value_cents": 108_000,
        "value": "1080.00",
        "weighted_cents": 10_800,
        "weighted_value": "108.00",
        "unpriced_deals": 0,
    }
    # proposal: e2 (200 USD, weighted 50) + e4 (unpriced)
    prop = by_stage["enterprise", "proposal"]
    assert (prop["deals"], prop["value_cents"], prop["weighted_cents"], prop["unpriced_deals"]) == (
        2,
        20_000,
        5_000,
        1,
    )
    legal = by_stage["enterprise", "legal"]
    assert (legal["deals"], legal["value_cents"], legal["weighted_cents"]) == (1, 30_000, 0)
    # owners: o1 has e1 + e2 = 1080 + 200 USD; e3 and e4 have none -> "unknown"
    owners = {r["owner"]: (r["deals"], r["value_cents"]) for r in rows["by_owner"]}
    assert owners == {"o1": (2, 128_000), "unknown": (2, 30_000)}
    assert [r["region"] for r in rows["by_region"]] == ["apac", "unknown"]
    assert [r["team"] for r in rows["by_team"]] == ["t1", "unknown"]
    # unknown stage is excluded from conversion: no funnel entry for it
    assert "legal" not in views_of(*deals).partial()["funnel"].get("enterprise", {})


def test_unknown_stage_move_counts_exit_only() -> None:
    # negotiation (03-04) -> "legal" (unknown, 03-06): negotiation exited, neither advanced nor
    # regressed; "legal" has rank None and no funnel row
    d = fold([ev("u", "1", t(4), "negotiation"), ev("u", "2", t(6), "legal")], CONFIG)
    p = views_of(d).partial()
    assert p["funnel"]["enterprise"] == {
        "negotiation": {"entered": {"2024-03-04": 1}, "exited": {"2024-03-06": 1}},
    }
    assert CONFIG.pipelines["enterprise"].rank("legal") is None


def test_reopen_after_won() -> None:
    # contractsent 03-01 (1000 USD) -> won 03-05 -> restored into contractsent 03-07
    d = fold(
        [
            ev("r", "1", t(1), "contractsent", "CREATED", pipeline="default"),
            ev("r", "2", t(5), "closedwon", "WON", pipeline="default"),
            ev("r", "3", t(7), "contractsent", "RESTORED", pipeline="default"),
        ],
        CONFIG,
    )
    p = views_of(d).partial()
    assert p["closed"] == {}  # open again: not a won deal
    # first visit advanced to won on 03-05; the reopened visit entered 03-07, still open
    assert counter(p, "default", "contractsent", "entered") == {"2024-03-01": 1, "2024-03-07": 1}
    assert counter(p, "default", "contractsent", "advanced") == {"2024-03-05": 1}
    assert counter(p, "default", "contractsent", "cohort_advanced") == {"2024-03-01": 1}
    # open: 1000 USD x 0.9; aging from the visit that started 03-07
    assert p["open"]["by_stage"]["default"]["contractsent"] == {
        "deals": 1,
        "value_cents": 100_000,
        "weighted_cents": 90_000,
    }
    assert p["aging"] == {"default": {"contractsent": aging_summary([(t(7), 1)])}}
    # movement, March: new 1000, won 1000, reopened 1000 -> end 1000
    m = movement(p, month_period(2024, 3))[0]
    assert (m["new_cents"], m["won_cents"], m["reopened_cents"], m["end_cents"]) == (
        100_000,
        100_000,
        100_000,
        100_000,
    )


def test_amount_change_currency_and_movement_over_months_and_quarters() -> None:
    # 1000 EUR (03-01) -> 1500 EUR (03-20) -> won at 1400 EUR (04-03); EUR = 1.08
    d = fold(
        [
            ev("m", "1", t(1), "appointmentscheduled", "CREATED", "1000", "EUR", pipeline="default"),
            ev("m", "2", t(20), "appointmentscheduled", amount="1500", currency="EUR", pipeline="default"),
            ev("m", "3", t(3, 4), "closedwon", "WON", "1400", "EUR", pipeline="default"),
        ],
        CONFIG,
    )
    p = views_of(d).partial()
    # March: new 1080.00, increased 1620.00 - 1080.00 = 540.00
    # April: decreased 1620.00 - 1512.00 = 108.00, then won 1512.00
    assert p["movement"]["default"] == {
        "2024-03": {"new": 108_000, "increased": 54_000},
        "2024-04": {"decreased": 10_800, "won": 151_200},
    }
    march = movement(p, month_period(2024, 3))[0]
    assert (march["start_cents"], march["end_cents"], march["end"]) == (0, 162_000, "1620.00")
    april = movement(p, parse_period("2024-04", 0, UTC_TZ))[0]
    assert (april["start_cents"], april["decreased_cents"], april["won_cents"], april["end_cents"]) == (
        162_000,
        10_800,
        151_200,
        0,
    )
    q1, q2 = movement(p, quarter_period(2024, 1))[0], movement(p, quarter_period(2024, 2))[0]
    assert (q1["start_cents"], q1["new_cents"], q1["increased_cents"], q1["end_cents"]) == (
        0,
        108_000,
        54_000,
        162_000,
    )
    assert (q2["start_cents"], q2["end_cents"]) == (162_000, 0)
    for row in (march, april, q1, q2):  # end = start + new + reopened + increased - decreased - out
        assert (
            row["end_cents"]
            == row["start_cents"]
            + row["new_cents"]
            + row["reopened_cents"]
            + row["increased_cents"]
            - row["decreased_cents"]
            - row["won_cents"]
            - row["lost_cents"]
            - row["deleted_cents"]
        )
    # won at the amount at close (1512.00 USD), cycle 03-01 -> 04-03 = 33 days (leap year)
    assert p["closed"]["default"] == {
        "2024-04-03": {"won_count": 1, "won_cents": 151_200, "cycle_ms_sum": 33 * DAY}
    }
    with pytest.raises(PeriodError):
        movement(p, parse_period("last-30d", t(10), UTC_TZ))


def test_delete_and_restore() -> None:
    # qualifiedtobuy 03-01 (500 USD) -> deleted 03-02 -> restored 03-04, same stage throughout
    events = [
        ev("x", "1", t(1), "qualifiedtobuy", "CREATED", "500", pipeline="default"),
        ev("x", "2", t(2), "qualifiedtobuy", "DELETED", "500", pipeline="default"),
        ev("x", "3", t(4), "qualifiedtobuy", "RESTORED", "500", pipeline="default"),
    ]
    deleted = views_of(fold(events[:2], CONFIG)).partial()
    assert deleted["open"]["by_stage"] == {} and deleted["closed"] == {}
    # deleting ends the visit: exited, not advanced
    assert counter(deleted, "default", "qualifiedtobuy", "exited") == {"2024-03-02": 1}
    assert deleted["movement"]["default"] == {"2024-03": {"new": 50_000, "deleted": 50_000}}

    p = views_of(fold(events, CONFIG)).partial()
    assert counter(p, "default", "qualifiedtobuy", "entered") == {"2024-03-01": 1, "2024-03-04": 1}
    assert p["movement"]["default"] == {"2024-03": {"new": 50_000, "deleted": 50_000, "reopened": 50_000}}
    # aging follows the stage history: the stage never changed, so aged since 03-01
    assert p["aging"] == {"default": {"qualifiedtobuy": aging_summary([(t(1), 1)])}}


def test_late_event_corrects_history_and_views() -> None:
    # seen: discovery 03-01 -> proposal 03-05 (solution counted as skipped on 03-05)
    seen = fold([ev("l", "1", t(1), "discovery"), ev("l", "3", t(5), "proposal")], CONFIG)
    v = views_of(seen)
    assert counter(v.partial(), "enterprise", "solution", "entered") == {"2024-03-05": 1}
    # late: solution on 03-03
    late = apply(seen, ev("l", "2", t(3), "solution"), CONFIG)
    assert late is not None
    v.replace(seen, late)
    p = v.partial()
    assert counter(p, "enterprise", "discovery", "advanced") == {"2024-03-03": 1}
    assert counter(p, "enterprise", "solution", "entered") == {"2024-03-03": 1}
    assert counter(p, "enterprise", "solution", "advanced") == {"2024-03-05": 1}
    assert counter(p, "enterprise", "proposal", "entered") == {"2024-03-05": 1}
    assert p == views_of(late).partial()


def test_duplicate_changes_nothing() -> None:
    events = SKIPPER[:2]
    d = fold(events, CONFIG)
    v = views_of(d)
    before = v.partial()
    assert apply(d, events[1], CONFIG) is None  # the agent has nothing to replace
    v.replace(d, Deal.from_bytes(d.to_bytes()))  # an equal copy (e.g. from a table)
    assert v.partial() == before


def test_aging_median_p90_max() -> None:
    # 3 open deals in proposal entered 03-01, 03-03, 03-10 (noon); now 03-11 noon
    deals = [fold([ev(f"g{i}", "1", t(day), "proposal")], CONFIG) for i, day in enumerate((1, 3, 10))]
    partial = views_of(*deals).partial()
    # span 9 days = 12,960 minutes: 8-minute cells would need 1,621 > 1024, 16-minute cells
    # 811 -> level 4.  Noon is a multiple of 16 minutes since the epoch, so each deal's cell
    # starts at its entry and counts at entry + 8 min; the last one is clamped back to its
    # exact entry (03-10 noon), the newest entry of the stage.
    summary = partial["aging"]["enterprise"]["proposal"]
    assert (summary["open"], summary["first"], summary["last"], summary["level"]) == (3, t(1), t(10), 4)
    assert summary["cells"] == [[t(d) // (16 * 60_000), 1] for d in (1, 3, 10)]
    rows = aging(partial, t(11))
    # ages 10 d - 8 min, 8 d - 8 min, 1 d: median 8 d - 8 min;
    # p90 linear: h = 0.9 x 2 = 1.8 -> (8 d - 8 min) + 0.8 x 2 d = 9.6 d - 8 min; max exact 10 d
    eight_min = 8 / 1440
    assert rows == [
        {
            "pipeline": "enterprise",
            "stage": "proposal",
            "open": 3,
            "median_days": pytest.approx(8.0 - eight_min, abs=1e-12),
            "p90_days": pytest.approx(9.6 - eight_min, abs=1e-12),
            "max_days": 10.0,
        }
    ]


def test_aging_is_clamped_at_zero_when_now_is_behind_the_entries() -> None:
    # watermark = newest event - lateness can be behind a deal's entry: entered 03-10 noon,
    # now 03-10 11:00 -> age max(0, -1 h) = 0, never negative
    d = fold([ev("w", "1", t(10), "proposal")], CONFIG)
    row = aging(views_of(d).partial(), t(10) - 3_600_000)[0]
    assert (row["open"], row["median_days"], row["p90_days"], row["max_days"]) == (1, 0.0, 0.0, 0.0)
    # two deals 03-09 and 03-10 noon, now 03-09 18:00: ages 0.25 d (approximately) and 0
    two = [d, fold([ev("v", "1", t(9), "proposal")], CONFIG)]
    row = aging(views_of(*two).partial(), t(9) + 6 * 3_600_000)[0]
    assert row["max_days"] == 0.25 and row["median_days"] >= 0.0 and row["p90_days"] >= 0.0


def test_aging_summary_is_bounded_and_close_to_the_exact_quantiles() -> None:
    # 20,000 open deals entered over two years (seeded): the summary keeps at most 1024
    # cells; counts, first and max are exact; median and p90 are within half a cell of
    # numpy's exact figures
    import numpy as np

    rng = np.random.default_rng(7)
    start = t(1, 1)
    entered = sorted(int(x) for x in start + rng.integers(0, 730 * DAY, 20_000))
    pairs = [(e, 1) for e in entered]
    summary = aging_summary(pairs)
    assert len(summary["cells"]) <= AGING_CELLS
    assert summary["open"] == 20_000 and summary["first"] == entered[0] and summary["last"] == entered[-1]
    width = AGING_BASE_MS << summary["level"]
    # 730 days = 1,051,200 minutes: 1024-minute cells would need about 1,027 cells, more
    # than 1024, so the cells are 2048 minutes wide (about 1.4 days; error <= 0.7 days)
    assert width == 2048 * 60_000
    assert len(json.dumps(summary)) < 30_000
    now = start + 800 * DAY
    partial = {**empty_partial(), "aging": {"enterprise": {"proposal": summary}}}
    row = aging(partial, now)[0]
    ages = (now - np.asarray(entered)) / DAY
    half_cell_days = width / 2 / DAY
    assert abs(row["median_days"] - float(np.median(ages))) <= half_cell_days
    assert abs(row["p90_days"] - float(np.percentile(ages, 90))) <= half_cell_days
    assert row["max_days"] == float(ages.max())
    assert row["open"] == 20_000


@given(
    entries=st.lists(
        st.tuples(st.integers(0, 4_000_000_000_000), st.integers(1, 3)), min_size=1, max_size=60
    ),
    cuts=st.lists(st.integers(0, 59), max_size=4),
)
def test_merging_aging_summaries_of_a_split_equals_the_summary_of_all(entries, cuts) -> None:
    # any split of the deals into partitions merges to exactly the summary of all of them
    bounds = sorted({0, len(entries), *(c for c in cuts if c < len(entries))})
    parts = [entries[a:b] for a, b in pairwise(bounds) if entries[a:b]]
    merged = merge_aging_summaries([aging_summary(p) for p in parts])
    assert merged == aging_summary(entries)


def test_days_follow_the_time_zone() -> None:
    # 2024-03-01 23:30 UTC is 2024-03-02 in Berlin (UTC+1)
    at = t(1, hour=23) + 30 * 60_000
    d = fold([ev("z", "1", at, "discovery")], CONFIG)
    assert counter(views_of(d).partial(), "enterprise", "discovery", "entered") == {"2024-03-01": 1}
    berlin = views_of(d, tz=ZoneInfo("Europe/Berlin")).partial()
    assert counter(berlin, "enterprise", "discovery", "entered") == {"2024-03-02": 1}


def _all_deals() -> list[list[DealEvent]]:
    return [SKIPPER, REGRESSOR, OPEN_ONE]


def test_incremental_equals_rebuild_and_removal_leaves_empty() -> None:
    v = PipelineViews(CONFIG, RATES, UTC_TZ)
    state: dict[str, Deal] = {}
    # apply in a scrambled order, with duplicates, as the agent would
    stream = [e for events in _all_deals() for e in reversed(events)] + SKIPPER
    for e in stream:
        old = state.get(e.deal_id)
        new = apply(old, e, CONFIG)
        if new is not None:
            v.replace(old, new)
            state[e.deal_id] = new
    assert v.partial() == views_of(*state.values()).partial()
    for d in state.values():
        v.replace(d, None)
    assert v.partial() == empty_partial()
    assert v._counts == {} and v._open == {}  # no zero-valued leftovers


def test_merge_of_split_equals_single_partial() -> None:
    deals = [fold(e, CONFIG) for e in _all_deals()]
    whole = views_of(*deals).partial()
    merged = merge_partials([views_of(deals[0], deals[2]).partial(), views_of(deals[1]).partial()])
    assert merged == whole
    assert json.dumps(merged, sort_keys=True) == json.dumps(whole, sort_keys=True)
    assert merge_partials([]) == empty_partial()
    with pytest.raises(ValueError, match="version"):
        merge_partials([{"version": 0}])


def test_merge_combines_aging_summaries() -> None:
    a = views_of(fold([ev("g1", "1", t(3), "proposal")], CONFIG)).partial()
    b = views_of(fold([ev("g2", "1", t(1), "proposal")], CONFIG)).partial()
    want = aging_summary([(t(1), 1), (t(3), 1)])
    assert merge_partials([a, b])["aging"] == {"enterprise": {"proposal": want}}
    assert want["open"] == 2 and want["first"] == t(1) and want["last"] == t(3)


# -- money: exact cents whatever the size ----------------------------------------------


MAX_AMOUNT = "9999999999999999.99"  # the largest amount validation accepts: decimal(18,2)


def test_two_maximum_amounts_sum_exactly_in_cents_and_decimal_strings() -> None:
    # USD max = 999,999,999,999,999,999 cents; JPY max x 0.0067 = 66,999,999,999,999.999933
    # USD = 6,699,999,999,999,999.9933 cents -> 6,700,000,000,000,000 cents (half even);
    # total 1,006,699,999,999,999,999 cents = 10,066,999,999,999,999.99 USD: 17 integer
    # digits, one more than decimal(18,2) holds, and more than a float keeps exactly
    usd = fold([ev("M1", "1", t(1), "proposal", amount=MAX_AMOUNT, currency="USD")], CONFIG)
    jpy = fold([ev("M2", "1", t(1), "proposal", amount=MAX_AMOUNT, currency="JPY")], CONFIG)
    rows = pipeline_rows(views_of(usd, jpy).partial())
    row = next(r for r in rows["by_stage"] if r["stage"] == "proposal")
    assert row["value_cents"] == 1_006_699_999_999_999_999
    assert row["value"] == "10066999999999999.99"
    # weighted at 0.5 (proposal): 999,999,999,999,999,999 / 2 = ...999.5 -> ...000 (even);
    # 6,700,000,000,000,000 / 2 = 3,350,000,000,000,000 -> 503,350,000,000,000,000 cents
    assert row["weighted_cents"] == 500_000_000_000_000_000 + 3_350_000_000_000_000
    assert row["weighted_value"] == "5033500000000000.00"
    assert json.loads(json.dumps(row)) == row  # strings and ints survive JSON untouched


def test_weighted_cents_is_exact_with_the_decimal_probability() -> None:
    # 0.35 as a float is 0.34999999999999997...; as written it is 35/100
    assert weighted_cents(100_001, 0.35) == 35_000  # 35000.35 -> 35000
    assert weighted_cents(10, 0.35) == 4  # 3.5 -> 4 (half to even)
    assert weighted_cents(30, 0.35) == 10  # 10.5 -> 10 (half to even)
    assert weighted_cents(999_999_999_999_999_999, 0.9) == 899_999_999_999_999_999  # ...999.1
    assert weighted_cents(12_345, 0.0) == 0 and weighted_cents(12_345, 1.0) == 12_345


def test_money_strings() -> None:
    assert [money(c) for c in (0, 5, -5, 1234567, -100)] == ["0.00", "0.05", "-0.05", "12345.67", "-1.00"]


@pytest.mark.parametrize(
    "zone",
    ["UTC", "Europe/Berlin", "Asia/Kolkata", "America/St_Johns", "Australia/Lord_Howe", "Africa/Monrovia"],
)
def test_cached_day_buckets_match_day_of(zone: str) -> None:
    # half-hour offsets, 30-minute DST (Lord Howe) and Monrovia's -0:44:30 until 1972 must
    # all bucket exactly like periods.day_of
    tz = ZoneInfo(zone)
    v = PipelineViews(CONFIG, RATES, tz)
    step = 7 * 60_000 + 13_000  # 7m13s: walks across every slice boundary over the years
    for ts in range(0, 5 * 365 * DAY, 997 * step):
        assert v._day(ts) == day_of(ts, tz)
    for ts in range(t(30) - 2 * DAY, t(30) + 4 * DAY, step):  # around the 2024-03-31 switch
        assert v._day(ts) == day_of(ts, tz)


# -- incremental replace == the whole-state definition ---------------------------------


def whole_state_counts(deals: list[Deal], tz: ZoneInfo) -> dict[tuple[Any, ...], int]:
    """The module docstring's definition, computed from each deal's whole state at once
    (the implementation before contributions became incremental): the oracle that the
    incremental views must equal after any sequence of replaces."""
    counts: dict[tuple[Any, ...], int] = {}

    def add(key: tuple[Any, ...], n: int) -> None:
        counts[key] = counts.get(key, 0) + n

    def cents_of(amount: Decimal, currency: str) -> int:
        return RATES.to_reporting_cents(amount, currency) or 0

    for deal in deals:
        pid = deal.pipeline
        p = CONFIG.pipelines.get(pid)
        if deal.status == "open":
            raw = RATES.to_reporting_cents(deal.amount, deal.currency)
            cents = raw or 0
            prob = deal.probability
            if prob is None:
                prob = next((s.probability for s in p.stages if s.id == deal.stage), 0.0) if p else 0.0
            for dim, a, b in (
                ("stage", pid, deal.stage),
                ("owner", deal.owner_id or "unknown", ""),
                ("team", deal.team or "unknown", ""),
                ("region", deal.region or "unknown", ""),
            ):
                add(("o", dim, a, b, "deals"), 1)
                add(("o", dim, a, b, "value_cents"), cents)
                add(("o", dim, a, b, "weighted_cents"), weighted_cents(cents, prob))
                add(("o", dim, a, b, "unpriced"), 1 if raw is None else 0)
            add(("a", pid, deal.stage, deal.history()[-1].entered_at), 1)
        elif deal.status in ("won", "lost"):
            closing = deal.closing_observation()
            assert closing is not None
            day = day_of(closing.occurred_at, tz)
            c = cents_of(closing.amount, closing.currency)
            add(("c", pid, day, f"{deal.status}_count"), 1)
            add(("c", pid, day, f"{deal.status}_cents"), c)
            if deal.status == "won":
                add(("c", pid, day, "cycle_ms_sum"), closing.occurred_at - deal.created_at)
        # movement: each change of the open value, by month
        prev_status, prev_value = None, 0
        for o in deal.observations:
            c = cents_of(o.amount, o.currency)
            d = datetime.fromordinal(day_of(o.occurred_at, tz))
            month = d.year * 12 + d.month - 1
            if o.status == "open" and prev_status is None:
                add(("m", pid, month, "new"), c)
            elif o.status == "open" and prev_status != "open":
                add(("m", pid, month, "reopened"), c)
            elif prev_status == "open":
                if c > prev_value:
                    add(("m", pid, month, "increased"), c - prev_value)
                if c < prev_value:
                    add(("m", pid, month, "decreased"), prev_value - c)
                if o.status != "open":
                    add(("m", pid, month, o.status), c)
            prev_status, prev_value = o.status, (c if o.status == "open" else 0)
        if p is None:
            continue
        # funnel: runs of positions (open stage, won, out), scanned backwards
        order = [s.id for s in p.stages]
        rank_of = {s: i for i, s in enumerate(order)} | {p.won_stage: len(order)}
        runs: list[tuple[str, int | None, int]] = []
        for o in deal.observations:
            if o.status == "open":
                pos, rank = o.stage, rank_of.get(o.stage)
            elif o.status == "won":
                pos, rank = "\x00won", len(order)
            else:
                pos, rank = "\x00out", None
            if not runs or runs[-1][0] != pos:
                runs.append((pos, rank, day_of(o.occurred_at, tz)))
        best = -1
        for k in range(len(runs) - 1, -1, -1):
            stage, rank, day = runs[k]
            if rank is None:
                continue
            if rank < len(order):
                add(("f", pid, stage, "entered", day), 1)
                if best > rank:
                    add(("f", pid, stage, "cohort_advanced", day), 1)
                if k + 1 < len(runs):
                    _, nxt, exit_day = runs[k + 1]
                    add(("f", pid, stage, "exited", exit_day), 1)
                    if nxt is not None and nxt > rank:
                        add(("f", pid, stage, "advanced", exit_day), 1)
                        for skipped in order[rank + 1 : nxt]:
                            for name in ("entered", "exited", "advanced", "cohort_advanced"):
                                add(("f", pid, skipped, name, exit_day), 1)
                    elif nxt is not None:
                        add(("f", pid, stage, "regressed", exit_day), 1)
            best = max(best, rank)
    return {k: n for k, n in counts.items() if n}


def flat_counts(v: PipelineViews) -> dict[tuple[Any, ...], int]:
    """The views' counters as whole_state_counts keys them (open rows: one key per field)."""
    rows = {
        ("o", *key, f): n for key, row in v._open.items() for f, n in zip(OPEN_FIELDS, row, strict=True) if n
    }
    assert all(any(row) for row in v._open.values())  # no all-zero row is kept
    return {**v._counts, **rows}


_HOUR = 3_600_000
_STAGES = sorted(
    {s for p in CONFIG.pipelines.values() for s in (*p.open_stage_ids, p.won_stage, p.lost_stage)} | {"legal"}
)
_events = st.builds(
    DealEvent,
    event_id=st.sampled_from(["1", "2", "3", "4", "5", "6", "7"]),
    source=st.sampled_from(["crm", "import"]),
    deal_id=st.sampled_from(["d1", "d2"]),
    event_type=st.sampled_from(["CREATED", "UPDATED", "STAGE_CHANGED", "WON", "LOST", "DELETED", "RESTORED"]),
    occurred_at=st.integers(0, 24 * 40).map(lambda h: t(1) + h * _HOUR),  # crosses a month end
    # mostly one pipeline, so that most changes keep it (the incremental path); partner: unknown
    pipeline=st.sampled_from(["enterprise"] * 6 + ["default", "partner"]),
    # mostly enterprise's stages (discovery < solution < proposal < negotiation < won; lost)
    stage=st.one_of(
        st.sampled_from(["discovery", "solution", "proposal", "negotiation", "won", "lost"]),
        st.sampled_from(_STAGES),
    ),
    amount=st.sampled_from(["0", "100", "2500.50", "99999.99"]).map(Decimal),
    currency=st.sampled_from(["USD", "EUR", "CHF"]),  # CHF has no rate
    owner_id=st.sampled_from([None, "o1", "o2"]),
    team=st.sampled_from([None, "t1"]),
    region=st.sampled_from([None, "emea"]),
    probability=st.sampled_from([None, 0.0, 0.35, 1.0]),
)
# one step: fold an event into the deal's state (in any order), jump to the fold of any
# subset of the events seen (a state that shares only part of the history), or remove it
_apply = st.tuples(st.just("apply"), _events)
_steps = st.lists(
    st.one_of(
        *[_apply] * 8,
        st.tuples(st.just("jump"), st.sampled_from(["d1", "d2"]), st.lists(st.integers(0, 30))),
        st.tuples(st.just("remove"), st.sampled_from(["d1", "d2"])),
    ),
    min_size=10,
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(steps=_steps, zone=st.sampled_from(["UTC", "Europe/Berlin", "America/St_Johns"]))
def test_incremental_replaces_equal_the_whole_state_definition(steps: list[tuple], zone: str) -> None:
    tz = ZoneInfo(zone)
    v = PipelineViews(CONFIG, RATES, tz)
    state: dict[str, Deal] = {}
    seen: dict[str, list[DealEvent]] = {}
    for step in steps:
        if step[0] == "apply":
            e = step[1]
            seen.setdefault(e.deal_id, []).append(e)
            old = state.get(e.deal_id)
            new = apply(old, e, CONFIG)
            if new is not None:
                v.replace(old, new)
                state[e.deal_id] = new
        elif step[0] == "jump" and seen.get(step[1]):
            events = seen[step[1]]
            chosen = [events[i % len(events)] for i in step[2]] or events[:1]
            new = fold(chosen, CONFIG)
            v.replace(state.get(step[1]), new)
            state[step[1]] = new
        elif step[0] == "remove" and step[1] in state:
            v.replace(state.pop(step[1]), None)
        # after every step: exactly the counts of the current states, computed from scratch
        assert flat_counts(v) == whole_state_counts(list(state.values()), tz)
    assert v.partial() == views_of(*state.values(), tz=tz).partial()
    for deal in list(state.values()):
        v.replace(Deal.from_bytes(deal.to_bytes()), None)  # an equal copy, as a table gives
    assert v._counts == {} and v._open == {}
