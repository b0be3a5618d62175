"""Deal state: status rules, history, idempotence, out-of-order events, serialization."""

from __future__ import annotations

import itertools
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from streams.deals import Deal, Observation, StageVisit, apply, event_status, fold
from streams.events import DealEvent
from streams.pipelines import load_pipelines

CONFIG = load_pipelines()
T0 = 1_709_251_200_000  # 2024-03-01T00:00:00Z
HOUR = 3_600_000
DAY = 86_400_000


def ev(
    event_id: str,
    at: int,
    stage: str,
    event_type: str = "UPDATED",
    amount: str = "1000",
    currency: str = "USD",
    deal_id: str = "d1",
    pipeline: str = "default",
    source: str = "hubspot",
    **attrs: Any,
) -> DealEvent:
    return DealEvent(
        event_id=event_id,
        source=source,
        deal_id=deal_id,
        event_type=event_type,
        occurred_at=at,
        pipeline=pipeline,
        stage=stage,
        amount=Decimal(amount),
        currency=currency,
        **attrs,
    )


@pytest.mark.parametrize(
    ("event_type", "stage", "status"),
    [
        ("CREATED", "appointmentscheduled", "open"),
        ("UPDATED", "qualifiedtobuy", "open"),
        ("STAGE_CHANGED", "contractsent", "open"),
        ("RESTORED", "contractsent", "open"),
        ("STAGE_CHANGED", "closedwon", "won"),
        ("WON", "contractsent", "won"),
        ("UPDATED", "closedlost", "lost"),
        ("LOST", "qualifiedtobuy", "lost"),
        ("DELETED", "closedwon", "deleted"),
        ("UPDATED", "no-such-stage", "open"),
    ],
)
def test_status_rules(event_type: str, stage: str, status: str) -> None:
    assert event_status(ev("e", T0, stage, event_type), CONFIG) == status


def test_unknown_pipeline_closes_only_by_event_type() -> None:
    assert event_status(ev("e", T0, "closedwon", pipeline="nope"), CONFIG) == "open"
    assert event_status(ev("e", T0, "x", "WON", pipeline="nope"), CONFIG) == "won"


def test_first_event_builds_the_deal() -> None:
    e = ev(
        "e1",
        T0,
        "appointmentscheduled",
        "CREATED",
        "1250.50",
        "EUR",
        owner_id="o1",
        team="t1",
        region="emea",
        expected_close_date=date(2024, 6, 30),
        probability=0.3,
    )
    d = apply(None, e, CONFIG)
    assert d is not None
    assert (d.deal_id, d.pipeline, d.stage, d.status, d.amount, d.currency) == (
        "d1",
        "default",
        "appointmentscheduled",
        "open",
        Decimal("1250.50"),
        "EUR",
    )
    assert (d.owner_id, d.team, d.region, d.expected_close_date, d.probability) == (
        "o1",
        "t1",
        "emea",
        date(2024, 6, 30),
        0.3,
    )
    assert d.observations == (
        Observation(T0, "hubspot:e1", "appointmentscheduled", "open", Decimal("1250.50"), "EUR"),
    )
    assert d.created_at == T0
    assert d.is_open and d.closed_at is None


def test_duplicate_event_changes_nothing() -> None:
    e = ev("e1", T0, "appointmentscheduled")
    d = apply(None, e, CONFIG)
    assert apply(d, e, CONFIG) is None
    # an equal event rebuilt from scratch (a redelivery) is a duplicate too
    assert apply(d, ev("e1", T0, "appointmentscheduled"), CONFIG) is None


def test_reused_event_id_at_another_time_is_another_observation() -> None:
    # HubSpot event ids are not unique: same id, different occurred_at -> two observations
    d = fold([ev("e1", T0, "appointmentscheduled"), ev("e1", T0 + HOUR, "qualifiedtobuy")], CONFIG)
    assert [o.stage for o in d.observations] == ["appointmentscheduled", "qualifiedtobuy"]


