"""Backtest: forecast a period from the history up to a cut-off, compare with what closed.

For a cut-off instant ``c`` and a period ``P``:

1. every deal is cut to what was known before ``c`` (:func:`truncate`): its observations
   with ``occurred_at < c``; a deal with none did not exist yet;
2. the chains are learned from the cut deals over the window ending at ``c``, and every
   method forecasts ``P`` with ``now = c`` (:mod:`streams.forecast`): weighted (plus what
   was already won in ``P`` by ``c``, so that all methods forecast the same quantity),
   expected (open + won + new deals) and the Monte Carlo P10/P50/P90;
3. the *actual* is the closing amount of every deal, in the full history, that is won now
   and closed in ``P``: deals open at the cut-off and deals created after it alike.

Each method's error is ``forecast - actual`` in cents (positive: over-forecast); over many
cut-offs :func:`summarize` gives the mean error (bias), the weighted absolute percentage
error (sum of absolute errors / sum of actuals) and the *coverage*: the share of periods
whose actual lies within the Monte Carlo's P10..P90 (80 % for a calibrated forecast).

What a cut deal knows.  The deals table keeps every observation's stage, status and
amount, but only the newest event's other attributes.  A cut deal keeps its owner, team,
region and pipeline (dimensions, as the views do); its ``expected_close_date`` and
``probability`` are kept only when nothing was cut (the newest event is before the
cut-off), and are unknown (None) otherwise: a date set after the cut-off must not leak
into the forecast.  So in a backtest on the deals table the weighted method sees fewer
close dates than it had live, and its error is biased low; a backtest over replayed input
events (folded up to the cut-off) has no such gap.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date
from zoneinfo import ZoneInfo

from streams.deals import Deal
from streams.events import DAY_MS
from streams.forecast import (
    DEFAULT_MIN_EXITS,
    DEFAULT_WINDOW_DAYS,
    MIN_TRIALS,
    Expected,
    MonteCarlo,
    expected,
    learn,
    rows,
    simulate,
    weighted,
    won_in_period,
)
from streams.periods import (
    Period,
    day_of,
    day_start_ms,
    month_period,
    period_bounds_ms,
    quarter_period,
    range_period,
    year_period,
)
from streams.pipelines import PipelineConfig, Rates

METHODS = ("weighted", "expected", "monte_carlo_p50")


def truncate(deal: Deal, cutoff_ms: int) -> Deal | None:
    """``deal`` as known before ``cutoff_ms`` (module docstring), None if not yet created."""
    obs = deal.observations
    if obs[-1].occurred_at < cutoff_ms:
        return deal
    i = bisect_left(obs, cutoff_ms, key=lambda o: o.occurred_at)
    if i == 0:
        return None
    last = obs[i - 1]
    return replace(
        deal,
        stage=last.stage,
        status=last.status,
        amount=last.amount,
        currency=last.currency,
        expected_close_date=None,
        probability=None,
        observations=obs[:i],
    )


@dataclass(frozen=True, slots=True)
class Backtest:
    """One cut-off and period: each method's forecast and the actual, in cents."""

    cutoff_ms: int
    period: str
    actual_cents: int
    weighted_cents: int  # already won by the cut-off + weighted open deals
    expected: Expected
    monte_carlo: MonteCarlo

    def forecast(self, method: str) -> int:
        if method == "weighted":
            return self.weighted_cents
        if method == "expected":
            return self.expected.total_cents
        if method == "monte_carlo_p50":
            return self.monte_carlo.p50_cents
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")

    def error(self, method: str) -> int:
        return self.forecast(method) - self.actual_cents

    @property
    def inside_p10_p90(self) -> bool:
        return self.monte_carlo.p10_cents <= self.actual_cents <= self.monte_carlo.p90_cents


