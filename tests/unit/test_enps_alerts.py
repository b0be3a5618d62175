"""eNPS-drop alert lifecycle: fire once, resolve, one alert per group and day, recovery."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.codec import Codec, writer_versions
from streams.enps_alerts import FIRING, RESOLVED, alert_id, decide, firing, recover
from streams.events import DAY_MS

NOW = int(datetime(2026, 11, 3, 9, 0, tzinfo=UTC).timestamp() * 1000)  # a Tuesday, 09:00 UTC
HOUR_MS = 3_600_000
ALERT = Codec.for_record("Alert")


def row(group: str, previous: float, current: float) -> dict[str, Any]:
    """A ``pulse.enps_drops`` row."""
    return {"group": group, "previous": previous, "current": current, "drop": previous - current}


# sales 60 -> 20: drop 40; org 30 -> 18: drop 12; ops 25 -> 20: drop 5
DROPS = [row("team:sales", 60.0, 20.0), row("org", 30.0, 18.0), row("team:ops", 25.0, 20.0)]


def read_back(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records as a restarted worker reads them from the alerts topic (Avro, datetimes)."""
    return [ALERT.decode(ALERT.encode(r)) for r in records]


def recovered(records: list[dict[str, Any]]) -> dict[str, Any]:
    known: Any = {}
    for r in read_back(records):
        known = recover(known, r)
    return dict(known)


def test_alert_id_is_the_group_and_the_utc_day() -> None:
    assert alert_id("team:sales", NOW) == "enps_drop:team:sales:2026-11-03"
    # 23:59:59.999 UTC is still the 3rd; one ms later the 4th
    end_of_day = int(datetime(2026, 11, 4, tzinfo=UTC).timestamp() * 1000) - 1
    assert alert_id("org", end_of_day) == "enps_drop:org:2026-11-03"
    assert alert_id("org", end_of_day + 1) == "enps_drop:org:2026-11-04"


def test_fires_once_per_group_whose_drop_exceeds_the_threshold() -> None:
    # threshold 10: sales (40) and org (12) drop, ops (5) does not; FIRINGs by group
    known, records = decide({}, DROPS, 10.0, NOW)
    assert [(r["subject"], r["status"]) for r in records] == [("org", FIRING), ("team:sales", FIRING)]
    assert records[1] == {
        "alert_id": "enps_drop:team:sales:2026-11-03",
        "kind": "ENPS_DROP",
        "status": "FIRING",
        "subject": "team:sales",
        "pipeline": None,
        "stage": None,
        "owner_id": None,
        "amount": None,
        "currency": None,
        "days_in_stage": None,
        "threshold": 10.0,
        "value": 40.0,
        "unit": "points",
        "fired_at": NOW,
        "resolved_at": None,
        "summary": "eNPS of team:sales fell 40.0 points in 30 days (60.0 -> 20.0), threshold 10",
    }
    assert known == {"org": records[0], "team:sales": records[1]}
    # the next pass, an hour later, with the same drops: nothing new
    again, more = decide(known, DROPS, 10.0, NOW + HOUR_MS)
    assert (again, more) == (known, [])


def test_a_drop_equal_to_the_threshold_does_not_fire() -> None:
    # org's drop is exactly 12: "more than 12" is false
    _, records = decide({}, DROPS, 12.0, NOW)
    assert [r["subject"] for r in records] == ["team:sales"]


def test_a_drop_within_its_margin_of_error_does_not_fire_but_a_firing_one_stays() -> None:
    # threshold 10; org dropped 12 with a margin of 25 (a small, half-imported sample):
    # noise, no alert; sales dropped 40 with a margin of 15: fires
    margins = {"org": 25.0, "team:sales": 15.0}
    known, records = decide({}, DROPS, 10.0, NOW, margins)
    assert [r["subject"] for r in records] == ["team:sales"]
    # more answers make sales' margin 45 while its drop is still 40 > 10: it stays FIRING
    _, more = decide(known, DROPS, 10.0, NOW + HOUR_MS, {"org": 25.0, "team:sales": 45.0})
    assert more == []


def test_no_repeat_firing_after_a_restart() -> None:
    # the first publisher fired org and sales, then stopped; a restarted one reads the
    # two records back from the alerts topic and sees the same drops: it emits nothing
    _, records = decide({}, DROPS, 10.0, NOW)
    known = recovered(records)
    assert {g: (a["alert_id"], a["status"], a["fired_at"]) for g, a in known.items()} == {
        "org": ("enps_drop:org:2026-11-03", FIRING, NOW),
        "team:sales": ("enps_drop:team:sales:2026-11-03", FIRING, NOW),
    }
    assert decide(known, DROPS, 10.0, NOW + HOUR_MS)[1] == []


def test_resolves_when_the_drop_is_no_longer_more_than_the_threshold() -> None:
    known, _ = decide({}, DROPS, 10.0, NOW)
    # two hours later: sales 60 -> 55 (drop 5), org no longer visible in both windows
    later = NOW + 2 * HOUR_MS
    known, records = decide(known, [row("team:sales", 60.0, 55.0), DROPS[2]], 10.0, later)
    org, sales = records
    assert (org["subject"], org["status"], org["value"], org["resolved_at"]) == ("org", RESOLVED, None, later)
    assert org["summary"] == (
        "eNPS drop alert of org resolved: the group is no longer visible in both 30-day windows, "
        "so no drop is measured"
    )
    assert sales == {
        **decide({}, DROPS, 10.0, NOW)[1][1],  # what FIRING said: same id, fired_at
        "status": "RESOLVED",
        "value": 5.0,
        "resolved_at": later,
        "summary": "eNPS of team:sales recovered: 55.0 against 60.0 in the previous 30 days, "
        "no longer more than 10 points lower",
    }
    assert firing(known) == {}
    # resolved stays resolved: no second RESOLVED
    assert decide(known, [], 10.0, later + HOUR_MS)[1] == []


