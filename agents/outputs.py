"""From merged partials to the outputs: gauges, aggregate topics, Redis.

The outputs are a function of a :class:`Snapshot` (the merged deal and pulse partials,
the configuration and ``now``): :func:`global_records` returns every aggregate row by view
and the figures the ratio gauges are set from, one mapper per view (``*_records``), with
no worker, broker or clock behind it.  :class:`Publisher` then drives its sinks (the
aggregate topics, Redis, or none) all the same way (``sinks.base``): add each view's rows,
flush, count a failure and retry it at the next publication.

Row keys are shared by the aggregate topics and the Redis hashes, so a consumer can
cross-check them:

* pipeline:    ``stage:<pipeline>:<stage>``, ``owner:<id>``, ``team:<team>``, ``region:<region>``
* funnel:      ``<period>:<pipeline>`` for each trailing window, the current month and quarter
* stage-aging: ``<pipeline>:<stage>``
* movement:    ``<period>:<pipeline>`` for the current month and quarter
* enps:        ``<window>:<group>``
* pulse:       ``<survey_id>:<question_id>:<group>``
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from schemas.codec import Codec
from sinks.base import Sink, SinkError, ViewRows
from sinks.metrics import STAGE_AGE_STATISTICS, SalesopsMetrics, dimension_members, set_gauge_family
from streams import pulse
from streams.clock import NO_WATERMARK_MS
from streams.periods import current_month, current_quarter, trailing_period
from streams.pipeline_views import aging, funnel, merge_partials, money, movement, pipeline_rows
from streams.pipelines import PipelineConfig

log = logging.getLogger(__name__)
VIEWS = ("pipeline", "funnel", "stage-aging", "movement", "enps", "pulse")
# view -> its Avro record (schemas/); one aggregate topic per view
VIEW_RECORDS = {
    "pipeline": "PipelineAggregate",
    "funnel": "FunnelAggregate",
    "stage-aging": "StageAgingAggregate",
    "movement": "MovementAggregate",
    "enps": "EnpsAggregate",
    "pulse": "PulseAggregate",
    # computed by agents/targets.py, published with the others
    "forecast": "ForecastAggregate",
    "attainment": "AttainmentAggregate",
    "commission": "CommissionAggregate",
}


def _money(cents: int) -> Decimal:
    """Exact Decimal of integer cents, whatever its size (``Decimal(str)`` never rounds,
    arithmetic on Decimals would round to the context's 28 digits)."""
    return Decimal(money(cents))


def _units(cents: int | None) -> float | None:
    """Cents as a float of reporting units, for gauges and the Avro doubles (averages)."""
    return None if cents is None else cents / 100


def pipeline_records(rows: dict[str, list[dict[str, Any]]], currency: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for row in rows["by_stage"]:
        out[f"stage:{row['pipeline']}:{row['stage']}"] = {
            "dimension": "stage",
            "pipeline": row["pipeline"],
            "value_of": row["stage"],
            "deals": row["deals"],
            "value": _money(row["value_cents"]),
            "weighted_value": _money(row["weighted_cents"]),
            "currency": currency,
        }
    for dim in ("owner", "team", "region"):
        for row in rows[f"by_{dim}"]:
            out[f"{dim}:{row[dim]}"] = {
                "dimension": dim,
                "pipeline": None,
                "value_of": str(row[dim]),
                "deals": row["deals"],
                "value": _money(row["value_cents"]),
                "weighted_value": _money(row["weighted_cents"]),
                "currency": currency,
            }
    return out


def funnel_records(result: dict[str, Any], currency: str) -> dict[str, dict[str, Any]]:
    out = {}
    for p in result["pipelines"]:
        out[f"{result['period']}:{p['pipeline']}"] = {
            "period": result["period"],
            "pipeline": p["pipeline"],
            "stages": [
                {
                    k: s[k]
                    for k in (
                        "stage",
                        "entered",
                        "exited",
                        "advanced",
                        "regressed",
                        "cohort_entered",
                        "cohort_advanced",
                        "window_conversion",
                        "cohort_conversion",
                    )
                }
                for s in p["stages"]
            ],
            "won_count": p["won_count"],
            "won_value": _money(p["won_cents"]),
            "lost_count": p["lost_count"],
            "lost_value": _money(p["lost_cents"]),
            "win_rate_count": p["win_rate_count"],
            "win_rate_value": p["win_rate_value"],
            "avg_deal_size": _units(p["avg_deal_size_cents"]),
            "avg_cycle_days": p["avg_cycle_days"],
            "open_deals": p["open_deals"],
            "sales_velocity_per_day": p["sales_velocity_per_day"],
            "currency": currency,
        }
    return out


MOVEMENT_CHANGES = ("start", "new", "reopened", "increased", "decreased", "won", "lost", "deleted", "end")


def movement_records(period: str, rows: list[dict[str, Any]], currency: str) -> dict[str, dict[str, Any]]:
    names = MOVEMENT_CHANGES
    return {
        f"{period}:{r['pipeline']}": {
            "period": period,
            "pipeline": r["pipeline"],
            "currency": currency,
            **{n: _money(r[f"{n}_cents"]) for n in names},
        }
        for r in rows
    }


@dataclass(frozen=True)
class Snapshot:
    """What the global outputs are a function of.

    ``deals`` is the merge of every partition's latest deal partial (views, firing stalled
    alerts, watermark; :func:`agents.partials.merge_deal_partials`), ``pulse`` that of the
    pulse partials.  ``now_ms`` is the clock of the global outputs, the same for every
    view (eNPS windows included): wall time live, the highest partition watermark in a
    replay (see ``SalesopsWorker.global_now_ms``)."""

    deals: dict[str, Any]
    pulse: dict[str, Any]
    now_ms: int
    config: PipelineConfig
    currency: str
    tz: ZoneInfo
    trailing_windows_days: tuple[int, ...]
    anonymity_threshold: int


@dataclass
class GlobalFigures:
    """Merged results the global gauges are set from: funnel per period label, aging rows,
    eNPS rows per window, open pipeline rows, movement rows per period label."""

    funnels: dict[str, dict[str, Any]] = field(default_factory=dict)
    aging: list[dict[str, Any]] = field(default_factory=list)
    enps: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    pipeline: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    movement: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def aging_records(rows: list[dict[str, Any]], stalled: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per open stage its age statistics and how many of its deals are stalled (firing)."""
    counts = Counter((a["pipeline"], a["stage"]) for a in stalled)
    return {
        f"{r['pipeline']}:{r['stage']}": {
            **{k: r[k] for k in ("pipeline", "stage", "open", "median_days", "p90_days", "max_days")},
            "stalled": counts.get((r["pipeline"], r["stage"]), 0),
        }
        for r in rows
    }


def enps_records(window: str, rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """eNPS per group for one trailing window; a suppressed group keeps its row (responses
    and ``suppressed``) with every figure null, so it shows as hidden, not as missing."""
    return {
        f"{window}:{r['group']}": {
            "group": r["group"],
            "window": window,
            "responses": r["responses"],
            "suppressed": r["suppressed"],
            **{f: r.get(f) for f in ("promoters", "passives", "detractors", "enps", "margin_of_error")},
        }
        for r in rows
    }


def pulse_records(survey: str, view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per question and respondent group of one survey: responses, mean and favourable share."""
    return {
        f"{survey}:{q['question_id']}:{r['group']}": {
            "survey_id": survey,
            "question_id": q["question_id"],
            "group": r["group"],
            "responses": r["responses"],
            "suppressed": r["suppressed"],
            "mean_score": r.get("mean_score"),
            "favourable_ratio": r.get("favourable_ratio"),
        }
        for q in view["questions"]
        for r in q["groups"]
    }


def global_records(snap: Snapshot) -> tuple[dict[str, dict[str, dict[str, Any]]], GlobalFigures]:
    """Every aggregate row by view, and the figures the ratio gauges are set from."""
    now, tz, views = snap.now_ms, snap.tz, snap.deals["views"]
    records: dict[str, dict[str, dict[str, Any]]] = {v: {} for v in VIEWS}
    figures = GlobalFigures(pipeline=pipeline_rows(views))
    records["pipeline"] = pipeline_records(figures.pipeline, snap.currency)
    periods = [trailing_period(d, now, tz) for d in snap.trailing_windows_days]
    periods += [current_month(now, tz), current_quarter(now, tz)]
    for period in periods:
        result = funnel(views, snap.config, period, now)
        figures.funnels[period.label] = result
        records["funnel"].update(funnel_records(result, snap.currency))
    figures.aging = aging(views, now)
    records["stage-aging"] = aging_records(figures.aging, snap.deals["stalled"])
    for period in (current_month(now, tz), current_quarter(now, tz)):
        figures.movement[period.label] = movement(views, period)
        records["movement"].update(
            movement_records(period.label, figures.movement[period.label], snap.currency)
        )
    k = snap.anonymity_threshold
    for days in snap.trailing_windows_days:
        figures.enps[f"{days}d"] = rows = pulse.enps_view(snap.pulse, days, now, k)
        records["enps"].update(enps_records(f"{days}d", rows))
    for survey in sorted({row[0] for row in snap.pulse.get("responses", [])}):
        records["pulse"].update(pulse_records(survey, pulse.pulse_view(snap.pulse, survey, k)))
    return records, figures


def set_worker_gauges(
    metrics: SalesopsMetrics, own_partials: list[dict[str, Any]], firing: list[dict[str, Any]], currency: str
) -> None:
    """Additive gauges over this worker's own partitions (sum over workers = total):
    open pipeline by stage and the stalled deals among them (``firing``: this worker's
    firing stalled alerts)."""
    m = metrics
    rows = pipeline_rows(merge_partials(own_partials))["by_stage"]
    set_gauge_family(
        m.pipeline_value, {(r["pipeline"], r["stage"], currency): r["value_cents"] / 100 for r in rows}
    )
    set_gauge_family(
        m.pipeline_weighted_value,
        {(r["pipeline"], r["stage"], currency): r["weighted_cents"] / 100 for r in rows},
    )
    set_gauge_family(m.pipeline_deals, {(r["pipeline"], r["stage"]): r["deals"] for r in rows})
    stalled = Counter((a["pipeline"], a["stage"]) for a in firing)
    # every stage with open deals has a series, 0 when none is stalled
    open_stages = {(r["pipeline"], r["stage"]): 0.0 for r in rows if r["deals"]}
    set_gauge_family(m.stalled_deals, open_stages | {k: float(v) for k, v in stalled.items()})


def set_global_gauges(metrics: SalesopsMetrics, figures: GlobalFigures, currency: str) -> None:
    """The ratio and merged gauges (publisher only): conversion, win rate, closed deals,
    deal size, cycle, velocity, stage ages, dimensions, movement, eNPS."""
    m = metrics
    conv: dict[tuple[str, ...], float] = {}
    cohort: dict[tuple[str, ...], float] = {}
    win: dict[tuple[str, ...], float] = {}
    closed: dict[tuple[str, ...], float] = {}
    size: dict[tuple[str, ...], float] = {}
    cycle: dict[tuple[str, ...], float] = {}
    velocity: dict[tuple[str, ...], float] = {}
    for label, result in figures.funnels.items():
        for p in result["pipelines"]:
            pid = p["pipeline"]
            for s in p["stages"]:
                if s["window_conversion"] is not None:
                    conv[(pid, s["stage"], label)] = s["window_conversion"]
                if s["cohort_conversion"] is not None:
                    cohort[(pid, s["stage"], label)] = s["cohort_conversion"]
            for basis in ("count", "value"):
                if p[f"win_rate_{basis}"] is not None:
                    win[(pid, label, basis)] = p[f"win_rate_{basis}"]
            closed[(pid, label, "won")] = p["won_count"]
            closed[(pid, label, "lost")] = p["lost_count"]
            if p["avg_deal_size_cents"] is not None:
                size[(pid, label, currency)] = p["avg_deal_size_cents"] / 100
            if p["avg_cycle_days"] is not None:
                cycle[(pid, label)] = p["avg_cycle_days"] * 86400
            if p["sales_velocity_per_day"] is not None:
                velocity[(pid, label, currency)] = p["sales_velocity_per_day"]
    set_gauge_family(m.stage_conversion, conv)
    set_gauge_family(m.stage_cohort_conversion, cohort)
    set_gauge_family(m.win_rate, win)
    set_gauge_family(m.closed_deals, closed)
    set_gauge_family(m.average_deal_size, size)
    set_gauge_family(m.sales_cycle, cycle)
    set_gauge_family(m.sales_velocity, velocity)
    ages: dict[tuple[str, ...], float] = {}
    for r in figures.aging:
        for statistic, f in STAGE_AGE_STATISTICS.items():
            ages[(r["pipeline"], r["stage"], statistic)] = r[f] * 86400
    set_gauge_family(m.stage_age, ages)
    _set_dimension_gauges(m, figures, currency)
    enps: dict[tuple[str, ...], float] = {}
    margins: dict[tuple[str, ...], float] = {}
    responses: dict[tuple[str, ...], float] = {}
    suppressed: dict[tuple[str, ...], float] = {}
    for window, rows in figures.enps.items():
        label = f"last-{window}"  # the funnel's window style: last-30d, last-90d
        for r in rows:
            key = (r["group"], label)
            responses[key] = r["responses"]
            suppressed[key] = 1.0 if r["suppressed"] else 0.0
            if not r["suppressed"] and r.get("enps") is not None:
                enps[key] = r["enps"]
                margins[key] = r["margin_of_error"]
    set_gauge_family(m.enps, enps)
    set_gauge_family(m.enps_margin, margins)
    set_gauge_family(m.enps_responses, responses)
    set_gauge_family(m.enps_suppressed, suppressed)


def _set_dimension_gauges(m: SalesopsMetrics, figures: GlobalFigures, currency: str) -> None:
    """Open pipeline by owner, team and region (bounded: sinks.metrics.dimension_members),
    and the movement of the current month and quarter."""
    value: dict[tuple[str, ...], float] = {}
    weighted: dict[tuple[str, ...], float] = {}
    deals: dict[tuple[str, ...], float] = {}
    for dim in ("owner", "team", "region"):
        rows = figures.pipeline.get(f"by_{dim}", [])
        for member, cents in dimension_members(rows, dim, "value_cents").items():
            value[(dim, member, currency)] = cents / 100
        for member, cents in dimension_members(rows, dim, "weighted_cents").items():
            weighted[(dim, member, currency)] = cents / 100
        for member, n in dimension_members(rows, dim, "deals").items():
            deals[(dim, member)] = n
    set_gauge_family(m.dimension_value, value)
    set_gauge_family(m.dimension_weighted_value, weighted)
    set_gauge_family(m.dimension_deals, deals)
    moves: dict[tuple[str, ...], float] = {}
    for label, rows in figures.movement.items():
        for r in rows:
            for change in MOVEMENT_CHANGES:
                moves[(r["pipeline"], label, change, currency)] = r[f"{change}_cents"] / 100
    set_gauge_family(m.movement, moves)


def view_codecs() -> dict[str, Codec]:
    """The Avro codec of each view's aggregate topic."""
    return {view: Codec.for_record(name) for view, name in VIEW_RECORDS.items()}


class Publisher:
    """Publishes a snapshot to the sinks (publisher worker only).  Sinks are driven alike
    (``sinks.base.Sink``): each view's rows are added, then the sink is flushed; a failure
    is logged and counted (``salesops_sink_errors_total{sink}``) and the sink keeps what
    it could not write for the next publication.  Consumption never waits for a sink."""

    def __init__(self, metrics: SalesopsMetrics, sinks: list[Sink]) -> None:
        self.metrics = metrics
        self.sinks = sinks

    def forget(self) -> None:
        """This worker stopped publishing: the sinks drop what they know of earlier
        publications (``Sink.forget``)."""
        for sink in self.sinks:
            sink.forget()

    async def publish(
        self, snap: Snapshot, extra: dict[str, dict[str, dict[str, Any]]] | None = None
    ) -> bool:
        """Set the global gauges and write every view's rows (plus ``extra`` views
        computed elsewhere) to every sink.

        False, publishing nothing, while the clock has no value: the watermark clock
        before the first event reads the epoch, and rows for 1970 (periods ``1970-01``,
        ``1970-Q1``, ages since 1970) are not numbers anyone should see.  True otherwise,
        also when a sink failed (its rows wait for the next call)."""
        if snap.now_ms <= NO_WATERMARK_MS:
            log.debug("publish skipped=no_clock_value")
            return False
        records, figures = global_records(snap)
        records.update(extra or {})
        set_global_gauges(self.metrics, figures, snap.currency)
        for sink in self.sinks:
            try:
                for view, rows in records.items():
                    sink.add(ViewRows(view, snap.now_ms, rows))
                await sink.flush()
                self.metrics.sink_flushes.labels(sink.name).inc()
            except SinkError as exc:  # SinkUnavailable included: the sink keeps its batch
                self.metrics.sink_errors.labels(sink.name).inc()
                log.warning("sink=%s retry_next_flush=true error=%s", sink.name, exc)
        return True