def backtest(
    deals: Sequence[Deal],
    config: PipelineConfig,
    rates: Rates,
    tz: ZoneInfo,
    cases: Iterable[tuple[int, Period]],
    window_days: float = DEFAULT_WINDOW_DAYS,
    min_exits: int = DEFAULT_MIN_EXITS,
    trials: int = MIN_TRIALS,
    seed: int = 0,
    timing: str = "mean",
) -> list[Backtest]:
    """One :class:`Backtest` per ``(cutoff_ms, period)`` of ``cases``, from the full
    history ``deals``; the Monte Carlo of every case uses ``seed``."""
    final = rows(deals, rates)
    out = []
    for cutoff, period in cases:
        # A deal closed (or deleted) for good before both the learning window and the
        # period contributes nothing to any method: skip it before the costly steps.
        quiet_before = min(cutoff - round(window_days * DAY_MS), period_bounds_ms(period, tz)[0])
        known = [
            d
            for d in (truncate(deal, cutoff) for deal in deals)
            if d is not None and (d.is_open or d.observations[-1].occurred_at >= quiet_before)
        ]
        chains = learn(known, config, cutoff, window_days, min_exits)
        book = rows(known, rates)
        already = won_in_period(book, period, tz)
        out.append(
            Backtest(
                cutoff_ms=cutoff,
                period=period.label,
                actual_cents=won_in_period(final, period, tz),
                weighted_cents=already + weighted(book, config, period),
                expected=expected(book, chains, period, cutoff, tz, timing),
                monte_carlo=simulate(book, chains, period, cutoff, tz, trials, seed, timing),
            )
        )
    return out


def earlier_cases(cutoff_ms: int, period: Period, count: int, tz: ZoneInfo) -> list[tuple[int, Period]]:
    """``count`` backtest cases ending with ``(cutoff_ms, period)``, oldest first: the
    ``count - 1`` periods before it of the same kind (the months before a month
    ``YYYY-MM``, quarters before ``YYYY-Qn``, years before ``YYYY``; any other period is
    shifted back by its own number of days, as a range), each cut at the same place
    relative to its start: the same number of days after its first day (negative: before
    it), at the same time of day.  ValueError if ``count < 1``."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    cut_day = day_of(cutoff_ms, tz)
    offset_days = cut_day - period.first_day
    time_of_day = cutoff_ms - day_start_ms(cut_day, tz)
    cases = [(cutoff_ms, period)]
    p = period
    for _ in range(count - 1):
        p = _previous(p)
        cases.append((day_start_ms(p.first_day + offset_days, tz) + time_of_day, p))
    return cases[::-1]


def _previous(p: Period) -> Period:
    d = date.fromordinal(p.first_day - 1)
    if re.fullmatch(r"\d{4}-\d{2}", p.label):
        return month_period(d.year, d.month)
    if re.fullmatch(r"\d{4}-Q[1-4]", p.label):
        return quarter_period(d.year, (d.month - 1) // 3 + 1)
    if re.fullmatch(r"\d{4}", p.label):
        return year_period(d.year)
    n = p.last_day - p.first_day + 1
    return range_period(date.fromordinal(p.first_day - n), date.fromordinal(p.last_day - n))


@dataclass(frozen=True, slots=True)
class MethodError:
    method: str
    mean_error_cents: float  # bias: > 0 over-forecasts
    wape: float | None  # sum |error| / sum actual; None when nothing was won


@dataclass(frozen=True, slots=True)
class Summary:
    periods: int
    coverage: float | None  # share of actuals within P10..P90; None without periods
    errors: tuple[MethodError, ...]


def summarize(results: Sequence[Backtest]) -> Summary:
    """Bias, WAPE per method and the P10..P90 coverage over ``results``."""
    n = len(results)
    actual = sum(r.actual_cents for r in results)
    errors = tuple(
        MethodError(
            method=m,
            mean_error_cents=sum(r.error(m) for r in results) / n if n else 0.0,
            wape=sum(abs(r.error(m)) for r in results) / actual if actual else None,
        )
        for m in METHODS
    )
    coverage = sum(r.inside_p10_p90 for r in results) / n if n else None
    return Summary(periods=n, coverage=coverage, errors=errors)