def test_same_time_different_sources_are_ordered_by_event_key() -> None:
    a = ev("9", T0, "qualifiedtobuy", source="hubspot")
    b = ev("1", T0, "appointmentscheduled", source="import")
    for order in ([a, b], [b, a]):
        d = fold(order, CONFIG)
        # "hubspot:9" < "import:1": the import event is the newest
        assert d.stage == "appointmentscheduled"
        assert [o.event_key for o in d.observations] == ["hubspot:9", "import:1"]


def test_current_attributes_come_from_the_newest_event() -> None:
    new = ev("e2", T0 + DAY, "qualifiedtobuy", amount="2000", owner_id="o2", team="t2")
    old = ev("e1", T0, "appointmentscheduled", amount="1000", owner_id="o1", team="t1")
    d = fold([new, old], CONFIG)  # the older event arrives late
    assert (d.stage, d.amount, d.owner_id, d.team) == ("qualifiedtobuy", Decimal("2000"), "o2", "t2")
    assert d.created_at == T0
    assert d == fold([old, new], CONFIG)


def test_late_event_is_inserted_into_history() -> None:
    # seen: appointment (day 0) -> presentation (day 5); late: qualified at day 2
    d = fold([ev("a", T0, "appointmentscheduled"), ev("c", T0 + 5 * DAY, "presentationscheduled")], CONFIG)
    assert d.history() == (
        StageVisit("appointmentscheduled", T0, T0 + 5 * DAY),
        StageVisit("presentationscheduled", T0 + 5 * DAY, None),
    )
    d2 = apply(d, ev("b", T0 + 2 * DAY, "qualifiedtobuy"), CONFIG)
    assert d2 is not None
    assert d2.history() == (
        StageVisit("appointmentscheduled", T0, T0 + 2 * DAY),
        StageVisit("qualifiedtobuy", T0 + 2 * DAY, T0 + 5 * DAY),
        StageVisit("presentationscheduled", T0 + 5 * DAY, None),
    )
    assert d2.stage == "presentationscheduled"  # the newest event still wins


def test_history_merges_consecutive_observations_of_one_stage() -> None:
    # amount change inside a stage does not start a new visit; regression does
    d = fold(
        [
            ev("a", T0, "qualifiedtobuy"),
            ev("b", T0 + DAY, "qualifiedtobuy", amount="1500"),
            ev("c", T0 + 2 * DAY, "contractsent"),
            ev("d", T0 + 3 * DAY, "qualifiedtobuy"),
        ],
        CONFIG,
    )
    assert d.history() == (
        StageVisit("qualifiedtobuy", T0, T0 + 2 * DAY),
        StageVisit("contractsent", T0 + 2 * DAY, T0 + 3 * DAY),
        StageVisit("qualifiedtobuy", T0 + 3 * DAY, None),
    )
    assert d.current_visit() == d.history()[-1]


def test_current_visit_spans_status_changes_without_stage_change() -> None:
    # LOST in the same stage and RESTORED: stage never changed, so one visit since day 0
    d = fold(
        [
            ev("a", T0, "proposal", pipeline="enterprise"),
            ev("b", T0 + DAY, "proposal", "LOST", pipeline="enterprise"),
            ev("c", T0 + 2 * DAY, "proposal", "RESTORED", pipeline="enterprise"),
        ],
        CONFIG,
    )
    assert [o.status for o in d.observations] == ["open", "lost", "open"]
    assert d.current_visit() == StageVisit("proposal", T0, None)
    assert d.is_open


