"""Metric families in a private registry (client_python style)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from sinks.metrics import SalesopsMetrics, set_gauge_family


def test_set_gauge_family_replaces_series_and_drops_vanished_ones() -> None:
    m = SalesopsMetrics(CollectorRegistry())
    set_gauge_family(m.pipeline_deals, {("default", "a"): 3, ("default", "b"): 1})
    set_gauge_family(m.pipeline_deals, {("default", "b"): 2})  # "a" emptied, or its partition moved away
    r = m.registry
    assert r.get_sample_value("salesops_pipeline_deals", {"pipeline": "default", "stage": "b"}) == 2
    assert r.get_sample_value("salesops_pipeline_deals", {"pipeline": "default", "stage": "a"}) is None


def test_label_sets_are_primed_so_dashboards_see_zeros() -> None:
    m = SalesopsMetrics(CollectorRegistry())
    m.prime(["crm.deal-events"])
    r = m.registry
    assert r.get_sample_value("salesops_events_total", {"topic": "crm.deal-events", "outcome": "ok"}) == 0
    assert r.get_sample_value("salesops_dead_letter_total", {"reason": "negative_amount"}) == 0
    assert r.get_sample_value("salesops_build_info", {"version": "0.1.0"}) == 1


def test_names_follow_prometheus_conventions() -> None:
    m = SalesopsMetrics(CollectorRegistry())
    names = {s.name for family in m.registry.collect() for s in family.samples}
    counters = {f.name for f in m.registry.collect() if f.type == "counter"}
    assert all(n.startswith("salesops_") for n in names)
    assert all(n.endswith(("_total", "_created")) for n in names if any(n.startswith(c) for c in counters))
