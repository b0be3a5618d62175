"""Forecast, quotas and commission in the worker: a timer, its outputs, its API answers.

Glue around :func:`streams.targets.compute` (the pure core).  Every worker computes the
same figures from the global deal state (:class:`agents.all_deals.AllDeals`), so any
worker answers ``/api/forecast``, ``/api/attainment`` and ``/api/commission``; the
publisher also writes them to the ``salesops.forecast``, ``salesops.attainment`` and
``salesops.commission`` topics, Redis and the gauges (``Publisher.publish_global``).

* **When.** The first run as soon as the deals changelog is read to its end (and, with a
  plans file, the commission topic: the ledger), then one ``SALESOPS_FORECAST_INTERVAL_S``
  after the end of each run, one computation at a time.  One log line per run says how
  long it took.
* **Where.** In a child process of the worker (one, started on first use, ``spawn``), not a
  thread: a run over 100,000 deals is ~30 s of Python, and in a thread it would hold the
  GIL against the event loop (measured in the bench: a run over 15,000 deals took 48 s
  in a thread of a busy worker, and the worker's event-to-view latency rose while it
  ran).  A run gets the raw deal records and the configuration (:class:`TargetsJob`) and
  returns its figures (:class:`TargetsRun`); the child keeps the decoded deals between
  runs (:class:`agents.all_deals.DealDecoder`).  A child that dies is replaced at the
  next run; the worker stops it when it stops.
* **Files.** ``SALESOPS_QUOTAS_FILE`` and ``SALESOPS_PLANS_FILE`` are loaded and validated
  when the worker is built: ``salesops worker`` stops with the loader's message and exit
  status 2 on a bad file (:func:`load_files`).  Without a quotas file there is no
  attainment, coverage or commission (the API says so); plans need quotas.
* **Ledger.** Commission statements are computed against the lines already issued
  (never rewritten: changes become adjustment lines).  At start the ledger is the latest
  row per ``<period>:<owner>`` of the commission topic, which every worker follows from
  the beginning (and keeps following: the publisher's rows replace a worker's own);
  the lines of a run count as issued when it ends (the API shows them at once), and the
  publisher writes them with the next publication (the sinks keep and retry what failed).
  Lines a worker issued but the publisher never wrote (it crashed first) are issued again
  after a restart, against the state of then.
* **Periods on request.** ``/api/forecast`` answers the precomputed periods (current and
  next month and quarter) from the last run; any other period (or a ``pipeline`` filter
  with a breakdown other than by pipeline) is computed on request from the last run's
  deals and chains, in the targets process, one at a time.  Attainment and commission exist for
  the quota periods only; another period is a 400 listing them.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from agents.all_deals import DealDecoder
from agents.followers import follow_topic
from agents.settings import Settings
from schemas.codec import Codec, DecodeError
from sinks.metrics import OTHER_MEMBER, SalesopsMetrics, dimension_members, set_gauge_family
from streams import compensation, forecast, quotas
from streams.compensation import PlanConfig, StatementLine
from streams.forecast import DealRow
from streams.periods import Period
from streams.pipeline_views import money
from streams.pipelines import ConfigError, PipelineConfig, Rates
from streams.quotas import QuotaConfig
from streams.targets import (
    ALL,
    ForecastFigure,
    ForecastSettings,
    LedgerKey,
    Targets,
    compute,
    forecast_figures,
)

if TYPE_CHECKING:
    import faust

    from agents.app import SalesopsWorker

log = logging.getLogger(__name__)
TARGET_VIEWS = ("forecast", "attainment", "commission")
TICK_S = 10.0  # how often the timer checks whether a run is due
CODECS = {
    "forecast": "ForecastAggregate",
    "attainment": "AttainmentAggregate",
    "commission": "CommissionAggregate",
}
FORECAST_METHODS = (
    "weighted",
    "expected",
    "monte_carlo_p10",
    "monte_carlo_p50",
    "monte_carlo_p90",
    "monte_carlo_mean",
)
BREAKDOWNS = (ALL, *forecast.DIMENSIONS)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def load_files(settings: Settings, rates: Rates) -> tuple[QuotaConfig | None, PlanConfig | None]:
    """The quotas and plans files of ``settings`` (None when unset), validated against the
    reporting currency; ConfigError naming the file, key and problem otherwise."""
    quota_config = plans = None
    if settings.quotas_file:
        quota_config = quotas.load_quotas(
            settings.quotas_file,
            fiscal_start_month=settings.fiscal_year_start_month,
            reporting_currency=rates.reporting_currency,
        )
    if settings.plans_file:
        if quota_config is None:
            raise ConfigError(
                f"{settings.plans_file}: SALESOPS_PLANS_FILE needs SALESOPS_QUOTAS_FILE "
                "(commission is paid on attainment of a quota)"
            )
        plans = compensation.load_plans(settings.plans_file, reporting_currency=rates.reporting_currency)
    return quota_config, plans


def _money(cents: int) -> Decimal:
    return Decimal(money(cents))


def _pair(name: str, cents: int | None) -> dict[str, Any]:
    """``name`` as an exact decimal string and ``name_cents`` as an int (None stays None)."""
    return {name: None if cents is None else money(cents), f"{name}_cents": cents}


@dataclass(frozen=True)
class TargetsJob:
    """Everything one run needs (picklable: it runs in the targets process)."""

    records: list[tuple[bytes, bytes]]  # the raw deal records, key and value
    config: PipelineConfig
    rates: Rates
    tz: ZoneInfo
    now_ms: int
    settings: ForecastSettings
    quota_config: QuotaConfig | None
    plans: PlanConfig | None
    ledger: dict[LedgerKey, Any]


@dataclass(frozen=True)
class TargetsRun:
    """What one run returns: the figures, the forecast rows (for periods asked for on
    request), how many deals it saw, the records it could not read, and its duration."""

    targets: Targets
    rows: list[DealRow]
    deals: int
    undecodable: list[tuple[bytes, str]]
    duration_s: float


_DECODER = DealDecoder()  # in the targets process: decoded deals survive between runs


def run_targets(job: TargetsJob) -> TargetsRun:
    """One run (module doc, "Where"): decode what changed, then :func:`compute`."""
    started = time.perf_counter()
    deals, bad = _DECODER.decode(job.records)
    targets = compute(
        deals,
        job.config,
        job.rates,
        job.tz,
        job.now_ms,
        job.settings,
        job.quota_config,
        job.plans,
        job.ledger,
    )
    rows = forecast.rows(deals, job.rates)
    return TargetsRun(targets, rows, len(deals), bad, time.perf_counter() - started)


def figures_on_request(
    rows: list[DealRow],
    chains: Any,
    config: PipelineConfig,
    period: Period,
    now_ms: int,
    tz: ZoneInfo,
    settings: ForecastSettings,
    by: str,
) -> list[ForecastFigure]:
    """The figures of one period by one breakdown (runs in the targets process)."""
    figures = forecast_figures(rows, chains, config, [period], now_ms, tz, settings)
    return [f for f in figures if f.dimension == by]


class TargetsService:
    """The forecast, quota and commission figures of one worker (module doc)."""

    def __init__(self, worker: SalesopsWorker) -> None:
        self.worker = worker
        s = worker.settings
        self.quota_config, self.plans = load_files(s, worker.rates)
        self.forecast_settings = ForecastSettings(
            trials=s.forecast_trials, seed=s.forecast_seed, window_days=s.forecast_window_days
        )
        self.latest: Targets | None = None
        self._rows: list[DealRow] = []
        self.ledger: dict[LedgerKey, tuple[StatementLine, ...]] = {}
        self.ledger_caught_up = self.plans is None
        self.commission_codec = Codec.for_record(CODECS["commission"])
        self._lock = asyncio.Lock()  # one computation at a time, timer and requests alike
        self._last_done = 0.0  # monotonic end of the last run
        self._pool: ProcessPoolExecutor | None = None
        self._stopped = False
        self.duration_s = 0.0

    # ------------------------------------------------------------------ wiring
    def install(self, app: faust.App) -> None:
        """The recomputation timer, and the ledger follower when there are plans."""
        app.timer(min(TICK_S, self.worker.settings.forecast_interval_s), name="targets")(self.tick)
        if self.plans is not None:
            app.task(self.follow_ledger)

        async def on_shutdown(_sender: Any, /, *args: Any, signal: Any, **_kwargs: Any) -> None:
            self.stop_process()

        app.on_before_shutdown.connect(on_shutdown)

    def _process(self) -> ProcessPoolExecutor:
        if self._stopped:
            raise BrokenProcessPool("the worker is stopping")
        if self._pool is None:
            # spawn: a fork of the worker would copy its threads' locks mid-use
            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    def stop_process(self) -> None:
        """Stop the targets process now (a run in progress is abandoned: nothing of it
        is kept, the next worker start computes again), for good: the timer still ticks
        while the worker stops, and a process started then would hold the exit up until
        its run ends (the interpreter waits for a process pool's running work)."""
        self._stopped = True
        pool, self._pool = self._pool, None
        if pool is not None:
            processes = list((getattr(pool, "_processes", None) or {}).values())
            pool.shutdown(wait=False, cancel_futures=True)
            for process in processes:
                process.terminate()

    async def _in_process(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` in the targets process; a process that died is replaced next time."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self._process(), fn, *args)
        except BrokenProcessPool:
            self._pool = None
            raise

    async def follow_ledger(self) -> None:
        await follow_topic(
            self.worker.settings,
            self.worker.settings.topic("commission"),
            self._note_commission,
            self._ledger_caught_up,
            "commission_ledger",
        )

    def _ledger_caught_up(self) -> None:
        self.ledger_caught_up = True
        log.info("commission_ledger_caught_up statements=%s", len(self.ledger))

    def _note_commission(self, key: bytes, value: bytes | None) -> None:
        period, _, owner = key.decode(errors="replace").partition(":")
        if not value:
            self.ledger.pop((owner, period), None)
            return
        try:
            rec = self.commission_codec.decode(value)
        except DecodeError as exc:
            log.warning("commission_ledger_undecodable key=%r error=%s", key[:80], exc)
            return
        self.ledger[(rec["owner_id"], rec["period"])] = ledger_lines(rec)

    @property
    def ready(self) -> bool:
        return self.worker.all_deals.caught_up and self.ledger_caught_up

    # ------------------------------------------------------------------ computation
    async def tick(self) -> None:
        """The first run as soon as the deals are caught up (a fresh worker or the demo
        need not wait a whole interval), then one every ``SALESOPS_FORECAST_INTERVAL_S``
        counted from the end of the previous run: a run over 100,000 deals takes about
        30 s of one core, and counting from its end bounds its share of the CPU."""
        interval = self.worker.settings.forecast_interval_s
        if self.latest is None or time.monotonic() - self._last_done >= interval:
            await self.refresh()

    async def refresh(self) -> None:
        """Recompute everything from the current global deal state (module doc)."""
        if not self.ready or self._lock.locked() or self._stopped:
            return
        now = self.worker.global_now_ms()
        if now <= 0:
            return
        w = self.worker
        job = TargetsJob(
            w.all_deals.snapshot(),
            w.config,
            w.rates,
            w.tz,
            now,
            self.forecast_settings,
            self.quota_config,
            self.plans,
            dict(self.ledger),
        )
        async with self._lock:
            try:
                self._took(await self._in_process(run_targets, job))
            except Exception:  # a bug must not stop the timer: logged, tried again next time
                if not self._stopped:  # else the run was stopped with the worker
                    log.exception("targets_failed retry_next_interval=true")
                return
            finally:
                self._last_done = time.monotonic()
        # the new lines are issued now (the API shows them): the next statement is computed
        # against them, whether or not the publisher has written them yet
        assert self.latest is not None
        for c in self.latest.commissions:
            s = c.statement
            self.ledger[(s.owner_id, s.period)] = (*c.reported, *s.lines)

    def _took(self, run: TargetsRun) -> None:
        for key, error in run.undecodable:
            log.warning("all_deals_undecodable key=%r error=%s", key[:80], error)
        self._rows = run.rows
        self.latest = run.targets
        self.duration_s = run.duration_s
        log.info(
            "targets_computed duration_s=%.3f deals=%s forecasts=%s quotas=%s statements=%s",
            run.duration_s,
            run.deals,
            len(run.targets.forecasts),
            len(run.targets.standings),
            len(run.targets.commissions),
        )

    async def forecast_on_request(
        self, period: Period, pipeline: str | None, by: str
    ) -> list[ForecastFigure]:
        """Figures of a period or filter the last run did not precompute, computed from the
        last run's deals and chains in the targets process, one computation at a time."""
        latest = self.latest
        assert latest is not None
        rows = [r for r in self._rows if pipeline is None or r.pipeline == pipeline]
        w = self.worker
        async with self._lock:
            figures: list[ForecastFigure] = await self._in_process(
                figures_on_request,
                rows,
                latest.chains,
                w.config,
                period,
                latest.now_ms,
                w.tz,
                self.forecast_settings,
                by,
            )
            return figures

    # ------------------------------------------------------------------ outputs
    def records(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Rows by view (forecast, attainment, commission) of the last run; empty before
        the first (so nothing is published, nor tombstoned, before it)."""
        t = self.latest
        if t is None:
            return {}
        currency = self.worker.rates.reporting_currency
        out: dict[str, dict[str, dict[str, Any]]] = {v: {} for v in TARGET_VIEWS}
        for f in t.forecasts:
            out["forecast"][f"{f.period}:{f.dimension}:{f.member}"] = forecast_record(f, currency)
        for st in t.standings:
            out["attainment"][f"{st.period}:{st.scope}:{st.key}"] = self._attainment_record(t, st, currency)
        for c in t.commissions:
            s = c.statement
            lines = (*c.reported, *s.lines)
            out["commission"][f"{s.period}:{s.owner_id}"] = commission_record(c, lines, currency)
        return out

    def _attainment_record(self, t: Targets, st: quotas.QuotaStanding, currency: str) -> dict[str, Any]:
        qf = (t.quota_forecasts or {}).get((st.scope, st.key, st.period))
        spread = (t.period_spreads or {}).get((st.key, st.period)) if st.scope == "territory" else None
        return {
            "period": st.period,
            "scope": st.scope,
            "member": st.key,
            "quota": _money(st.quota_cents),
            "won": _money(st.won_cents),
            "won_deals": st.won_deals,
            "open_due": _money(st.open_due_cents),
            "open_due_deals": st.open_due_deals,
            "unpriced_deals": st.unpriced_deals,
            "attainment": st.attainment,
            "gap": _money(st.gap_cents),
            "coverage": st.coverage,
            "forecast_p50": None if qf is None else _money(qf.monte_carlo.p50_cents),
            "forecast_attainment": None if qf is None else qf.attainment,
            "spread_cv": None if spread is None else spread.cv,
            "spread_max_share": None if spread is None else spread.max_share,
            "spread_min_share": None if spread is None else spread.min_share,
            "reps": []
            if spread is None
            else [
                {"owner_id": r.owner_id, "open": _money(r.open_cents), "open_deals": r.open_deals}
                for r in spread.reps
            ],
            "currency": currency,
        }

    def update_gauges(self, m: SalesopsMetrics) -> None:
        """The forecast, quota and commission gauges of the last run (publisher only).
        Owners, teams and regions of the forecast are bounded like the pipeline's
        (sinks.metrics.dimension_members): additive methods sum the rest into
        ``(other)``, quantiles are kept for the kept members only."""
        t = self.latest
        if t is None:
            return
        currency = self.worker.rates.reporting_currency
        values: dict[tuple[str, ...], float] = {}
        components: dict[tuple[str, ...], float] = {}
        by_dim: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for f in t.forecasts:
            by_dim.setdefault((f.period, f.dimension), []).append(
                {
                    f.dimension: f.member,
                    "value_cents": f.expected.total_cents,
                    "weighted": f.weighted_cents,
                    "expected": f.expected.total_cents,
                    "open": f.expected.open_cents,
                    "won": f.expected.won_cents,
                    "new": f.expected.new_cents,
                    "monte_carlo_p10": f.monte_carlo.p10_cents,
                    "monte_carlo_p50": f.monte_carlo.p50_cents,
                    "monte_carlo_p90": f.monte_carlo.p90_cents,
                    "monte_carlo_mean": f.monte_carlo.mean_cents,
                }
            )
        for (period, dim), rows in by_dim.items():
            bounded = dim in ("owner", "team", "region")
            kept = set(dimension_members(rows, dim, "value_cents")) - {OTHER_MEMBER} if bounded else None
            for method in FORECAST_METHODS:
                if method.startswith("monte_carlo") or not bounded:
                    sums = {
                        str(r[dim]): float(r[method]) for r in rows if kept is None or str(r[dim]) in kept
                    }
                else:
                    sums = dimension_members(rows, dim, method)
                for member, cents in sums.items():
                    values[(dim, member, period, method, currency)] = cents / 100
            for component in ("open", "won", "new"):
                sums = (
                    dimension_members(rows, dim, component)
                    if bounded
                    else {str(r[dim]): float(r[component]) for r in rows}
                )
                for member, cents in sums.items():
                    components[(dim, member, period, component, currency)] = cents / 100
        set_gauge_family(m.forecast_value, values)
        set_gauge_family(m.forecast_component, components)
        m.forecast_run.set(self.duration_s)
        quota: dict[tuple[str, ...], float] = {}
        gap: dict[tuple[str, ...], float] = {}
        attained: dict[tuple[str, ...], float] = {}
        coverage: dict[tuple[str, ...], float] = {}
        for st in t.standings:
            key = (st.scope, st.key, st.period)
            quota[(*key, currency)] = st.quota_cents / 100
            gap[(*key, currency)] = st.gap_cents / 100
            attained[key] = st.attainment
            if st.coverage is not None:
                coverage[key] = st.coverage
        set_gauge_family(m.quota, quota)
        set_gauge_family(m.quota_gap, gap)
        set_gauge_family(m.quota_attainment, attained)
        set_gauge_family(m.pipeline_coverage, coverage)
        set_gauge_family(
            m.quota_forecast_attainment,
            {(q.scope, q.key, q.period): q.attainment for q in (t.quota_forecasts or {}).values()},
        )
        spreads: dict[tuple[str, ...], float] = {}
        for sp in t.spreads:
            for statistic in ("cv", "max_share", "min_share"):
                value = getattr(sp, statistic)
                if value is not None:
                    spreads[(sp.territory, statistic)] = value
        set_gauge_family(m.territory_spread, spreads)
        earned: dict[tuple[str, ...], float] = {}
        projected: dict[tuple[str, ...], float] = {}
        adjustments: dict[tuple[str, ...], float] = {}
        for c in t.commissions:
            s = c.statement
            earned[(s.owner_id, s.period, currency)] = s.earned_cents / 100
            if c.projection is not None:
                projected[(s.owner_id, s.period, currency)] = c.projection.commission_cents / 100
            lines = (*c.reported, *s.lines)
            adjustments[(s.owner_id, s.period)] = sum(1 for x in lines if x.kind == compensation.ADJUSTMENT)
        set_gauge_family(m.commission_earned, earned)
        set_gauge_family(m.commission_projected, projected)
        set_gauge_family(m.commission_adjustments, adjustments)

    # ------------------------------------------------------------------ API answers
    def not_ready(self) -> str | None:
        """Why there is nothing to answer yet, or None."""
        if not self.worker.all_deals.caught_up:
            return "deals: the deals changelog has not been read to its end yet"
        if not self.ledger_caught_up:
            return "commission: the commission topic (the ledger) has not been read to its end yet"
        if self.latest is None:
            return "targets: the first forecast is being computed"
        return None

    def precomputed(self, period: Period) -> str | None:
        """The label of the precomputed period with ``period``'s days, or None."""
        assert self.latest is not None
        for p in self.latest.periods:
            if (p.first_day, p.last_day) == (period.first_day, period.last_day):
                return p.label
        return None

    def forecast_json(
        self, figures: Sequence[ForecastFigure], period: Period, by: str, pipeline: str | None, computed: str
    ) -> dict[str, Any]:
        t = self.latest
        assert t is not None
        chains = [c for pid, c in sorted(t.chains.items()) if pipeline is None or pid == pipeline]
        return {
            "as_of": t.now_ms,
            "currency": self.worker.rates.reporting_currency,
            "period": period.label,
            "first_day": _iso(period.first_day),
            "last_day": _iso(period.last_day),
            "by": by,
            "pipeline": pipeline,
            "computed": computed,
            "precomputed_periods": [p.label for p in t.periods],
            "trials": self.forecast_settings.trials,
            "seed": self.forecast_settings.seed,
            "rows": [forecast_json_row(f) for f in figures],
            "chains": [
                {
                    "pipeline": c.pipeline,
                    "window_days": c.window_days,
                    "stages": [
                        {
                            "stage": s.stage,
                            "p_win": s.p_win,
                            "expected_steps": s.expected_steps,
                            "days_to_close": s.days_to_close,
                            "days_to_win": s.days_to_win,
                            "exits": s.exits,
                            "learned": s.learned,
                        }
                        for s in c.stage_forecasts()
                    ],
                    "notes": list(c.notes),
                }
                for c in chains
            ],
        }

    def quota_period(self, period: Period) -> str | None:
        """The quota period label with ``period``'s days, or None."""
        assert self.quota_config is not None
        for p in self.quota_config.periods():
            if (p.first_day, p.last_day) == (period.first_day, period.last_day):
                return p.label
        return None

    def attainment_json(self, label: str | None) -> dict[str, Any]:
        t = self.latest
        assert t is not None
        currency = self.worker.rates.reporting_currency
        rows = []
        for st in t.standings:
            if label is not None and st.period != label:
                continue
            qf = (t.quota_forecasts or {}).get((st.scope, st.key, st.period))
            spread = (t.period_spreads or {}).get((st.key, st.period)) if st.scope == "territory" else None
            rows.append(
                {
                    "scope": st.scope,
                    "member": st.key,
                    "period": st.period,
                    **_pair("quota", st.quota_cents),
                    **_pair("won", st.won_cents),
                    "won_deals": st.won_deals,
                    **_pair("open_due", st.open_due_cents),
                    "open_due_deals": st.open_due_deals,
                    "unpriced_deals": st.unpriced_deals,
                    "attainment": st.attainment,
                    **_pair("gap", st.gap_cents),
                    "coverage": st.coverage,
                    **_pair("forecast_p50", None if qf is None else qf.monte_carlo.p50_cents),
                    "forecast_attainment": None if qf is None else qf.attainment,
                    "spread": None if spread is None else spread_json(spread),
                }
            )
        return {
            "as_of": t.now_ms,
            "currency": currency,
            "period": label,
            "periods": [p.label for p in self.quota_config.periods()] if self.quota_config else [],
            "quotas": rows,
            "territories": [spread_json(s) for s in t.spreads],
        }

    def commission_json(self, owner: str | None, label: str | None) -> dict[str, Any]:
        t = self.latest
        assert t is not None
        statements = []
        for c in t.commissions:
            s = c.statement
            if (owner is not None and s.owner_id != owner) or (label is not None and s.period != label):
                continue
            lines = (*c.reported, *s.lines)
            p = c.projection
            statements.append(
                {
                    "owner_id": s.owner_id,
                    "period": s.period,
                    "plan": s.plan_id,
                    **_pair("quota", s.quota_cents),
                    **_pair("credited", s.credited_cents),
                    "credited_deals": s.credited_deals,
                    "unpriced_deals": s.unpriced_deals,
                    "attainment": s.attainment,
                    **_pair("earned", s.earned_cents),
                    "capped": s.capped,
                    "adjustments": sum(1 for x in lines if x.kind == compensation.ADJUSTMENT),
                    "projection": None
                    if p is None
                    else {
                        **_pair("value", p.value_cents),
                        "attainment": p.attainment,
                        **_pair("commission", p.commission_cents),
                        **_pair("additional", p.additional_cents),
                    },
                    "lines": [
                        {
                            "deal_id": x.deal_id,
                            "kind": x.kind,
                            "reason": x.reason,
                            "at": x.at,
                            **_pair("credit", x.credit_cents),
                            **_pair("commission", x.commission_cents),
                            "detail": x.detail,
                            "new": x in s.lines,
                        }
                        for x in lines
                    ],
                }
            )
        return {
            "as_of": t.now_ms,
            "currency": self.worker.rates.reporting_currency,
            "owner": owner,
            "period": label,
            "statements": statements,
        }


def _iso(day: int) -> str:
    return date.fromordinal(day).isoformat()


def forecast_record(f: ForecastFigure, currency: str) -> dict[str, Any]:
    e, mc = f.expected, f.monte_carlo
    return {
        "period": f.period,
        "dimension": f.dimension,
        "member": f.member,
        "weighted": _money(f.weighted_cents),
        "expected": _money(e.total_cents),
        "expected_open": _money(e.open_cents),
        "expected_won": _money(e.won_cents),
        "expected_new": _money(e.new_cents),
        "p10": _money(mc.p10_cents),
        "p50": _money(mc.p50_cents),
        "p90": _money(mc.p90_cents),
        "mean": _money(mc.mean_cents),
        "mean_new": _money(mc.new_mean_cents),
        "trials": mc.trials,
        "seed": mc.seed,
        "open_deals": e.open_deals,
        "currency": currency,
    }


def forecast_json_row(f: ForecastFigure) -> dict[str, Any]:
    e, mc = f.expected, f.monte_carlo
    return {
        "dimension": f.dimension,
        "member": f.member,
        **_pair("weighted", f.weighted_cents),
        "expected": {
            **_pair("total", e.total_cents),
            **_pair("open", e.open_cents),
            **_pair("won", e.won_cents),
            **_pair("new", e.new_cents),
            "open_deals": e.open_deals,
        },
        "monte_carlo": {
            **_pair("p10", mc.p10_cents),
            **_pair("p50", mc.p50_cents),
            **_pair("p90", mc.p90_cents),
            **_pair("mean", mc.mean_cents),
            **_pair("already_won", mc.already_won_cents),
            **_pair("open_mean", mc.open_mean_cents),
            **_pair("new_mean", mc.new_mean_cents),
        },
    }


def spread_json(s: quotas.TerritorySpread) -> dict[str, Any]:
    return {
        "territory": s.territory,
        **_pair("open", s.open_cents),
        "open_deals": s.open_deals,
        **_pair("unassigned", s.unassigned_cents),
        "unassigned_deals": s.unassigned_deals,
        "unpriced_deals": s.unpriced_deals,
        "cv": s.cv,
        "max_share": s.max_share,
        "min_share": s.min_share,
        "reps": [
            {"owner_id": r.owner_id, **_pair("open", r.open_cents), "open_deals": r.open_deals}
            for r in s.reps
        ],
    }


def commission_record(c: Any, lines: Sequence[StatementLine], currency: str) -> dict[str, Any]:
    s, p = c.statement, c.projection
    return {
        "period": s.period,
        "owner_id": s.owner_id,
        "plan": s.plan_id,
        "quota": _money(s.quota_cents),
        "credited": _money(s.credited_cents),
        "credited_deals": s.credited_deals,
        "unpriced_deals": s.unpriced_deals,
        "attainment": s.attainment,
        "earned": _money(s.earned_cents),
        "capped": s.capped,
        "adjustments": sum(1 for x in lines if x.kind == compensation.ADJUSTMENT),
        "projected": None if p is None else _money(p.commission_cents),
        "projected_value": None if p is None else _money(p.value_cents),
        "lines": [
            {
                "deal_id": x.deal_id,
                "kind": x.kind,
                "reason": x.reason,
                "at": x.at,  # epoch ms: fastavro takes it for timestamp-millis, JSON as is
                "credit": _money(x.credit_cents),
                "commission": _money(x.commission_cents),
                "detail": x.detail,
            }
            for x in lines
        ],
        "currency": currency,
    }


def ledger_lines(rec: dict[str, Any]) -> tuple[StatementLine, ...]:
    """The reported lines of a decoded CommissionAggregate row."""
    out = []
    for x in rec["lines"]:
        at = x["at"]
        out.append(
            StatementLine(
                owner_id=rec["owner_id"],
                period=rec["period"],
                deal_id=x["deal_id"],
                kind=x["kind"],
                reason=x["reason"],
                at=at if isinstance(at, int) else (at - _EPOCH) // _MS,
                credit_cents=int(Decimal(x["credit"]) * 100),
                commission_cents=int(Decimal(x["commission"]) * 100),
                detail=x["detail"],
            )
        )
    return tuple(out)
