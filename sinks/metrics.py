"""Prometheus metrics of one worker, in a private registry (client_python style).

Additive gauges (values, counts) cover only the partitions this worker owns, so the
Prometheus ``sum`` over all workers is the true total.  Ratio and average gauges cannot
be summed: they are exported by the worker that owns partition 0 of the deal topic (the
*publisher*), computed from the merged global partials; other workers leave them empty.

Hygiene (``promtool check metrics`` is clean on a live worker):

* every counter has its known label sets created at 0 (:meth:`SalesopsMetrics.prime`),
  so "nothing happened" and "not exported" look different and ``increase()`` sees the
  first event;
* no ``*_created`` series (:func:`disable_created_series`, process-wide in client_python);
* no gauge carries a ``quantile`` label, which Prometheus reserves for summaries: stage
  ages use ``statistic="median|p90|max"``;
* label values are bounded: pipelines and stages (configuration), eNPS groups (org,
  departments, teams), windows, and owner/team/region members capped at
  :data:`MAX_DIMENSION_MEMBERS` each (the rest summed into ``member="(other)"``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client import metrics as _client_metrics

from streams.validation import REASONS

VERSION = "0.1.0"

# Known label values, created at 0 at start
EVENT_OUTCOMES = ("ok", "dead_letter")
#: rejection reasons of validation, plus the worker's own (streams/deal_step.py)
DEAD_LETTER_REASONS = tuple(dict.fromkeys((*REASONS, "deal_history_full")))
#: salesops_sink_errors_total{sink}: every publication path that can fail and is retried
ERROR_SINKS = ("changelog", "partials", "aggregate-topics", "redis")
#: salesops_sink_flushes_total{sink}: the sinks whose successful flushes are counted
FLUSH_SINKS = ("aggregate-topics", "redis")
ALERT_KINDS = ("STALLED_DEAL", "ENPS_DROP")
ALERT_STATUSES = ("FIRING", "RESOLVED")
DELIVERY_OUTCOMES = ("delivered", "already_delivered", "failed")
#: salesops_stage_age_seconds{statistic}: the aging row field each statistic comes from
STAGE_AGE_STATISTICS = {"median": "median_days", "p90": "p90_days", "max": "max_days"}
#: at most this many members per dimension (owner, team, region) get their own series
MAX_DIMENSION_MEMBERS = 50
OTHER_MEMBER = "(other)"


def disable_created_series() -> None:
    """Drop the ``*_created`` samples client_python adds to counters and histograms (46 of
    401 series on a live worker, and noise for ``promtool``).  The switch is a module
    global of client_python, read when a registry is collected, so it applies to private
    registries too; calling it again is harmless."""
    _client_metrics.disable_created_metrics()


class SalesopsMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        disable_created_series()
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
        self.input_rewinds = Counter(
            "salesops_input_rewinds_total",
            "Seeks back to input records the Kafka client skipped (they are fetched again)",
            ["topic"],
            registry=r,
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
        # Consumer group position of this worker's assigned input partitions (agents/lag.py)
        self.consumer_lag = Gauge(
            "salesops_consumer_lag_records",
            "Records in an assigned input partition after the group's committed offset",
            ["topic", "partition"],
            registry=r,
        )
        self.consumer_committed = Gauge(
            "salesops_consumer_committed_offset",
            "Offset the group resumes from in an assigned input partition: its commit, else the earliest",
            ["topic", "partition"],
            registry=r,
        )
        self.assigned_partitions = Gauge(
            "salesops_assigned_partitions",
            "Input partitions assigned to this worker, by topic",
            ["topic"],
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
            "Open deals past their stage's stalled threshold (0 for stages with open deals)",
            ["pipeline", "stage"],
            registry=r,
        )
        # Global figures (publisher only)
        self.dimension_value = Gauge(
            "salesops_dimension_pipeline_value",
            "Open pipeline value by owner, team or region (top members, the rest as (other))",
            ["dimension", "member", "currency"],
            registry=r,
        )
        self.dimension_weighted_value = Gauge(
            "salesops_dimension_pipeline_weighted_value",
            "Weighted open pipeline value by owner, team or region",
            ["dimension", "member", "currency"],
            registry=r,
        )
        self.dimension_deals = Gauge(
            "salesops_dimension_pipeline_deals",
            "Open deals by owner, team or region",
            ["dimension", "member"],
            registry=r,
        )
        self.movement = Gauge(
            "salesops_pipeline_movement_value",
            "Open pipeline movement in the period: start, new, reopened, increased, decreased, "
            "won, lost, deleted, end",
            ["pipeline", "window", "change", "currency"],
            registry=r,
        )
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
            "Time open deals have spent in their current stage: statistic median, p90 or max",
            ["pipeline", "stage", "statistic"],
            registry=r,
        )
        # Alerts
        self.alerts = Counter(
            "salesops_alerts_total", "Alert transitions emitted", ["kind", "status"], registry=r
        )
        self.alert_deliveries = Counter(
            "salesops_alert_deliveries_total", "Webhook delivery outcomes", ["outcome"], registry=r
        )
        # People pulse (publisher only)
        self.enps = Gauge(
            "salesops_enps", "eNPS (-100..100) of visible groups", ["group", "window"], registry=r
        )
        self.enps_margin = Gauge(
            "salesops_enps_margin_of_error_points",
            "95% margin of error of salesops_enps, in eNPS points",
            ["group", "window"],
            registry=r,
        )
        self.enps_responses = Gauge(
            "salesops_enps_responses",
            "eNPS answers in the window, of visible and suppressed groups",
            ["group", "window"],
            registry=r,
        )
        self.enps_suppressed = Gauge(
            "salesops_enps_suppressed",
            "1 when the group's score is hidden (anonymity threshold or differencing rule)",
            ["group", "window"],
            registry=r,
        )
        self.enps_drop = Gauge(
            "salesops_enps_drop_points", "Previous 30-day eNPS minus last 30-day eNPS", ["group"], registry=r
        )
        self.enps_drop_margin = Gauge(
            "salesops_enps_drop_margin_points",
            "95% margin of error of salesops_enps_drop_points (both windows' margins combined)",
            ["group"],
            registry=r,
        )
        self.enps_drop_threshold = Gauge(
            "salesops_enps_drop_threshold_points",
            "SALESOPS_ENPS_DROP_POINTS: a drop above it (and its margin) is alerted",
            registry=r,
        )

        # Forecast, quotas and commission (publisher only; agents/targets.py)
        self.forecast_value = Gauge(
            "salesops_forecast_value",
            "Closed-won value forecast for the period: method weighted, expected, monte_carlo_p10, "
            "monte_carlo_p50, monte_carlo_p90 or monte_carlo_mean",
            ["dimension", "member", "period", "method", "currency"],
            registry=r,
        )
        self.forecast_component = Gauge(
            "salesops_forecast_expected_value",
            "Expected method by component: open deals, already won, new deals",
            ["dimension", "member", "period", "component", "currency"],
            registry=r,
        )
        self.forecast_run = Gauge(
            "salesops_forecast_run_seconds",
            "Duration of the last forecast, attainment and commission computation",
            registry=r,
        )
        self.quota = Gauge(
            "salesops_quota_value",
            "Quota of an owner, team or territory for a period (quotas file)",
            ["scope", "member", "period", "currency"],
            registry=r,
        )
        self.quota_gap = Gauge(
            "salesops_quota_gap_value",
            "Quota still to win: max(quota - won, 0)",
            ["scope", "member", "period", "currency"],
            registry=r,
        )
        self.quota_attainment = Gauge(
            "salesops_quota_attainment_ratio",
            "Won value in the period / quota",
            ["scope", "member", "period"],
            registry=r,
        )
        self.quota_forecast_attainment = Gauge(
            "salesops_quota_forecast_attainment_ratio",
            "Monte Carlo P50 of the period's closed-won value / quota (periods that contain today)",
            ["scope", "member", "period"],
            registry=r,
        )
        self.pipeline_coverage = Gauge(
            "salesops_pipeline_coverage_ratio",
            "Open value due in the period / quota still to win (absent once the quota is reached)",
            ["scope", "member", "period"],
            registry=r,
        )
        self.territory_spread = Gauge(
            "salesops_territory_pipeline_spread",
            "How unevenly a territory's open pipeline is spread over its reps: statistic cv, "
            "max_share or min_share",
            ["territory", "statistic"],
            registry=r,
        )
        self.commission_earned = Gauge(
            "salesops_commission_earned",
            "Commission earned to date in the period (the statement's lines)",
            ["owner", "period", "currency"],
            registry=r,
        )
        self.commission_projected = Gauge(
            "salesops_commission_projected",
            "Commission of the period at the P50 forecast (at the credited value once it ended)",
            ["owner", "period", "currency"],
            registry=r,
        )
        self.commission_adjustments = Gauge(
            "salesops_commission_adjustments",
            "Adjustment lines on the owner's statement of the period",
            ["owner", "period"],
            registry=r,
        )

    def prime(self, topics: Iterable[str], sinks: Iterable[str] = ERROR_SINKS) -> None:
        """Create every counter's known label sets at 0 so that dashboards never see gaps
        and ``increase()`` counts the first event.  ``topics``: the input topics (the
        first one is the deal topic: late events and processing times are per deal
        event); ``sinks``: the sinks this worker writes (leave out ``redis`` when it is
        off).  Webhook outcomes are created too: they stay 0 without a webhook."""
        topics = list(topics)
        sinks = list(sinks)
        for t in topics:
            self.input_rewinds.labels(t)
            for outcome in EVENT_OUTCOMES:
                self.events.labels(t, outcome)
            self.assigned_partitions.labels(t).set(0)
        if topics:
            self.late_events.labels(topics[0])
            self.processing.labels(topics[0])
        for reason in DEAD_LETTER_REASONS:
            self.dead_letters.labels(reason)
        for sink in sinks:
            self.sink_errors.labels(sink)
            if sink in FLUSH_SINKS:
                self.sink_flushes.labels(sink)
        for kind in ALERT_KINDS:
            for status in ALERT_STATUSES:
                self.alerts.labels(kind, status)
        for outcome in DELIVERY_OUTCOMES:
            self.alert_deliveries.labels(outcome)


def observe_repeated(histogram: Any, amount: float, times: int) -> None:
    """Record what ``times`` calls of ``histogram.observe(amount)`` record (the sum, the
    count and the one bucket ``amount`` falls in), in one step.

    A batch gives each of its events the same processing time (the batch's time over its
    size); observing it once per event was one of the worker's per-event costs.  This
    reads client_python's histogram internals (``_sum``, ``_upper_bounds``, ``_buckets``,
    as its ``observe`` does); a unit test compares it with repeated ``observe`` calls."""
    if times <= 0:
        return
    histogram._raise_if_not_observable()
    histogram._sum.inc(amount * times)
    for i, bound in enumerate(histogram._upper_bounds):
        if amount <= bound:
            histogram._buckets[i].inc(times)
            break


def set_gauge_family(gauge: Gauge, values: Mapping[tuple[str, ...], float]) -> None:
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


def dimension_members(rows: Iterable[Mapping[str, Any]], dim: str, field: str) -> dict[str, float]:
    """``field`` summed per member of ``dim`` (``owner``, ``team`` or ``region``), bounded:
    the :data:`MAX_DIMENSION_MEMBERS` members with the largest open value (ties by name)
    keep their own series, every other member is summed into :data:`OTHER_MEMBER`.

    The choice depends on the open value only, so the value, weighted value and deal
    series of a member appear and disappear together."""
    rows = list(rows)
    ranked = sorted(rows, key=lambda r: (-r["value_cents"], str(r[dim])))
    kept = {str(r[dim]) for r in ranked[:MAX_DIMENSION_MEMBERS]}
    out: dict[str, float] = {}
    for r in rows:
        member = str(r[dim]) if str(r[dim]) in kept else OTHER_MEMBER
        out[member] = out.get(member, 0.0) + r[field]
    return out
