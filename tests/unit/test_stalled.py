"""Stalled-deal detection: due times, firing once, resolution, re-entry, index mechanics."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.events import DAY_MS
from streams.pipelines import Pipeline, PipelineConfig, Stage
from streams.stalled import (
    FIRING,
    RESOLVED,
    AlertState,
    AlertTransition,
    DueCheck,
    StallIndex,
    alert_id,
    due_at,
    on_check,
    on_deal_change,
    threshold_days,
)
from tests.unit.clocks import FixedClock

T0 = 1_700_000_000_000  # an arbitrary epoch-ms start
PROPOSAL_MS = 86_400  # 0.001 days
NEGOTIATION_MS = 172_800  # 0.002 days


@dataclass(frozen=True)
class Visit:
    stage: str
    entered_at: int
    exited_at: int | None = None


@dataclass(frozen=True)
class FakeDeal:
    """The members of ``streams.deals.Deal`` the stall logic reads, nothing more."""

    deal_id: str
    stage: str
    entered_at: int
    pipeline: str = "enterprise"
    status: str = "open"
    amount: Decimal = Decimal("12000")
    currency: str = "EUR"
    owner_id: str | None = "u-3"

    @property
    def is_open(self) -> bool:
        return self.status == "open"

    def current_visit(self) -> Visit:
        return Visit(self.stage, self.entered_at)


def make_config(
    proposal_days: float | None = 0.001, negotiation_days: float | None = 0.002
) -> PipelineConfig:
    enterprise = Pipeline(
        id="enterprise",
        stages=(
            Stage("discovery", 0.1, None),
            Stage("proposal", 0.5, proposal_days),
            Stage("negotiation", 0.8, negotiation_days),
        ),
        won_stage="won",
        lost_stage="lost",
    )
    return PipelineConfig(pipelines={"enterprise": enterprise})


CONFIG = make_config()


def fire(deal: FakeDeal, at: int) -> tuple[AlertState, AlertTransition]:
    """Fire the deal's current visit at ``at`` through the index, as the worker does."""
    index = StallIndex(CONFIG)
    index.track(deal, None)
    (check,) = index.pop_due(at)
    state, transitions = on_check(deal, None, check, at, CONFIG)
    assert state is not None and len(transitions) == 1
    return state, transitions[0]


# ----------------------------------------------------------------------------- thresholds


def test_alert_id_is_the_stage_visit() -> None:
    assert alert_id("D-17", "proposal", 123) == "stalled:D-17:proposal:123"


def test_due_at_adds_the_fractional_threshold_in_ms() -> None:
    assert due_at(CONFIG, "enterprise", "proposal", T0) == T0 + 86_400
    assert due_at(make_config(proposal_days=21), "enterprise", "proposal", T0) == T0 + 21 * DAY_MS
    # 1e-8 days = 0.864 ms, rounded to the nearest ms
    assert due_at(make_config(proposal_days=1e-8), "enterprise", "proposal", T0) == T0 + 1


@pytest.mark.parametrize(
    ("pipeline", "stage"),
    [
        ("enterprise", "won"),  # closed
        ("enterprise", "lost"),  # closed
        ("enterprise", "discovery"),  # open, no threshold
        ("enterprise", "mystery"),  # unknown stage
        ("nope", "proposal"),  # unknown pipeline
    ],
)
def test_stages_without_threshold_never_stall(pipeline: str, stage: str) -> None:
    assert threshold_days(CONFIG, pipeline, stage) is None
    assert due_at(CONFIG, pipeline, stage, T0) is None
    index = StallIndex(CONFIG)
    index.track(FakeDeal("D-1", stage, T0, pipeline=pipeline), None)
    assert len(index) == 0


# ----------------------------------------------------------------------------- firing


