"""The simulator's generators: deterministic, valid, realistic; no Kafka."""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents import simulator
from agents.settings import Settings
from agents.simulator import RecordEncoder, deliver, generate_deals, generate_surveys
from streams.events import DAY_MS
from streams.pipelines import load_pipelines, load_rates

NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z
START = NOW - 120 * DAY_MS
CONFIG = load_pipelines()
ENCODER = RecordEncoder(CONFIG, load_rates())


@pytest.fixture(scope="module")
def deals() -> list[dict[str, Any]]:
    return generate_deals(7, 600, START, CONFIG, 0.1, now_ms=NOW)


@pytest.fixture(scope="module")
def surveys() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return generate_surveys(7, 4, 150, START, now_ms=NOW)


def by_deal(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        out[e["deal_id"]].append(e)
    return out


def test_same_seed_same_events() -> None:
    assert generate_deals(3, 50, START, CONFIG, now_ms=NOW) == generate_deals(
        3, 50, START, CONFIG, now_ms=NOW
    )
    assert generate_surveys(3, 2, 60, START, now_ms=NOW) == generate_surveys(3, 2, 60, START, now_ms=NOW)
    assert generate_deals(3, 50, START, CONFIG, now_ms=NOW) != generate_deals(
        4, 50, START, CONFIG, now_ms=NOW
    )


def test_every_generated_record_validates(
    deals: list[dict[str, Any]], surveys: tuple[list[dict[str, Any]], list[dict[str, Any]]]
) -> None:
    responses, invitations = surveys
    for kind, events in (("deals", deals), ("surveys", responses), ("invitations", invitations)):
        for event in events:
            ENCODER.encode(kind, event, NOW)  # raises SimulatorBug on a rejection
    json.dumps(deals + responses + invitations)  # JSON-able as generated


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), span_days=st.integers(1, 200), stall=st.floats(0, 1))
def test_any_seed_and_span_validates_and_stays_in_the_past(seed: int, span_days: int, stall: float) -> None:
    start = NOW - span_days * DAY_MS
    for event in generate_deals(seed, 20, start, CONFIG, stall, now_ms=NOW):
        assert event["occurred_at"] <= NOW
        ENCODER.encode("deals", event, NOW)


def test_deal_lifecycles_are_realistic(deals: list[dict[str, Any]]) -> None:
    assert all(e["occurred_at"] <= NOW for e in deals)
    assert [e["occurred_at"] for e in deals] == sorted(e["occurred_at"] for e in deals)
    assert len({e["event_id"] for e in deals}) == len(deals)
    assert all(e["event_id"].startswith("sim-7-") and e["source"] == "simulator" for e in deals)
    types = Counter(e["event_type"] for e in deals)
    assert types["CREATED"] == 600
    for t in ("STAGE_CHANGED", "UPDATED", "WON", "LOST", "DELETED", "RESTORED"):
        assert types[t] > 0, t
    assert {e["pipeline"] for e in deals} == set(CONFIG.pipelines)
    assert {e["currency"] for e in deals} <= {"USD", "EUR", "GBP", "JPY"}
    assert {e["region"] for e in deals} == {"EMEA", "NA", "APAC"}
    assert len({e["owner_id"] for e in deals}) == 20

    regressions = skips = 0
    for events in by_deal(deals).values():
        assert events[0]["event_type"] == "CREATED"
        times = [e["occurred_at"] for e in events]
        assert times == sorted(times) and len(set(times)) == len(times)
        pipeline = CONFIG.get(events[0]["pipeline"])
        assert pipeline is not None
        last = events[-1]
        if last["event_type"] == "WON":
            assert last["stage"] == pipeline.won_stage
        if last["event_type"] == "LOST":
            assert last["stage"] == pipeline.lost_stage
        ranks = [pipeline.rank(e["stage"]) for e in events if e["event_type"] == "STAGE_CHANGED"]
        ranks = [pipeline.rank(events[0]["stage"]), *ranks]
        regressions += sum(1 for a, b in pairwise(ranks) if b is not None and a is not None and b < a)
        skips += sum(1 for a, b in pairwise(ranks) if b is not None and a is not None and b > a + 1)
    assert regressions > 0 and skips > 0


