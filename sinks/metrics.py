"""Prometheus metrics of one worker, in a private registry (client_python style).

Additive gauges (values, counts) cover only the partitions this worker owns, so the
Prometheus ``sum`` over all workers is the true total.  Ratio and average gauges cannot
be summed: they are exported by the worker that owns partition 0 of the deal topic (the
*publisher*), computed from the merged global partials; other workers leave them empty.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from streams.validation import REASONS

VERSION = "0.1.0"


class SalesopsMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.build_info = Info("salesops_build", "salesops version", registry=r)
        self.build_info.info({"version": VERSION})
        self.events = Counter(
            "salesops_events_total",
            "Input records handled, by topic and outcome",
            ["topic", "outcome"],
            registry=r,
        )
        self.dead_letters = Counter(
            "salesops_dead_letter_total",
            "Records sent to the dead-letter topic, by reason",
            ["reason"],
            registry=r,
        )
        self.late_events = Counter(
            "salesops_late_events_total", "Events older than the partition's watermark", ["topic"], registry=r
        )
        self.processing = Histogram(
            "salesops_event_processing_seconds",
            "Time to decode, validate and apply one input record",
            ["topic"],
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
            registry=r,
        )
        self.event_lag = Histogram(
            "salesops_event_to_view_seconds",
            "Kafka record timestamp to the view being updated (end-to-end latency)",
            buckets=(
                0.005,
                0.01,
                0.025,
                0.05,
                0.1,
                0.15,
                0.2,
                0.3,
                0.4,
                0.5,
                0.75,
                1,
                2.5,
                5,
                10,
                30,
                60,
                300,
            ),
            registry=r,
        )
        self.sink_errors = Counter(
            "salesops_sink_errors_total", "Failed sink flushes (retried), by sink", ["sink"], registry=r
        )
        self.sink_flushes = Counter(
            "salesops_sink_flushes_total", "Successful sink flushes, by sink", ["sink"], registry=r
        )
        # Kafka connection (a probe's metadata request on a fresh connection, once a second)
        self.broker_up = Gauge(
            "salesops_broker_up", "1 when the Kafka bootstrap servers answer a metadata request", registry=r
        )
        self.broker_disconnects = Counter(
            "salesops_broker_disconnects_total", "Times the Kafka broker became unreachable", registry=r
        )
        self.client_log_suppressed = Counter(
            "salesops_client_log_suppressed_total",
            "Kafka client log lines held back (repeats, or written during a broker outage)",
            registry=r,
        )
        # Deal pipeline (additive over this worker's partitions)
        self.pipeline_value = Gauge(
            "salesops_pipeline_value",
            "Open pipeline value in the reporting currency",
            ["pipeline", "stage", "currency"],
            registry=r,
        )
        self.pipeline_weighted_value = Gauge(
            "salesops_pipeline_weighted_value",
            "Open pipeline value x stage probability, in the reporting currency",
            ["pipeline", "stage", "currency"],
            registry=r,
        )
        self.pipeline_deals = Gauge(
            "salesops_pipeline_deals", "Open deals", ["pipeline", "stage"], registry=r
        )
        self.stalled_deals = Gauge(
            "salesops_stalled_deals",
            "Open deals past their stage's stalled threshold",
            ["pipeline", "stage"],
            registry=r,
        )
        # Global ratios (publisher only)
        self.stage_conversion = Gauge(
            "salesops_stage_conversion_ratio",
            "Window-based stage conversion: exits to a later stage / all exits",
            ["pipeline", "from_stage", "window"],
            registry=r,
        )
        self.stage_cohort_conversion = Gauge(
            "salesops_stage_cohort_conversion_ratio",
            "Cohort stage conversion: entered in window and later reached a later stage / entered",
            ["pipeline", "from_stage", "window"],
            registry=r,
        )
        self.win_rate = Gauge(
            "salesops_win_rate_ratio",
            "won / (won + lost) in the window",
            ["pipeline", "window", "basis"],
            registry=r,
        )
        self.closed_deals = Gauge(
            "salesops_closed_deals",
            "Deals closed in the window",
            ["pipeline", "window", "outcome"],
            registry=r,
        )
        self.average_deal_size = Gauge(
            "salesops_average_deal_size",
            "Won value / won count in the window",
            ["pipeline", "window", "currency"],
            registry=r,
        )
        self.sales_cycle = Gauge(
            "salesops_sales_cycle_seconds",
            "Average creation-to-won time in the window",
            ["pipeline", "window"],
            registry=r,
        )
        self.sales_velocity = Gauge(
            "salesops_sales_velocity_per_day",
            "Open deals x average deal size x win rate / average cycle days",
            ["pipeline", "window", "currency"],
            registry=r,
        )
        self.stage_age = Gauge(
            "salesops_stage_age_seconds",
            "Time open deals have spent in their current stage (quantile 0.5, 0.9, 1)",
            ["pipeline", "stage", "quantile"],
            registry=r,
        )
        # Alerts
        self.alerts = Counter(
            "salesops_alerts_total", "Alert transitions emitted", ["kind", "status"], registry=r
        )
        self.alert_deliveries = Counter(
            "salesops_alert_deliveries_total", "Webhook delivery outcomes", ["outcome"], registry=r
        )
        # People pulse (publisher only; suppressed groups have no score series)
        self.enps = Gauge("salesops_enps", "eNPS (-100..100)", ["group", "window"], registry=r)
        self.enps_responses = Gauge(
            "salesops_enps_responses", "Responses counted in the eNPS window", ["group", "window"], registry=r
        )
        self.enps_drop = Gauge(
            "salesops_enps_drop_points", "Previous 30-day eNPS minus last 30-day eNPS", ["group"], registry=r
        )

    def prime(self, topics: Iterable[str]) -> None:
        """Create label sets up front so dashboards never see gaps."""
        for t in topics:
            for outcome in ("ok", "dead_letter"):
                self.events.labels(t, outcome)
        for reason in REASONS:
            self.dead_letters.labels(reason)


def set_gauge_family(gauge: Gauge, values: dict[tuple[str, ...], float]) -> None:
    """Replace every series of ``gauge`` with ``values``: series that disappeared (a
    partition given up in a rebalance, a stage emptied) are removed, not left stale."""
    current = {tuple(labels) for labels in _label_sets(gauge)}
    for labels in current - set(values):
        gauge.remove(*labels)
    for labels, value in values.items():
        gauge.labels(*labels).set(value)


def _label_sets(gauge: Gauge) -> list[tuple[str, ...]]:
    # client_python keeps a gauge's children keyed by their label-value tuple
    return [tuple(labels) for labels in gauge._metrics]