def test_closed_at_is_the_start_of_the_final_closed_run() -> None:
    won = fold(
        [
            ev("a", T0, "contractsent"),
            ev("b", T0 + DAY, "closedwon"),
            ev("c", T0 + 2 * DAY, "closedwon", amount="1100"),  # amount fixed after close
        ],
        CONFIG,
    )
    assert won.status == "won" and won.closed_at == T0 + DAY
    # won, then corrected to lost: closed when marked lost
    corrected = apply(won, ev("d", T0 + 3 * DAY, "closedlost"), CONFIG)
    assert corrected is not None
    assert corrected.status == "lost" and corrected.closed_at == T0 + 3 * DAY
    # reopened after won: open again, no close time
    reopened = apply(won, ev("e", T0 + 4 * DAY, "contractsent", "RESTORED"), CONFIG)
    assert reopened is not None
    assert reopened.is_open and reopened.closed_at is None


def test_delete_and_restore() -> None:
    d = fold([ev("a", T0, "qualifiedtobuy"), ev("b", T0 + DAY, "qualifiedtobuy", "DELETED")], CONFIG)
    assert d.status == "deleted" and not d.is_open and d.closed_at is None
    r = apply(d, ev("c", T0 + 2 * DAY, "qualifiedtobuy", "RESTORED"), CONFIG)
    assert r is not None and r.status == "open"


def test_conflicting_payloads_under_one_identity_do_not_depend_on_order() -> None:
    # same (occurred_at, source:event_id), different content: the greater payload wins
    a = ev("x", T0 + DAY, "qualifiedtobuy", amount="100", owner_id="o1")
    b = ev("x", T0 + DAY, "qualifiedtobuy", amount="100", owner_id="o2")
    c = ev("x", T0 + DAY, "contractsent", amount="100", owner_id="o1")
    first = ev("f", T0, "appointmentscheduled")
    later = ev("z", T0 + 2 * DAY, "qualifiedtobuy")
    for events in ([first, a, b, c], [first, a, b, c, later]):
        results = {fold(p, CONFIG).to_bytes() for p in itertools.permutations(events)}
        assert len(results) == 1


def test_amounts_equal_as_values_are_one_amount() -> None:
    # Decimal("100") == Decimal("100.00"): equal events, so one deal and one byte string,
    # whichever spelling came first or alone (found by the property test)
    plain = ev("x", T0, "appointmentscheduled", amount="100")
    cents = ev("x", T0, "appointmentscheduled", amount="100.00")
    assert plain == cents
    orders = ([plain], [cents], [plain, cents], [cents, plain])
    results = {fold(events, CONFIG).to_bytes() for events in orders}
    assert len(results) == 1
    assert fold([plain], CONFIG).amount == Decimal("100.00")
    assert b"100.00" in results.pop()


def test_every_permutation_with_duplicates_gives_the_same_bytes() -> None:
    events = [
        ev("a", T0, "appointmentscheduled", "CREATED"),
        ev("b", T0 + DAY, "presentationscheduled", amount="1500", currency="EUR"),
        ev("c", T0 + 2 * DAY, "closedwon", "WON", amount="1500", currency="EUR", owner_id="o9"),
        ev("d", T0 + 3 * DAY, "closedwon", "DELETED"),
    ]
    expected = fold(events, CONFIG).to_bytes()
    for p in itertools.permutations([*events, events[1], events[3]]):
        assert fold(p, CONFIG).to_bytes() == expected


def test_bytes_round_trip_and_size() -> None:
    stages = CONFIG.pipelines["default"].open_stage_ids
    events = [
        ev(
            f"{1_000_000_000 + i}",
            T0 + i * DAY,
            stages[i % len(stages)],
            amount="12345.67",
            currency="EUR",
            owner_id="owner-123456",
            team="team-emea-1",
            region="emea",
            expected_close_date=date(2024, 6, 30),
            probability=0.35,
        )
        for i in range(8)
    ]
    d = fold(events, CONFIG)
    b = d.to_bytes()
    assert Deal.from_bytes(b) == d
    assert Deal.from_bytes(b).to_bytes() == b
    assert len(b) < 2048
    assert b[0] == 2  # format 2, binary