def test_stall_rate_share_of_deals_sits_beyond_the_threshold(deals: list[dict[str, Any]]) -> None:
    stalled = 0
    for events in by_deal(deals).values():
        last = events[-1]
        if last["event_type"] in ("WON", "LOST", "DELETED"):
            continue
        pipeline = CONFIG.get(last["pipeline"])
        assert pipeline is not None
        stage = pipeline.stage(last["stage"])
        assert stage is not None and stage.stalled_after_days is not None
        entered = max(
            e["occurred_at"]
            for e in events
            if e["event_type"] in ("CREATED", "STAGE_CHANGED", "RESTORED") and e["stage"] == last["stage"]
        )
        if NOW - entered > stage.stalled_after_days * DAY_MS:
            stalled += 1
    # 10% of 600 deals are made to stall; the binomial spread is about +-7
    assert 40 <= stalled <= 85


def test_no_stalls_when_stall_rate_is_zero() -> None:
    events = generate_deals(11, 300, START, CONFIG, 0.0, now_ms=NOW)
    for deal_events in by_deal(events).values():
        last = deal_events[-1]
        if last["event_type"] in ("WON", "LOST", "DELETED"):
            continue
        stage = CONFIG.pipelines[last["pipeline"]].stage(last["stage"])
        assert stage is not None and stage.stalled_after_days is not None
        entered = max(e["occurred_at"] for e in deal_events if e["stage"] == last["stage"])
        assert NOW - entered < stage.stalled_after_days * DAY_MS or last["event_type"] == "RESTORED"


def test_surveys_have_a_suppressed_team_and_realistic_waves(
    surveys: tuple[list[dict[str, Any]], list[dict[str, Any]]],
) -> None:
    responses, invitations = surveys
    waves = sorted({i["survey_id"] for i in invitations})
    assert len(waves) == 4 and all(w.startswith("pulse-") for w in waves)
    teams = {i["team"]: i["department"] for i in invitations}
    assert 5 <= len(teams) <= 8
    assert 2 <= len(set(teams.values())) <= 3
    invited = {(i["survey_id"], i["team"]): i["invited"] for i in invitations}
    assert min(invited.values()) < 5
    respondents: dict[tuple[str, str], set[str]] = defaultdict(set)
    for r in responses:
        respondents[(r["survey_id"], r["team"])].add(r["respondent"])
        assert r["respondent"].startswith("emp-")
        assert r["submitted_at"] <= NOW
        assert 3 <= len(r["answers"]) <= 6
        assert all(a["scale_max"] == 5 and 1 <= a["score"] <= 5 for a in r["answers"])
    assert any(len(respondents.get(k, ())) < 5 for k in invited)
    assert all(len(respondents.get(k, ())) <= n for k, n in invited.items())
    rate = sum(len(v) for v in respondents.values()) / sum(invited.values())
    assert 0.6 <= rate <= 0.8
    assert {r["enps_scale_min"] for r in responses} == {0, 1}
    per_respondent = Counter((r["survey_id"], r["respondent"]) for r in responses)
    assert 2 in per_respondent.values()  # someone answered twice
    assert len({r["response_id"] for r in responses}) == len(responses)


def canonical(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    unique = {e["event_id"]: e for e in events}
    return sorted(unique.values(), key=lambda e: (e["occurred_at"], int(e["event_id"].rsplit("-", 1)[1])))


def test_deliver_duplicates_and_reorders_but_keeps_the_canonical_set(deals: list[dict[str, Any]]) -> None:
    delivered = deliver(deals, 5, duplicate_rate=0.05, reorder_rate=0.1)
    assert len(delivered) > len(deals)
    assert delivered != deals
    assert canonical(delivered) == deals
    dupes = Counter(e["event_id"] for e in delivered)
    assert max(dupes.values()) >= 2
    # reordering happens within a deal: some deal's events arrive out of time order
    assert any(
        [e["occurred_at"] for e in evs] != sorted(e["occurred_at"] for e in evs)
        for evs in by_deal(delivered).values()
    )
    assert deliver(deals, 5, 0.05, 0.1) == delivered
    assert deliver(deals, 5, 0.0, 0.0) == deals


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 1000), dup=st.floats(0, 1), reorder=st.floats(0, 1))
def test_deliver_never_loses_or_invents_events(seed: int, dup: float, reorder: float) -> None:
    events = generate_deals(1, 15, START, CONFIG, now_ms=NOW)
    delivered = deliver(events, seed, dup, reorder)
    assert canonical(delivered) == events
    assert all(e in events for e in delivered)


