"""Metric families in a private registry (client_python style): hygiene (primed counters,
no ``_created``, no ``quantile`` on gauges), the bounded dimension series, the global
gauges the publisher sets, and the consumer-lag gauges of agents/lag.py."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP
from prometheus_client import CollectorRegistry, generate_latest

from agents.lag import LagMonitor, partition_lag
from agents.outputs import GlobalFigures, set_global_gauges
from sinks.metrics import (
    DEAD_LETTER_REASONS,
    MAX_DIMENSION_MEMBERS,
    OTHER_MEMBER,
    SalesopsMetrics,
    dimension_members,
    observe_repeated,
    set_gauge_family,
)
from streams.pipelines import load_rates


def test_set_gauge_family_replaces_series_and_drops_vanished_ones() -> None:
    m = SalesopsMetrics(CollectorRegistry())
    set_gauge_family(m.pipeline_deals, {("default", "a"): 3, ("default", "b"): 1})
    set_gauge_family(m.pipeline_deals, {("default", "b"): 2})  # "a" emptied, or its partition moved away
    r = m.registry
    assert r.get_sample_value("salesops_pipeline_deals", {"pipeline": "default", "stage": "b"}) == 2
    assert r.get_sample_value("salesops_pipeline_deals", {"pipeline": "default", "stage": "a"}) is None


def test_label_sets_are_primed_so_dashboards_see_zeros() -> None:
    m = SalesopsMetrics(CollectorRegistry())
    m.prime(["crm.deal-events", "hr.survey-responses"])
    r = m.registry
    assert r.get_sample_value("salesops_events_total", {"topic": "crm.deal-events", "outcome": "ok"}) == 0
    assert r.get_sample_value("salesops_dead_letter_total", {"reason": "negative_amount"}) == 0
    assert r.get_sample_value("salesops_dead_letter_total", {"reason": "deal_history_full"}) == 0
    assert r.get_sample_value("salesops_build_info", {"version": "0.1.0"}) == 1
    for sink in ("changelog", "partials", "aggregate-topics", "redis"):
        assert r.get_sample_value("salesops_sink_errors_total", {"sink": sink}) == 0, sink
    for sink in ("aggregate-topics", "redis"):
        assert r.get_sample_value("salesops_sink_flushes_total", {"sink": sink}) == 0, sink
    for outcome in ("delivered", "already_delivered", "failed"):
        assert r.get_sample_value("salesops_alert_deliveries_total", {"outcome": outcome}) == 0
    for kind in ("STALLED_DEAL", "ENPS_DROP"):
        for status in ("FIRING", "RESOLVED"):
            assert r.get_sample_value("salesops_alerts_total", {"kind": kind, "status": status}) == 0
    assert r.get_sample_value("salesops_late_events_total", {"topic": "crm.deal-events"}) == 0
    assert r.get_sample_value("salesops_assigned_partitions", {"topic": "hr.survey-responses"}) == 0
    assert r.get_sample_value("salesops_event_processing_seconds_count", {"topic": "crm.deal-events"}) == 0


def test_every_counter_family_has_a_series_after_priming() -> None:
    m = SalesopsMetrics(CollectorRegistry())
    m.prime(["crm.deal-events"])
    empty = [f.name for f in m.registry.collect() if f.type in ("counter", "histogram") and not f.samples]
    assert empty == []
    assert len(DEAD_LETTER_REASONS) == len(set(DEAD_LETTER_REASONS))


def test_prime_leaves_out_sinks_the_worker_does_not_have() -> None:
    m = SalesopsMetrics(CollectorRegistry())
    m.prime(["crm.deal-events"], sinks=["changelog", "partials", "aggregate-topics"])
    r = m.registry
    assert r.get_sample_value("salesops_sink_errors_total", {"sink": "redis"}) is None
    assert r.get_sample_value("salesops_sink_flushes_total", {"sink": "redis"}) is None
    assert r.get_sample_value("salesops_sink_errors_total", {"sink": "partials"}) == 0


def test_no_created_series_and_no_quantile_label_on_a_gauge() -> None:
    m = SalesopsMetrics(CollectorRegistry())
    m.prime(["crm.deal-events"])
    m.events.labels("crm.deal-events", "ok").inc()
    m.processing.labels("crm.deal-events").observe(0.001)
    m.stage_age.labels("default", "proposal", "median").set(60)
    text = generate_latest(m.registry).decode()
    assert "_created" not in text
    for family in m.registry.collect():
        if family.type != "summary":
            assert all("quantile" not in s.labels for s in family.samples), family.name


def test_names_follow_prometheus_conventions() -> None:
    m = SalesopsMetrics(CollectorRegistry())
    m.prime(["crm.deal-events"])
    families = list(m.registry.collect())
    assert all(f.name.startswith("salesops_") for f in families)
    for f in families:
        if f.type == "counter":
            assert all(s.name.endswith("_total") for s in f.samples), f.name
        if f.name.endswith("_ratio"):
            assert f.type == "gauge"


def test_dimension_members_keep_the_largest_and_sum_the_rest() -> None:
    # 52 owners: u-00 .. u-51 with open value (100 + i) cents and 1 deal each.
    # The 50 largest are u-02 .. u-51; u-00 and u-01 go to "(other)": 100 + 101 = 201 cents, 2 deals.
    rows = [{"owner": f"u-{i:02d}", "value_cents": 100 + i, "deals": 1} for i in range(52)]
    values = dimension_members(rows, "owner", "value_cents")
    deals = dimension_members(rows, "owner", "deals")
    assert len(values) == MAX_DIMENSION_MEMBERS + 1
    assert values[OTHER_MEMBER] == 201 and deals[OTHER_MEMBER] == 2
    assert values["u-51"] == 151 and "u-00" not in values
    assert sum(values.values()) == sum(100 + i for i in range(52))
    # ties on value are settled by name: a and b equal, the bound keeps the first by name
    few = [{"team": t, "value_cents": 5, "deals": 1} for t in ("b", "a")]
    assert dimension_members(few, "team", "deals") == {"a": 1, "b": 1}


def test_global_gauges_stage_age_statistic_enps_windows_suppressed_groups_and_movement() -> None:
    m = SalesopsMetrics(CollectorRegistry())
    figures = GlobalFigures(
        aging=[
            {"pipeline": "default", "stage": "proposal", "median_days": 1.0, "p90_days": 2.0, "max_days": 3.5}
        ],
        enps={
            "30d": [
                {"group": "org", "responses": 12, "suppressed": False, "enps": 25.0, "margin_of_error": 40.0},
                {"group": "team:tiny", "responses": 3, "suppressed": True},
            ]
        },
        pipeline={
            "by_owner": [{"owner": "u-1", "value_cents": 12345, "weighted_cents": 6172, "deals": 2}],
            "by_team": [],
            "by_region": [{"region": "emea", "value_cents": 100, "weighted_cents": 50, "deals": 1}],
        },
        movement={
            "2024-03": [
                {
                    "pipeline": "default",
                    **{f"{c}_cents": 0 for c in ("reopened", "increased", "decreased", "lost", "deleted")},
                    # start 100.00 + new 50.00 - won 30.00 = end 120.00
                    "start_cents": 10000,
                    "new_cents": 5000,
                    "won_cents": 3000,
                    "end_cents": 12000,
                }
            ]
        },
    )
    set_global_gauges(m, figures, load_rates().reporting_currency)
    r = m.registry

    def value(name: str, **labels: str) -> Any:
        return r.get_sample_value(name, labels)

    # ages in seconds: 1 day = 86400 s; max 3.5 days = 302400 s
    assert (
        value("salesops_stage_age_seconds", pipeline="default", stage="proposal", statistic="median") == 86400
    )
    assert (
        value("salesops_stage_age_seconds", pipeline="default", stage="proposal", statistic="p90") == 172800
    )
    assert (
        value("salesops_stage_age_seconds", pipeline="default", stage="proposal", statistic="max") == 302400
    )
    # eNPS windows are labelled like the funnel's (last-30d); a hidden group has its count only
    assert value("salesops_enps", group="org", window="last-30d") == 25.0
    assert value("salesops_enps_margin_of_error_points", group="org", window="last-30d") == 40.0
    assert value("salesops_enps_suppressed", group="org", window="last-30d") == 0
    assert value("salesops_enps", group="team:tiny", window="last-30d") is None
    assert value("salesops_enps_responses", group="team:tiny", window="last-30d") == 3
    assert value("salesops_enps_suppressed", group="team:tiny", window="last-30d") == 1
    # money in reporting units (USD in the default rates file)
    assert (
        value("salesops_dimension_pipeline_value", dimension="owner", member="u-1", currency="USD") == 123.45
    )
    assert (
        value("salesops_dimension_pipeline_weighted_value", dimension="owner", member="u-1", currency="USD")
        == 61.72
    )
    assert value("salesops_dimension_pipeline_deals", dimension="region", member="emea") == 1
    move = {
        c: value(
            "salesops_pipeline_movement_value", pipeline="default", window="2024-03", change=c, currency="USD"
        )
        for c in ("start", "new", "won", "lost", "end")
    }
    assert move == {"start": 100.0, "new": 50.0, "won": 30.0, "lost": 0.0, "end": 120.0}
    # a group that became visible drops its suppressed flag; vanished series are removed
    figures.enps = {
        "30d": [{"group": "org", "responses": 13, "suppressed": False, "enps": 20.0, "margin_of_error": 38}]
    }
    figures.movement = {}
    set_global_gauges(m, figures, load_rates().reporting_currency)
    assert value("salesops_enps_responses", group="team:tiny", window="last-30d") is None
    assert (
        value(
            "salesops_pipeline_movement_value",
            pipeline="default",
            window="2024-03",
            change="end",
            currency="USD",
        )
        is None
    )


# ------------------------------------------------------------------------- consumer lag


def test_partition_lag_is_end_minus_commit_never_negative() -> None:
    assert partition_lag(120, 100, None) == 20
    assert partition_lag(100, 100, 0) == 0
    assert partition_lag(100, 105, 0) == 0  # the commit overtook the end offset we read
    assert partition_lag(50, None, 10) == 40  # nothing committed yet: from the earliest offset
    assert partition_lag(None, 10, 0) is None


class FakeConsumer:
    def __init__(self) -> None:
        self.ends: dict[Any, int] = {}
        self.starts: dict[Any, int] = {}
        self._committed_offset: dict[Any, int | None] = {}
        self.fail = False

    async def highwaters(self, *tps: Any) -> dict[Any, int]:
        if self.fail:
            raise RuntimeError("consumer not started")
        return {tp: self.ends[tp] for tp in tps}

    async def earliest_offsets(self, *tps: Any) -> dict[Any, int]:
        return {tp: self.starts.get(tp, 0) for tp in tps}


def _tp(topic: str, partition: int) -> Any:
    return TP(topic, partition)


def test_lag_monitor_sets_lag_offsets_and_counts_and_forgets_revoked_partitions() -> None:
    m = SalesopsMetrics(CollectorRegistry())
    consumer = FakeConsumer()
    deals0, deals1, responses2 = _tp("deals", 0), _tp("deals", 1), _tp("responses", 2)
    assigned = {deals0, deals1, responses2, _tp("salesops-deals-changelog", 0)}
    app = SimpleNamespace(consumer=consumer, assignor=SimpleNamespace(assigned_actives=lambda: assigned))
    monitor = LagMonitor(app, m, ["deals", "responses", "invitations"])  # type: ignore[arg-type]
    # deals/0: end 120, committed 100 -> 20; deals/1: end 7, nothing committed, earliest 2 -> 5
    # responses/2: end 30, committed 30 -> 0; the changelog partition is not an input
    consumer.ends = {deals0: 120, deals1: 7, responses2: 30}
    consumer.starts = {deals1: 2}
    consumer._committed_offset = {deals0: 100, responses2: 30}
    asyncio.run(monitor.collect())
    r = m.registry

    def lag(topic: str, p: int) -> float | None:
        return r.get_sample_value("salesops_consumer_lag_records", {"topic": topic, "partition": str(p)})

    assert (lag("deals", 0), lag("deals", 1), lag("responses", 2)) == (20, 5, 0)
    assert (
        r.get_sample_value("salesops_consumer_committed_offset", {"topic": "deals", "partition": "0"}) == 100
    )
    assert (
        # before a first commit the group resumes from the earliest offset
        r.get_sample_value("salesops_consumer_committed_offset", {"topic": "deals", "partition": "1"}) == 2
    )
    counts = {t: r.get_sample_value("salesops_assigned_partitions", {"topic": t}) for t in monitor.topics}
    assert counts == {"deals": 2, "responses": 1, "invitations": 0}
    assert lag("salesops-deals-changelog", 0) is None
    # a rebalance takes deals/0 away: its series go at once ...
    monitor.forget([deals0])
    assert lag("deals", 0) is None and lag("deals", 1) == 5
    # ... and stay gone at the next refresh, which reads the new assignment
    assigned.discard(deals0)
    asyncio.run(monitor.collect())
    assert lag("deals", 0) is None
    assert r.get_sample_value("salesops_assigned_partitions", {"topic": "deals"}) == 1
    # the broker cannot be asked: the counts follow the assignment, the last lag of a
    # partition still assigned stays, that of a partition given up goes
    consumer.fail = True
    assigned.discard(responses2)
    asyncio.run(monitor.collect())
    assert r.get_sample_value("salesops_assigned_partitions", {"topic": "responses"}) == 0
    assert lag("deals", 1) == 5 and lag("responses", 2) is None


@pytest.mark.parametrize("amount", [0.0, 0.0001, 0.0003, 0.02, 0.5, 0.51, 7.0])
@pytest.mark.parametrize("times", [0, 1, 3, 250])
def test_observe_repeated_records_what_repeated_observe_calls_record(amount: float, times: int) -> None:
    def histogram() -> Any:
        return SalesopsMetrics(CollectorRegistry()).processing.labels("deals")

    once, each = histogram(), histogram()
    observe_repeated(once, amount, times)
    for _ in range(times):
        each.observe(amount)
    got = {s.name + str(s.labels): s.value for s in once._child_samples()} | {
        str(b): v.get() for b, v in zip(once._upper_bounds, once._buckets, strict=True)
    }
    want = {s.name + str(s.labels): s.value for s in each._child_samples()} | {
        str(b): v.get() for b, v in zip(each._upper_bounds, each._buckets, strict=True)
    }
    assert got == pytest.approx(want)
    # by hand: the count is ``times`` and the sum ``amount * times``
    assert once._sum.get() == pytest.approx(amount * times)
    assert sum(v.get() for v in once._buckets) == times