def test_fires_at_due_not_before_with_the_full_record() -> None:
    clock = FixedClock(T0)
    deal = FakeDeal("D-17", "proposal", T0)
    index = StallIndex(CONFIG)
    index.track(deal, None)
    assert index.due_of("D-17") == T0 + PROPOSAL_MS

    clock.advance(PROPOSAL_MS - 1)
    assert index.pop_due(clock.now_ms()) == []  # 1 ms before due
    clock.advance(1)
    (check,) = index.pop_due(clock.now_ms())  # exactly at due
    assert check == DueCheck("D-17", "proposal", T0, T0 + PROPOSAL_MS)

    state, transitions = on_check(deal, None, check, clock.now_ms(), CONFIG)
    assert state == AlertState(
        alert_id="stalled:D-17:proposal:1700000000000",
        status=FIRING,
        pipeline="enterprise",
        stage="proposal",
        entered_at=T0,
        fired_at=T0 + PROPOSAL_MS,
    )
    (t,) = transitions
    assert t.to_record() == {
        "alert_id": "stalled:D-17:proposal:1700000000000",
        "kind": "STALLED_DEAL",
        "status": "FIRING",
        "subject": "D-17",
        "pipeline": "enterprise",
        "stage": "proposal",
        "owner_id": "u-3",
        "amount": "12000",
        "currency": "EUR",
        "days_in_stage": 0.001,
        "threshold": 0.001,
        "value": 0.001,
        "unit": "days",
        "fired_at": T0 + PROPOSAL_MS,
        "resolved_at": None,
        "summary": "Deal D-17 (enterprise/proposal, 12,000.00 EUR, owner u-3) stalled: "
        "0.0 days in stage, threshold 0.001",
    }
    # the worker re-tracks after the check: a FIRING visit is not indexed any more
    index.track(deal, state)
    assert len(index) == 0


def test_summary_reads_like_the_example_with_real_thresholds() -> None:
    config = make_config(proposal_days=21)
    deal = FakeDeal("D-17", "proposal", T0)
    now = T0 + round(23.4 * DAY_MS)
    check = DueCheck("D-17", "proposal", T0, T0 + 21 * DAY_MS)
    _, (t,) = on_check(deal, None, check, now, config)
    assert t.summary == (
        "Deal D-17 (enterprise/proposal, 12,000.00 EUR, owner u-3) stalled: 23.4 days in stage, threshold 21"
    )
    assert t.days_in_stage == 23.4 and t.threshold_days == 21.0


def test_a_check_handed_in_before_due_does_not_fire() -> None:
    deal = FakeDeal("D-1", "proposal", T0)
    check = DueCheck("D-1", "proposal", T0, T0 + PROPOSAL_MS)
    assert on_check(deal, None, check, T0 + PROPOSAL_MS - 1, CONFIG) == (None, [])


def test_reprocessing_the_same_check_fires_nothing() -> None:
    deal = FakeDeal("D-1", "proposal", T0)
    check = DueCheck("D-1", "proposal", T0, T0 + PROPOSAL_MS)
    state, first = on_check(deal, None, check, T0 + PROPOSAL_MS, CONFIG)
    assert len(first) == 1
    # after a restart the same check comes again, later: still FIRING, nothing new
    assert on_check(deal, state, check, T0 + 5 * PROPOSAL_MS, CONFIG) == (state, [])
    # ... and once resolved, a stale copy of the check does not bring it back
    assert state is not None
    resolved = replace(state, status=RESOLVED, resolved_at=T0 + 2 * PROPOSAL_MS)
    assert on_check(deal, resolved, check, T0 + 5 * PROPOSAL_MS, CONFIG) == (resolved, [])


@pytest.mark.parametrize(
    "later",
    [
        FakeDeal("D-1", "negotiation", T0 + 10),  # moved
        FakeDeal("D-1", "proposal", T0 + 10),  # left and re-entered
        FakeDeal("D-1", "won", T0 + 10, status="won"),  # closed
        None,  # gone from the table
    ],
)
def test_a_check_for_a_visit_the_deal_has_left_fires_nothing(later: FakeDeal | None) -> None:
    check = DueCheck("D-1", "proposal", T0, T0 + PROPOSAL_MS)
    assert on_check(later, None, check, T0 + PROPOSAL_MS, CONFIG) == (None, [])


