"""The per-partition deal step (streams/deal_step.py): the worker's batch semantics."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams import deals as deal_core
from streams import stalled
from streams.deal_step import BatchOutcome, DealPartition, StoredDeal, apply_batch
from streams.events import DAY_MS, DealEvent
from tests.unit.clocks import FixedClock
from tests.unit.test_deal_properties import CONFIG, RATES, START, TZ, events


def partition(clock: FixedClock | None = None) -> DealPartition:
    return DealPartition(CONFIG, RATES, TZ, allowed_lateness_ms=3_600_000, wall_clock=clock)


class Table(dict[str, StoredDeal]):
    """The deals table as the worker keeps it: the step's changed records written back."""

    def run(self, part: DealPartition, items: list[DealEvent | stalled.DueCheck]) -> BatchOutcome:
        out = apply_batch(part, self.get, items)
        self.update(out.changed)
        return out


def ev(deal_id: str, at: int, stage: str = "appointmentscheduled", event_id: str = "1", **kw) -> DealEvent:  # type: ignore[no-untyped-def]
    fields = {
        "event_id": event_id,
        "source": "test",
        "deal_id": deal_id,
        "event_type": "UPDATED",
        "occurred_at": at,
        "pipeline": "default",
        "stage": stage,
        "amount": Decimal("100"),
        "currency": "USD",
        "owner_id": None,
        "team": None,
        "region": None,
        "expected_close_date": None,
        "probability": None,
    }
    fields.update(kw)
    return DealEvent(**fields)


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(events, max_size=25), st.integers(1, 6))
def test_a_batch_gives_the_state_and_views_of_its_items_one_by_one(evs: list[DealEvent], cut: int) -> None:
    one_by_one, batched = Table(), Table()
    a, b = partition(), partition()
    for e in evs:
        one_by_one.run(a, [e])
    for i in range(0, len(evs), cut):
        batched.run(b, evs[i : i + cut])
    assert batched == one_by_one
    assert b.views.partial() == a.views.partial()
    assert b.watermark.now_ms() == a.watermark.now_ms()


def test_each_changed_deal_is_one_record_with_its_last_state() -> None:
    # d1 changes three times, d2 once, and a duplicate of d2's event changes nothing
    items = [
        ev("d1", START, event_id="1"),
        ev("d2", START, event_id="1"),
        ev("d1", START + 1000, "qualifiedtobuy", event_id="2"),
        ev("d2", START, event_id="1"),
        ev("d1", START + 2000, "presentationscheduled", event_id="3"),
    ]
    out = apply_batch(partition(), lambda _id: None, items)
    assert sorted(out.changed) == ["d1", "d2"]
    assert out.changed["d1"].deal.stage == "presentationscheduled"
    assert len(out.changed["d1"].deal.observations) == 3
    assert out.problems == []


def test_events_older_than_the_watermark_are_counted_late_and_still_applied() -> None:
    # lateness 1 h: after an event at START + 3 h the watermark is START + 2 h;
    # an event at START + 1 h is late (counted) yet applied (the deal exists)
    out = apply_batch(
        partition(), lambda _id: None, [ev("d1", START + 3 * 3_600_000), ev("d2", START + 3_600_000)]
    )
    assert out.late == 1
    assert set(out.changed) == {"d1", "d2"}


def test_a_deal_past_its_event_limit_is_a_problem_not_a_record() -> None:
    full = deal_core.fold(
        [ev("d1", START + i, event_id=str(i)) for i in range(deal_core.MAX_OBSERVATIONS)], CONFIG
    )
    table = Table(d1=StoredDeal(full))
    out = apply_batch(partition(), table.get, [ev("d1", START - 1, event_id="new"), ev("d2", START)])
    assert [(p.index, p.reason) for p in out.problems] == [(0, "deal_history_full")]
    assert list(out.changed) == ["d2"]


def test_a_bug_on_one_item_is_reported_and_the_rest_applied() -> None:
    # an event whose deal id differs from the stored deal's makes deals.apply raise
    table = Table(d1=StoredDeal(replace(deal_core.fold([ev("d1", START)], CONFIG), deal_id="other")))
    out = apply_batch(partition(), table.get, [ev("d1", START + 1, event_id="2"), ev("d2", START)])
    assert [(p.index, p.reason) for p in out.problems] == [(0, "internal_error")]
    assert list(out.changed) == ["d2"]


def test_a_due_check_fires_on_the_partition_clock_and_the_next_move_resolves() -> None:
    # "appointmentscheduled" of "default" stalls after its configured days
    threshold = stalled.threshold_days(CONFIG, "default", "appointmentscheduled")
    assert threshold is not None
    clock = FixedClock(START)
    part, table = partition(clock), Table()
    table.run(part, [ev("d1", START)])
    assert part.due_checks() == []  # not due yet
    clock.set(START + int(threshold * DAY_MS))
    (check,) = part.due_checks()
    out = table.run(part, [check])
    assert [(t.status, t.alert_id) for t in out.transitions] == [
        ("FIRING", f"stalled:d1:appointmentscheduled:{START}")
    ]
    assert set(part.firing) == {"d1"}
    out = table.run(part, [ev("d1", START + 1000, "qualifiedtobuy", event_id="2")])
    assert [t.status for t in out.transitions] == ["RESOLVED"]
    assert part.firing == {}


def test_restore_rebuilds_what_the_step_built() -> None:
    evs = [
        ev("d1", START),
        ev("d2", START + 5, "qualifiedtobuy"),
        ev("d1", START + 9, "closedwon", event_id="2"),
    ]
    live, table = partition(), Table()
    table.run(live, evs)
    restored = partition()
    for rec in table.values():
        restored.restore(rec)
    assert restored.views.partial() == live.views.partial()
    assert restored.watermark.now_ms() == live.watermark.now_ms()