def test_output_dir_writes_three_jsonl_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(
        seed=1,
        deals=40,
        survey_waves=2,
        employees=60,
        rate=0.0,
        duration=0.0,
        count=0,
        duplicate_rate=0.1,
        reorder_rate=0.1,
        stall_rate=0.1,
        start=None,
        loop=False,
        output_dir=tmp_path,
    )
    assert simulator.run_simulate(args, Settings()) == 0
    lines = {name: (tmp_path / name).read_text().splitlines() for name in simulator.OUTPUT_FILES.values()}
    assert all(lines.values())
    deal_events = [json.loads(line) for line in lines["deals.jsonl"]]
    assert len({e["event_id"] for e in deal_events}) < len(deal_events)  # duplicates delivered
    assert "wrote" in capsys.readouterr().out


def test_bad_rates_are_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(
        seed=1,
        deals=1,
        survey_waves=0,
        employees=10,
        rate=0.0,
        duration=0.0,
        count=0,
        duplicate_rate=1.5,
        reorder_rate=0.0,
        stall_rate=0.1,
        start=None,
        loop=False,
        output_dir=None,
    )
    assert simulator.run_simulate(args, Settings()) == 2
    assert "--duplicate-rate" in capsys.readouterr().err


def test_simulate_stops_before_producing_when_its_topics_cannot_be_made(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_producer(_settings: Settings) -> None:
        raise AssertionError("the producer must not be created")

    asked: list[list[str]] = []

    def refuse(_settings: Settings, names: list[str], tool: str) -> str:
        asked.append(names)
        return f"{tool}: no topics"

    monkeypatch.setattr(simulator, "prepare_tool_topics", refuse)
    monkeypatch.setattr(simulator, "make_producer", no_producer)
    args = argparse.Namespace(
        seed=1,
        deals=5,
        survey_waves=1,
        employees=10,
        rate=0.0,
        duration=0.0,
        count=0,
        duplicate_rate=0.0,
        reorder_rate=0.0,
        stall_rate=0.1,
        start=None,
        loop=False,
        output_dir=None,
    )
    assert simulator.run_simulate(args, Settings()) == 3
    assert asked == [["crm.deal-events", "hr.survey-responses", "hr.survey-invitations"]]
    assert capsys.readouterr().err.strip() == "salesops simulate: no topics"


def test_default_output_fills_the_trailing_windows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # `salesops simulate` with every default (500 deals from 120 days back, 2 waves) on a
    # fixed clock: 2 waves 14 days apart, the last sent 10 days before now, are sent 24 and
    # 10 days ago, so both the 30- and the 90-day eNPS windows hold answers (sent 120 and
    # 106 days ago, as before, neither would); deals close in the last 30 days too.
    from agents.cli import build_parser

    monkeypatch.setattr(simulator, "_now_ms", lambda: NOW)
    args = build_parser().parse_args(["simulate", "--output-dir", str(tmp_path)])
    assert simulator.run_simulate(args, Settings()) == 0
    capsys.readouterr()
    read = {
        name: [json.loads(line) for line in (tmp_path / f).read_text().splitlines()]
        for name, f in simulator.OUTPUT_FILES.items()
    }
    last_30d = NOW - 30 * DAY_MS
    sent = sorted({i["sent_at"] for i in read["invitations"]})
    assert sent == [NOW - 24 * DAY_MS, NOW - 10 * DAY_MS]
    recent = [r for r in read["surveys"] if r["submitted_at"] >= last_30d and r["enps_score"] is not None]
    assert all(r["submitted_at"] <= NOW for r in read["surveys"])
    # 120 invited per wave, ~70 % answer: well above the anonymity threshold of 5
    assert len({(r["survey_id"], r["respondent"]) for r in recent}) >= 100
    closes = Counter(
        e["event_type"]
        for e in read["deals"]
        if e["event_type"] in ("WON", "LOST") and e["occurred_at"] >= last_30d
    )
    # 500 deals, ~30 % of them closing in the last 30 days of 120: dozens of each
    assert closes["WON"] >= 20 and closes["LOST"] >= 20


def test_waves_start_at_start_unless_the_last_would_miss_the_trailing_windows() -> None:
    # 9 waves span 8 x 14 = 112 days: from 120 days back the last is sent 8 days ago
    assert simulator.first_wave_ms(9, START, NOW) == START
    # 2 waves from 120 days back would end 106 days ago: moved to 24 and 10 days ago
    assert simulator.first_wave_ms(2, START, NOW) == NOW - 24 * DAY_MS
    # a short span keeps its start (waves after now are left out)
    assert simulator.first_wave_ms(3, NOW - 5 * DAY_MS, NOW) == NOW - 5 * DAY_MS