def test_a_missed_resolution_is_made_good_before_the_new_fire() -> None:
    # the state still says FIRING for the proposal visit, the deal is in negotiation
    first = FakeDeal("D-1", "proposal", T0)
    state, _ = fire(first, T0 + PROPOSAL_MS)
    moved = FakeDeal("D-1", "negotiation", T0 + PROPOSAL_MS + 5)
    check = DueCheck("D-1", "negotiation", moved.entered_at, moved.entered_at + NEGOTIATION_MS)
    new_state, transitions = on_check(moved, state, check, check.due_at, CONFIG)
    assert [(t.alert_id, t.status) for t in transitions] == [
        (state.alert_id, RESOLVED),
        (alert_id("D-1", "negotiation", moved.entered_at), FIRING),
    ]
    assert new_state is not None and new_state.status == FIRING and new_state.stage == "negotiation"


# ----------------------------------------------------------------------------- resolution


@pytest.mark.parametrize(
    ("new", "reason"),
    [
        (FakeDeal("D-17", "negotiation", T0 + 200_000), "moved to negotiation"),
        (FakeDeal("D-17", "won", T0 + 200_000, status="won"), "won"),
        (FakeDeal("D-17", "lost", T0 + 200_000, status="lost"), "lost"),
        (FakeDeal("D-17", "proposal", T0, status="deleted"), "deleted"),
        (None, "deleted"),
    ],
)
def test_resolves_on_move_close_or_delete(new: FakeDeal | None, reason: str) -> None:
    old = FakeDeal("D-17", "proposal", T0)
    state, fired = fire(old, T0 + PROPOSAL_MS)
    now = T0 + 200_000
    resolved, (t,) = on_deal_change(old, new, state, now, CONFIG)
    assert resolved == replace(state, status=RESOLVED, resolved_at=now)
    assert (t.alert_id, t.status, t.fired_at, t.resolved_at) == (
        fired.alert_id,
        RESOLVED,
        fired.fired_at,
        now,
    )
    # a RESOLVED describes the same (pipeline, stage) as its FIRING, wherever the deal went
    assert (t.pipeline, t.stage, t.threshold_days) == ("enterprise", "proposal", 0.001)
    # 200_000 ms in proposal = 2.3148 days / 1000
    assert t.days_in_stage == 0.002
    assert t.summary == (
        f"Deal D-17 (enterprise/proposal, 12,000.00 EUR, owner u-3) no longer stalled: {reason} "
        "after 0.0 days in stage"
    )
    # reprocessing the same change after a restart: nothing new
    assert on_deal_change(old, new, resolved, now, CONFIG) == (resolved, [])
    assert on_deal_change(new, new, resolved, now + 1, CONFIG) == (resolved, [])


def test_changes_within_the_visit_keep_the_alert_firing() -> None:
    old = FakeDeal("D-1", "proposal", T0)
    state, _ = fire(old, T0 + PROPOSAL_MS)
    bigger = replace(old, amount=Decimal("99000"), owner_id="u-9")
    assert on_deal_change(old, bigger, state, T0 + PROPOSAL_MS + 1, CONFIG) == (state, [])


def test_changes_without_a_firing_alert_resolve_nothing() -> None:
    old = FakeDeal("D-1", "proposal", T0)
    new = FakeDeal("D-1", "negotiation", T0 + 5)
    assert on_deal_change(None, old, None, T0, CONFIG) == (None, [])
    assert on_deal_change(old, new, None, T0 + 5, CONFIG) == (None, [])


def test_re_entering_a_stage_fires_again_under_a_new_id() -> None:
    index = StallIndex(CONFIG)
    first = FakeDeal("D-1", "proposal", T0)
    state, fired1 = fire(first, T0 + PROPOSAL_MS)

    # moves on to negotiation (resolves), then back to proposal: a new visit
    moved = FakeDeal("D-1", "negotiation", T0 + PROPOSAL_MS + 10)
    state2, _ = on_deal_change(first, moved, state, moved.entered_at, CONFIG)
    back = FakeDeal("D-1", "proposal", T0 + PROPOSAL_MS + 20)
    state3, transitions = on_deal_change(moved, back, state2, back.entered_at, CONFIG)
    assert transitions == [] and state3 is state2
    index.track(back, state3)
    (check,) = index.pop_due(back.entered_at + PROPOSAL_MS)
    state4, (fired2,) = on_check(back, state3, check, check.due_at, CONFIG)
    assert fired2.status == FIRING
    assert fired2.alert_id == alert_id("D-1", "proposal", back.entered_at) != fired1.alert_id
    assert state4 is not None and state4.alert_id == fired2.alert_id


