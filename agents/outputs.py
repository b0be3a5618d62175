"""From merged partials to the outputs: gauges, aggregate topics, Redis.

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
from typing import TYPE_CHECKING, Any

from schemas.codec import Codec
from sinks.aggregate_topics import AggregateTopicSink
from sinks.base import SinkError, SinkUnavailable
from sinks.metrics import STAGE_AGE_STATISTICS, dimension_members, set_gauge_family
from sinks.redis_snapshot import RedisSnapshotSink
from streams import pulse
from streams.clock import NO_WATERMARK_MS
from streams.periods import current_month, current_quarter, trailing_period
from streams.pipeline_views import aging, funnel, merge_partials, money, movement, pipeline_rows

if TYPE_CHECKING:
    from agents.app import SalesopsWorker

log = logging.getLogger(__name__)
VIEWS = ("pipeline", "funnel", "stage-aging", "movement", "enps", "pulse")
_CODECS = {
    "pipeline": "PipelineAggregate",
    "funnel": "FunnelAggregate",
    "stage-aging": "StageAgingAggregate",
    "movement": "MovementAggregate",
    "enps": "EnpsAggregate",
    "pulse": "PulseAggregate",
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


@dataclass
class GlobalFigures:
    """Merged results the global gauges are set from: funnel per period label, aging rows,
    eNPS rows per window, open pipeline rows, movement rows per period label."""

    funnels: dict[str, dict[str, Any]] = field(default_factory=dict)
    aging: list[dict[str, Any]] = field(default_factory=list)
    enps: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    pipeline: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    movement: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


class Publisher:
    """Owns the output sinks of one worker and turns partials into their records."""

    def __init__(self, worker: SalesopsWorker) -> None:
        self.worker = worker
        s = worker.settings
        self.codecs = {view: Codec.for_record(name) for view, name in _CODECS.items()}
        self.redis: RedisSnapshotSink | None = None
        if s.redis_url:
            self.redis = RedisSnapshotSink(s.redis_url.value, s.redis_prefix)
        self.topics = AggregateTopicSink(self._send)
        self._redis_ready = False

    async def _send(self, topic: str, key: bytes, value: bytes | None) -> None:
        await self.worker.app.producer.send(topic, key, value, partition=None, timestamp=None, headers=None)

    # -------------------------------------------------------------- per-worker gauges
    def update_worker_gauges(self, own_partials: list[dict[str, Any]]) -> None:
        """Additive gauges over this worker's own partitions (sum over workers = total)."""
        w, m = self.worker, self.worker.metrics
        own = merge_partials(own_partials)
        currency = w.rates.reporting_currency
        rows = pipeline_rows(own)["by_stage"]
        set_gauge_family(
            m.pipeline_value, {(r["pipeline"], r["stage"], currency): r["value_cents"] / 100 for r in rows}
        )
        set_gauge_family(
            m.pipeline_weighted_value,
            {(r["pipeline"], r["stage"], currency): r["weighted_cents"] / 100 for r in rows},
        )
        set_gauge_family(m.pipeline_deals, {(r["pipeline"], r["stage"]): r["deals"] for r in rows})
        stalled = Counter(
            (a["pipeline"], a["stage"]) for p in w.partitions.values() for a in p.firing.values()
        )
        # every stage with open deals has a series, 0 when none is stalled
        open_stages = {(r["pipeline"], r["stage"]): 0.0 for r in rows if r["deals"]}
        set_gauge_family(m.stalled_deals, open_stages | {k: float(v) for k, v in stalled.items()})

    # -------------------------------------------------------------- global outputs
    def global_records(self, now: int) -> tuple[dict[str, dict[str, dict[str, Any]]], GlobalFigures]:
        """Every aggregate row by view, and the figures the ratio gauges are set from."""
        w = self.worker
        merged = w.merged_deals()
        views = merged["views"]
        currency = w.rates.reporting_currency
        records: dict[str, dict[str, dict[str, Any]]] = {v: {} for v in VIEWS}
        figures = GlobalFigures(pipeline=pipeline_rows(views))
        records["pipeline"] = pipeline_records(figures.pipeline, currency)
        periods = [trailing_period(d, now, w.tz) for d in w.settings.trailing_windows_days]
        periods += [current_month(now, w.tz), current_quarter(now, w.tz)]
        for period in periods:
            result = funnel(views, w.config, period, now)
            figures.funnels[period.label] = result
            records["funnel"].update(funnel_records(result, currency))
        stalled = Counter((a["pipeline"], a["stage"]) for a in merged["stalled"])
        figures.aging = aging(views, now)
        for r in figures.aging:
            records["stage-aging"][f"{r['pipeline']}:{r['stage']}"] = {
                **{k: r[k] for k in ("pipeline", "stage", "open", "median_days", "p90_days", "max_days")},
                "stalled": stalled.get((r["pipeline"], r["stage"]), 0),
            }
        for period in (current_month(now, w.tz), current_quarter(now, w.tz)):
            figures.movement[period.label] = movement(views, period)
            records["movement"].update(
                movement_records(period.label, figures.movement[period.label], currency)
            )
        pulse_partial = w.merged_pulse()
        k = w.settings.anonymity_threshold

        for days in w.settings.trailing_windows_days:
            rows = pulse.enps_view(pulse_partial, days, w.now_ms(), k)
            figures.enps[f"{days}d"] = rows
            for r in rows:
                records["enps"][f"{days}d:{r['group']}"] = {
                    "group": r["group"],
                    "window": f"{days}d",
                    "responses": r["responses"],
                    "suppressed": r["suppressed"],
                    **{
                        f: r.get(f)
                        for f in ("promoters", "passives", "detractors", "enps", "margin_of_error")
                    },
                }
        for survey in sorted({row[0] for row in pulse_partial.get("responses", [])}):
            for q in pulse.pulse_view(pulse_partial, survey, k)["questions"]:
                for r in q["groups"]:
                    records["pulse"][f"{survey}:{q['question_id']}:{r['group']}"] = {
                        "survey_id": survey,
                        "question_id": q["question_id"],
                        "group": r["group"],
                        "responses": r["responses"],
                        "suppressed": r["suppressed"],
                        "mean_score": r.get("mean_score"),
                        "favourable_ratio": r.get("favourable_ratio"),
                    }
        return records, figures

    def update_global_gauges(self, figures: GlobalFigures) -> None:
        m = self.worker.metrics
        conv: dict[tuple[str, ...], float] = {}
        cohort: dict[tuple[str, ...], float] = {}
        win: dict[tuple[str, ...], float] = {}
        closed: dict[tuple[str, ...], float] = {}
        size: dict[tuple[str, ...], float] = {}
        cycle: dict[tuple[str, ...], float] = {}
        velocity: dict[tuple[str, ...], float] = {}
        currency = self.worker.rates.reporting_currency
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
        self._update_dimension_gauges(figures, currency)
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

    def _update_dimension_gauges(self, figures: GlobalFigures, currency: str) -> None:
        """Open pipeline by owner, team and region (bounded: sinks.metrics.dimension_members),
        and the movement of the current month and quarter."""
        m = self.worker.metrics
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

    async def publish_global(self) -> bool:
        """Publisher only: aggregate topics, Redis and the ratio gauges from merged partials.

        False, publishing nothing, while the clock has no value: the watermark clock
        before the first event reads the epoch, and rows for 1970 (periods ``1970-01``,
        ``1970-Q1``, ages since 1970) are not numbers anyone should see.  A sink failure
        is logged and counted and its rows wait for the next call; it returns True then."""
        w = self.worker
        now = w.global_now_ms()
        if now <= NO_WATERMARK_MS:
            log.debug("publish_global skipped=no_clock_value")
            return False
        records, figures = self.global_records(now)
        self.update_global_gauges(figures)
        for view, rows in records.items():
            self.topics.add(w.settings.topic(view), self.codecs[view], now, rows)
        try:
            await self.topics.aflush()
            w.metrics.sink_flushes.labels("aggregate-topics").inc()
        except SinkUnavailable as exc:
            w.metrics.sink_errors.labels("aggregate-topics").inc()
            log.warning("sink=aggregate-topics retry_next_flush=true error=%s", exc)
        if self.redis is not None:
            for view, rows in records.items():
                self.redis.add((view, now, {k: _jsonable(v) for k, v in rows.items()}))
            try:
                if not self._redis_ready:
                    self.redis.setup()
                    self._redis_ready = True
                self.redis.flush()
                w.metrics.sink_flushes.labels("redis").inc()
            except SinkError as exc:  # SinkUnavailable included: keep the buffer, retry next flush
                self._redis_ready = False
                w.metrics.sink_errors.labels("redis").inc()
                log.warning("sink=redis retry_next_flush=true pending=%s error=%s", self.redis.pending, exc)
        return True


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Decimal) else v) for k, v in row.items()}
