"""Targets: the forecast, quota standings and commission statements of one deal state.

One pure function, :func:`compute`, turns the global deal state (every deal with its
observations), the configuration and "now" into everything the worker publishes about
what will close, who is on track and what it pays.  It only assembles the pure core of
:mod:`streams.forecast`, :mod:`streams.quotas` and :mod:`streams.compensation`:

* **Forecast periods**: the current and the next calendar month and quarter of ``now``
  (:func:`forecast_periods`).  Per period, the total (dimension ``all``, member ``all``)
  and every member of the breakdowns by pipeline, owner, team and region
  (:data:`streams.forecast.DIMENSIONS`), each with the weighted value, the expected
  value by component (open, won, new) and the Monte Carlo P10/P50/P90 and mean
  (:class:`ForecastFigure`).  The chains are learned once, over all deals, per pipeline.
* **Quota standings** of every quota in the quotas file (attainment, gap, coverage) and
  the spread of every territory's open pipeline, over all open deals and, for a
  territory quota, over the deals due in its period.
* **Forecast against quota**: for each quota whose period contains today, the Monte
  Carlo of the quota's own deals (those of the owner, team or territory) over its period;
  its P50 over the quota is the *forecast attainment* (:class:`QuotaForecast`).  Periods
  that ended have nothing left to forecast, future ones are not forecast.
* **Commission**: per owner quota whose owner has a plan, the statement against the
  ledger of lines already reported (:func:`streams.compensation.statement`), and the
  projected commission: at the P50 of the owner's quota forecast for a current period,
  at the credited value for a period that ended, none for a future one.

Everything depends only on the arguments: the same state, ``now`` and seed give the same
figures (the Monte Carlo of every subset uses the one ``seed``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from zoneinfo import ZoneInfo

from streams import compensation, forecast, quotas
from streams.deals import Deal
from streams.forecast import Chain, DealRow, Expected, MonteCarlo
from streams.periods import Period, current_month, current_quarter, day_of, month_period, quarter_period
from streams.pipelines import PipelineConfig, Rates

ALL = "all"  # the dimension and member of a forecast's total
LedgerKey = tuple[str, str]  # (owner, period label)


def forecast_periods(now_ms: int, tz: ZoneInfo) -> list[Period]:
    """Current month, next month, current quarter, next quarter (calendar, in ``tz``)."""
    month = current_month(now_ms, tz)
    quarter = current_quarter(now_ms, tz)
    m, q = date.fromordinal(month.last_day + 1), date.fromordinal(quarter.last_day + 1)
    return [month, month_period(m.year, m.month), quarter, quarter_period(q.year, (q.month - 1) // 3 + 1)]


@dataclass(frozen=True, slots=True)
class ForecastFigure:
    """Every method's forecast of one period for one subset of deals, in cents."""

    period: str
    dimension: str  # all | pipeline | owner | team | region
    member: str
    weighted_cents: int
    expected: Expected
    monte_carlo: MonteCarlo


@dataclass(frozen=True, slots=True)
class QuotaForecast:
    """The Monte Carlo of a quota's own deals over its (current) period."""

    scope: str
    key: str
    period: str
    quota_cents: int
    monte_carlo: MonteCarlo

    @property
    def attainment(self) -> float:
        """Forecast attainment: P50 of closed-won value at period end / quota."""
        return self.monte_carlo.p50_cents / self.quota_cents


@dataclass(frozen=True, slots=True)
class OwnerCommission:
    statement: compensation.Statement
    projection: compensation.Projection | None  # None for a period that has not begun
    reported: tuple[compensation.StatementLine, ...]  # the ledger's lines before this run


@dataclass(frozen=True)
class Targets:
    now_ms: int
    periods: tuple[Period, ...]
    chains: Mapping[str, Chain]
    forecasts: tuple[ForecastFigure, ...]
    standings: tuple[quotas.QuotaStanding, ...] = ()
    spreads: tuple[quotas.TerritorySpread, ...] = ()  # over all open deals
    period_spreads: Mapping[tuple[str, str], quotas.TerritorySpread] | None = None  # (territory, period)
    quota_forecasts: Mapping[tuple[str, str, str], QuotaForecast] | None = None  # (scope, key, period)
    commissions: tuple[OwnerCommission, ...] = ()


@dataclass(frozen=True)
class ForecastSettings:
    trials: int = forecast.MIN_TRIALS
    seed: int = 0
    window_days: float = forecast.DEFAULT_WINDOW_DAYS
    min_exits: int = forecast.DEFAULT_MIN_EXITS