def test_a_resolved_visit_is_not_rescheduled_when_restored_with_the_same_visit() -> None:
    deal = FakeDeal("D-1", "proposal", T0)
    state, _ = fire(deal, T0 + PROPOSAL_MS)
    deleted = replace(deal, status="deleted")
    resolved, _ = on_deal_change(deal, deleted, state, T0 + PROPOSAL_MS + 1, CONFIG)
    index = StallIndex(CONFIG)
    index.track(deal, resolved)  # restored into the very same visit
    assert len(index) == 0


# ----------------------------------------------------------------------------- config change


def test_a_new_config_applies_to_open_deals_after_a_restart() -> None:
    a = FakeDeal("A", "proposal", T0)
    b = FakeDeal("B", "negotiation", T0)
    index = StallIndex(CONFIG)
    for d in (a, b):
        index.track(d, None)
    assert (index.due_of("A"), index.due_of("B")) == (T0 + PROPOSAL_MS, T0 + NEGOTIATION_MS)

    # proposal threshold halved, negotiation's removed
    lowered = make_config(proposal_days=0.0005, negotiation_days=None)
    # what a restart does: a new index under the new config, fed from the table
    index = StallIndex(lowered)
    for d in (a, b):
        index.track(d, None)
    assert len(index) == 1
    assert index.due_of("A") == T0 + 43_200 and "B" not in index
    assert [c.deal_id for c in index.pop_due(T0 + 43_200)] == ["A"]

    # raised: a check scheduled under the old config does not fire early under the new one
    raised = make_config(proposal_days=0.01)
    stale_check = DueCheck("A", "proposal", T0, T0 + PROPOSAL_MS)
    assert on_check(a, None, stale_check, T0 + PROPOSAL_MS, raised) == (None, [])
    index = StallIndex(raised)
    index.track(a, None)
    assert index.due_of("A") == T0 + 864_000


# ----------------------------------------------------------------------------- index mechanics


def test_pop_due_orders_by_due_then_deal_id_and_hands_each_out_once() -> None:
    index = StallIndex(CONFIG)
    index.track(FakeDeal("C", "proposal", T0 + 5), None)
    index.track(FakeDeal("B", "proposal", T0), None)
    index.track(FakeDeal("A", "proposal", T0), None)
    index.track(FakeDeal("Z", "negotiation", T0), None)  # due later than all of them
    assert len(index) == 4
    assert [(c.deal_id, c.due_at) for c in index.pop_due(T0 + PROPOSAL_MS + 5)] == [
        ("A", T0 + PROPOSAL_MS),
        ("B", T0 + PROPOSAL_MS),
        ("C", T0 + PROPOSAL_MS + 5),
    ]
    assert index.pop_due(T0 + PROPOSAL_MS + 5) == []
    assert len(index) == 1 and index.due_of("Z") == T0 + NEGOTIATION_MS


def test_lazy_deletion_skips_stale_entries() -> None:
    index = StallIndex(CONFIG)
    a = FakeDeal("A", "proposal", T0)
    index.track(a, None)
    index.track(a, None)  # same visit again (an amount change): no duplicate
    index.track(FakeDeal("B", "proposal", T0), None)
    index.untrack("B")
    moved = FakeDeal("A", "negotiation", T0 + 1_000)
    index.track(moved, None)  # the proposal item of A is now stale
    assert len(index) == 1
    assert index.due_of("A") == T0 + 1_000 + NEGOTIATION_MS
    assert index.pop_due(T0 + PROPOSAL_MS) == []  # stale A/proposal and B skipped
    (check,) = index.pop_due(T0 + 1_000 + NEGOTIATION_MS)
    assert check == DueCheck("A", "negotiation", T0 + 1_000, T0 + 1_000 + NEGOTIATION_MS)
    assert len(index) == 0 and index.due_of("A") is None
    index.untrack("nobody")  # forgetting an unknown deal is fine