def test_a_drop_back_on_the_day_it_resolved_fires_again_the_next_day_with_a_new_id() -> None:
    known, _ = decide({}, [DROPS[0]], 10.0, NOW)
    known, (resolved,) = decide(known, [], 10.0, NOW + HOUR_MS)
    # the drop is back at 14:00: enps_drop:team:sales:2026-11-03 has had its FIRING and its
    # RESOLVED, the contract allows no third record, so it waits
    known, records = decide(known, [DROPS[0]], 10.0, NOW + 5 * HOUR_MS)
    assert records == []
    # the next morning (and after a restart that read the two records back): a new alert
    next_day = NOW + DAY_MS
    for state in (known, recovered([decide({}, [DROPS[0]], 10.0, NOW)[1][0], resolved])):
        _, (fired,) = decide(state, [DROPS[0]], 10.0, next_day)
        assert (fired["alert_id"], fired["status"], fired["fired_at"]) == (
            "enps_drop:team:sales:2026-11-04",
            FIRING,
            next_day,
        )


def test_a_clock_without_a_value_decides_nothing() -> None:
    # the watermark clock before any deal event reads the epoch: windows of 1970 would find
    # no drop and resolve every FIRING alert
    known, _ = decide({}, DROPS, 10.0, NOW)
    assert decide(known, [], 10.0, 0) == (known, [])
    assert decide({}, DROPS, 10.0, 0) == ({}, [])


def test_records_fit_the_alert_contract() -> None:
    known, fired = decide({}, DROPS, 10.0, NOW)
    _, resolved = decide(known, [], 10.0, NOW + HOUR_MS)
    for record, back in zip(fired + resolved, read_back(fired + resolved), strict=True):
        assert back["value"] == record["value"] and back["unit"] == "points"
        assert back["days_in_stage"] is None


def test_a_firing_alert_written_by_version_1_is_recovered_and_resolved_in_version_2() -> None:
    # version 1 kept the drop in days_in_stage and had no value or unit
    v1 = Codec(writer_versions("Alert")[0])
    old = decide({}, [DROPS[0]], 10.0, NOW)[1][0]
    old = {k: v for k, v in old.items() if k not in ("value", "unit")} | {"days_in_stage": 40.0}
    back = ALERT.decode(v1.encode(old))
    assert (back["value"], back["unit"], back["days_in_stage"]) == (None, None, 40.0)
    known = recover({}, back)
    assert decide(known, [DROPS[0]], 10.0, NOW + HOUR_MS)[1] == []  # not fired again
    _, (resolved,) = decide(known, [row("team:sales", 60.0, 58.0)], 10.0, NOW + HOUR_MS)
    assert (resolved["alert_id"], resolved["fired_at"]) == ("enps_drop:team:sales:2026-11-03", NOW)
    assert (resolved["value"], resolved["unit"], resolved["days_in_stage"]) == (2.0, "points", None)


def test_recover_ignores_other_kinds_and_unchanged_records() -> None:
    stalled = {"alert_id": "stalled:D-1:proposal:0", "kind": "STALLED_DEAL", "status": FIRING}
    known: dict[str, Any] = {}
    assert recover(known, stalled) is known
    _, (fired,) = decide({}, [DROPS[0]], 10.0, NOW)
    once = recover(known, fired)
    assert recover(once, fired) is once


# three days of one group: fired and resolved on day 1, fired on day 2 and still firing;
# plus another group's FIRING.  Whatever order (the alerts sit in different partitions)
# and however often they are read, sales' latest alert is day 2's FIRING.
def _history() -> list[dict[str, Any]]:
    known, day1 = decide({}, [DROPS[0], DROPS[1]], 10.0, NOW)
    known, resolved = decide(known, [DROPS[1]], 10.0, NOW + HOUR_MS)
    _, day2 = decide(known, [DROPS[0], DROPS[1]], 10.0, NOW + DAY_MS)
    return read_back(day1 + resolved + day2)


HISTORY = _history()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(range(len(HISTORY))), min_size=len(HISTORY)).filter(
    lambda picks: set(picks) == set(range(len(HISTORY)))
))  # fmt: skip
def test_recovery_does_not_depend_on_order_or_duplicates(picks: list[int]) -> None:
    known: Any = {}
    for i in picks:
        known = recover(known, HISTORY[i])
    assert {g: (a["alert_id"], a["status"]) for g, a in known.items()} == {
        "org": ("enps_drop:org:2026-11-03", FIRING),
        "team:sales": ("enps_drop:team:sales:2026-11-04", FIRING),
    }


drop_rows = st.lists(
    st.builds(
        row, st.sampled_from(["org", "team:a", "team:b", "department:x"]), st.just(50.0), st.floats(-100, 100)
    ),
    unique_by=lambda r: r["group"],
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(drop_rows, st.integers(0, 3 * DAY_MS)), max_size=6))
def test_folding_the_records_gives_the_decided_state(passes: list[tuple[list[dict[str, Any]], int]]) -> None:
    # the worker keeps what it sent (recover after each send); that must be what decide keeps
    known: Any = {}
    now = NOW
    for drops, step in passes:
        now += step
        new, records = decide(known, drops, 10.0, now)
        folded = known
        for record in records:
            folded = recover(folded, record)
        assert dict(folded) == new
        # firing exactly the dropping groups, but those whose alert of today has resolved
        dropping = {r["group"] for r in drops if r["drop"] > 10.0}
        assert set(firing(new)) <= dropping
        for group in dropping - set(firing(new)):
            assert (new[group]["alert_id"], new[group]["status"]) == (alert_id(group, now), RESOLVED)
        known = new