def test_from_bytes_rejects_unknown_version() -> None:
    with pytest.raises(ValueError, match="version"):
        Deal.from_bytes(b'{"v":99}')


def test_apply_refuses_another_deals_event() -> None:
    d = apply(None, ev("a", T0, "appointmentscheduled"), CONFIG)
    with pytest.raises(ValueError, match="d2"):
        apply(d, ev("b", T0, "appointmentscheduled", deal_id="d2"), CONFIG)


def test_fold_needs_an_event() -> None:
    with pytest.raises(ValueError):
        fold([], CONFIG)


# -- table bytes: format 2 (binary), format 1 (JSON) still read ------------------------

# A format-1 record as the deals table held it before format 2, written by hand: sorted
# keys, compact JSON, no stage/status/amount/currency (those of the newest observation).
FORMAT_1 = (
    b'{"deal_id":"d1","expected_close_date":"2024-06-30","obs":['
    b'[1709251200000,"hubspot:a","appointmentscheduled","open","1000.00","USD"],'
    b'[1709337600000,"hubspot:b","closedwon","won","1500.50","EUR"]],'
    b'"owner_id":"o-\\u00e9","pipeline":"default","probability":0.35,"region":"emea","v":1}'
)


def test_format_1_json_records_are_still_read() -> None:
    d = Deal.from_bytes(FORMAT_1)
    # the same deal folded from its two events
    expected = fold(
        [
            ev("a", T0, "appointmentscheduled", "CREATED"),
            ev(
                "b",
                T0 + DAY,
                "closedwon",
                "WON",
                amount="1500.50",
                currency="EUR",
                owner_id="o-é",
                region="emea",
                expected_close_date=date(2024, 6, 30),
                probability=0.35,
            ),
        ],
        CONFIG,
    )
    assert d == expected
    assert d.status == "won" and d.amount == Decimal("1500.50") and d.currency == "EUR"
    # written again it is format 2, and reads back to the same deal
    assert d.to_bytes()[0] == 2 and Deal.from_bytes(d.to_bytes()) == d
    assert len(d.to_bytes()) < len(FORMAT_1) * 2 // 3


def test_binary_bytes_are_deterministic_and_exact() -> None:
    # every optional part absent and present; amounts with their exact exponent; an
    # event key and a stage spelled alike (stored once); non-ASCII strings
    sparse = fold([ev("x", T0, "appointmentscheduled", amount="0")], CONFIG)
    full = fold(
        [
            ev("é€", T0, "appointmentscheduled", amount="9999999999999999.99", owner_id="ö"),
            ev("appointmentscheduled", T0, "closedlost", "LOST", source="appointmentscheduled"),
            ev("z", T0 + 1, "closedlost", "DELETED", team="t", region="r", probability=0.0),
        ],
        CONFIG,
    )
    for d in (sparse, full):
        b = d.to_bytes()
        assert b[0] == 2
        back = Deal.from_bytes(b)
        assert back == d and back.to_bytes() == b
        assert [str(o.amount) for o in back.observations] == [str(o.amount) for o in d.observations]
    assert sparse.to_bytes() == fold([ev("x", T0, "appointmentscheduled", amount="0.00")], CONFIG).to_bytes()
    assert Deal.from_bytes(full.to_bytes()).probability == 0.0


def test_a_deal_beyond_the_binary_fields_is_written_as_format_1() -> None:
    # occurred_at past int64: never from validated events, still not a lost record
    d = fold([ev("a", 2**64, "appointmentscheduled")], CONFIG)
    b = d.to_bytes()
    assert b.startswith(b"{") and Deal.from_bytes(b) == d


@pytest.mark.parametrize(
    "data",
    [b"", b"\x07", b'{"v":99}', b"\x02\x00", b"\x02" + bytes(20)],
)
def test_unknown_or_corrupt_bytes_are_value_errors(data: bytes) -> None:
    with pytest.raises(ValueError):
        Deal.from_bytes(data)