def test_closing_or_firing_removes_a_deal_from_the_index() -> None:
    index = StallIndex(CONFIG)
    deal = FakeDeal("A", "proposal", T0)
    index.track(deal, None)
    index.track(replace(deal, stage="won", status="won"), None)
    assert len(index) == 0
    index.track(deal, None)
    state, _ = fire(deal, T0 + PROPOSAL_MS)
    index.track(deal, state)
    assert len(index) == 0


def test_heavy_churn_keeps_the_heap_bounded_and_the_answers_right() -> None:
    index = StallIndex(CONFIG)
    for i in range(2_000):  # one deal moving back and forth between the two stages
        stage = "proposal" if i % 2 else "negotiation"
        index.track(FakeDeal("A", stage, T0 + i), None)
        index.track(FakeDeal(f"X{i % 10}", "proposal", T0 + i), None)
    assert len(index) == 11
    assert len(index._heap) <= 2 * len(index) + 64 + 1
    due = index.pop_due(T0 + 10 * DAY_MS)
    assert sorted(c.deal_id for c in due) == ["A"] + [f"X{i}" for i in range(10)]
    assert next(c for c in due if c.deal_id == "A") == DueCheck(
        "A", "proposal", T0 + 1_999, T0 + 1_999 + 86_400
    )


# ----------------------------------------------------------------------------- state & gauge


def test_alert_state_round_trips_through_json() -> None:
    state, _ = fire(FakeDeal("D-1", "proposal", T0), T0 + PROPOSAL_MS)
    resolved = replace(state, status=RESOLVED, resolved_at=T0 + 10**6)
    for s in (state, resolved):
        assert AlertState.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    assert AlertState.from_dict(None) is None
    with pytest.raises(ValueError):
        replace(state, status="PENDING")


# ----------------------------------------------------------------------------- replay property


def run_worker(steps: list[tuple[int, FakeDeal | None]]) -> list[tuple[str, str, int, int | None]]:
    """The worker loop in miniature: at each step, fire what is due, then apply the change."""
    index = StallIndex(CONFIG)
    deal: FakeDeal | None = None
    state: AlertState | None = None
    out: list[AlertTransition] = []
    for now, new in steps:
        for check in index.pop_due(now):
            state, ts = on_check(deal, state, check, now, CONFIG)
            out += ts
            if deal is not None:
                index.track(deal, state)
        state, ts = on_deal_change(deal, new, state, now, CONFIG)
        out += ts
        deal = new
        if deal is None:
            index.untrack("D")
        else:
            index.track(deal, state)
    return [(t.alert_id, t.status, t.fired_at, t.resolved_at) for t in out]


@st.composite
def histories(draw: st.DrawFn) -> list[tuple[int, FakeDeal | None]]:
    now = T0
    steps: list[tuple[int, FakeDeal | None]] = []
    deal: FakeDeal | None = None
    for _ in range(draw(st.integers(1, 12))):
        now += draw(st.integers(0, 3 * NEGOTIATION_MS))
        kind = draw(st.sampled_from(["move", "amount", "won", "delete", "tick"]))
        if kind == "move" or deal is None:
            stage = draw(st.sampled_from(["discovery", "proposal", "negotiation"]))
            deal = FakeDeal("D", stage, now)
        elif kind == "amount":
            deal = replace(deal, amount=deal.amount + 1)
        elif kind == "won":
            deal = replace(deal, stage="won", status="won", entered_at=now)
        elif kind == "delete":
            deal = replace(deal, status="deleted")
        steps.append((now, deal))
    return steps


@settings(max_examples=200, deadline=None)
@given(histories(), st.data())
def test_duplicated_steps_change_no_transition(
    steps: list[tuple[int, FakeDeal | None]], data: st.DataObject
) -> None:
    once = run_worker(steps)
    # each step delivered 1-3 times (at-least-once redelivery)
    dup = [s for s in steps for _ in range(data.draw(st.integers(1, 3)))]
    assert run_worker(dup) == once
    # every alert fires at most once and resolves at most once, after it fired
    firing = [t for t in once if t[1] == FIRING]
    assert len({t[0] for t in firing}) == len(firing)
    for aid, status, fired_at, resolved_at in once:
        if status == RESOLVED:
            assert aid in {f[0] for f in firing} and resolved_at is not None and resolved_at >= fired_at