def forecast_figures(
    deal_rows: Sequence[DealRow],
    chains: Mapping[str, Chain],
    config: PipelineConfig,
    periods: Iterable[Period],
    now_ms: int,
    tz: ZoneInfo,
    settings: ForecastSettings,
) -> list[ForecastFigure]:
    """Every method for each period, for the total and every breakdown member."""
    subsets: list[tuple[str, str, Sequence[DealRow]]] = [(ALL, ALL, deal_rows)]
    for dim in forecast.DIMENSIONS:
        subsets += [(dim, member, rs) for member, rs in forecast.split(deal_rows, dim).items()]
    out = []
    for period in periods:
        for dim, member, rs in subsets:
            out.append(
                ForecastFigure(
                    period=period.label,
                    dimension=dim,
                    member=member,
                    weighted_cents=forecast.weighted(rs, config, period),
                    expected=forecast.expected(rs, chains, period, now_ms, tz),
                    monte_carlo=forecast.simulate(
                        rs, chains, period, now_ms, tz, settings.trials, settings.seed
                    ),
                )
            )
    return out


def _scope_rows(
    deals: Sequence[Deal], deal_rows: Sequence[DealRow], config: quotas.QuotaConfig
) -> dict[tuple[str, str], list[DealRow]]:
    """The forecast rows of every (scope, key) a deal counts for (quota figures' rule:
    its current owner, team and territory)."""
    by_id = {d.deal_id: d for d in deals}
    out: dict[tuple[str, str], list[DealRow]] = defaultdict(list)
    for row in deal_rows:
        deal = by_id[row.deal_id]
        if deal.owner_id is not None:
            out[("owner", deal.owner_id)].append(row)
        if deal.team is not None:
            out[("team", deal.team)].append(row)
        territory = config.territory_of(deal.region, deal.owner_id)
        if territory is not None:
            out[("territory", territory)].append(row)
    return out


def compute(
    deals: Sequence[Deal],
    config: PipelineConfig,
    rates: Rates,
    tz: ZoneInfo,
    now_ms: int,
    settings: ForecastSettings = ForecastSettings(),
    quota_config: quotas.QuotaConfig | None = None,
    plans: compensation.PlanConfig | None = None,
    ledger: Mapping[LedgerKey, Sequence[compensation.StatementLine]] | None = None,
) -> Targets:
    """Everything of the module doc for ``deals`` at ``now_ms``; without ``quota_config``
    only the forecast, without ``plans`` no commission."""
    periods = forecast_periods(now_ms, tz)
    chains = forecast.learn(deals, config, now_ms, settings.window_days, settings.min_exits)
    deal_rows = forecast.rows(deals, rates)
    figures = forecast_figures(deal_rows, chains, config, periods, now_ms, tz, settings)
    if quota_config is None:
        return Targets(now_ms, tuple(periods), chains, tuple(figures))

    today = day_of(now_ms, tz)
    standings = quotas.standings(quota_config, deals, rates, tz)
    spreads = quotas.territory_spreads(quota_config, deals, rates)
    period_spreads = {}
    for period in quota_config.periods():
        if any(q.scope == "territory" and q.period.label == period.label for q in quota_config.quotas):
            for s in quotas.territory_spreads(quota_config, deals, rates, period):
                period_spreads[(s.territory, period.label)] = s
    scope_rows = _scope_rows(deals, deal_rows, quota_config)
    quota_forecasts: dict[tuple[str, str, str], QuotaForecast] = {}
    for q in quota_config.quotas:
        if q.period.contains(today):
            mc = forecast.simulate(
                scope_rows.get((q.scope, q.key), []),
                chains,
                q.period,
                now_ms,
                tz,
                settings.trials,
                settings.seed,
            )
            quota_forecasts[(q.scope, q.key, q.period.label)] = QuotaForecast(
                q.scope, q.key, q.period.label, q.amount_cents, mc
            )
    commissions = []
    if plans is not None:
        ledger = ledger or {}
        for q in quota_config.quotas:
            plan = plans.plan_for(q.key) if q.scope == "owner" else None
            if plan is None:
                continue
            reported = tuple(ledger.get((q.key, q.period.label), ()))
            st = compensation.statement(
                plan, q.amount_cents, q.key, q.period, deals, reported, rates, tz, now_ms
            )
            projection = None
            qf = quota_forecasts.get(("owner", q.key, q.period.label))
            if qf is not None:
                projection = compensation.projected_commission(
                    plan, q.amount_cents, qf.monte_carlo.p50_cents, st.earned_cents
                )
            elif q.period.last_day < today:
                projection = compensation.projected_commission(
                    plan, q.amount_cents, st.credited_cents, st.earned_cents
                )
            commissions.append(OwnerCommission(st, projection, reported))
    return Targets(
        now_ms=now_ms,
        periods=tuple(periods),
        chains=chains,
        forecasts=tuple(figures),
        standings=tuple(standings),
        spreads=tuple(spreads),
        period_spreads=period_spreads,
        quota_forecasts=quota_forecasts,
        commissions=tuple(commissions),
    )
