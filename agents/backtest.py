"""``salesops backtest``: how well the forecast would have done, from a deal export.

The deal history comes from an import file (JSON Lines or CSV, the format ``salesops
import`` reads), not from the topic: a backtest is run by an analyst on an export, needs
no broker and reads the same file every time.  Each line goes through exactly what the
worker applies to a deal event (the importer's parsing and validation, the Avro encoding
and the worker's decode and validation); rejected lines are counted and left out.  The
events are folded into deals (any order, duplicates allowed: ``streams.deals.fold``) and
handed to :func:`streams.backtest.backtest` for each cut-off
(:func:`streams.backtest.earlier_cases`).

Output: one table per method (weighted, expected, Monte Carlo P50) with each period's
forecast, actual and error, then each method's bias and WAPE and the share of actuals
inside P10..P90.  Progress goes to stderr, one line per cut-off.  Exit status 2 for bad
arguments, a missing or empty file and configuration errors.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from datetime import date
from pathlib import Path
from typing import TextIO
from zoneinfo import ZoneInfo

from agents.importer import import_lines, load_config
from agents.settings import Settings
from schemas.codec import Codec
from streams.backtest import METHODS, Backtest, backtest, earlier_cases, summarize
from streams.deals import Deal, fold
from streams.events import DealEvent
from streams.forecast import MIN_TRIALS
from streams.periods import PeriodError, day_of, day_start_ms, parse_period
from streams.pipeline_views import money
from streams.pipelines import ConfigError, PipelineConfig, Rates
from streams.validation import Limits, Rejection, validate_deal

METHOD_TITLES = {"weighted": "weighted", "expected": "expected", "monte_carlo_p50": "Monte Carlo P50"}
FAR_FUTURE_MS = 10**15  # a backtest reads history: no event is "too far in the future"


def read_deals(path: Path, fmt: str, config: PipelineConfig, rates: Rates) -> tuple[list[Deal], int]:
    """The deals of an import file and the number of rejected lines."""
    codec = Codec.for_record("DealEvent")
    limits = Limits(now_ms=0, max_future_ms=FAR_FUTURE_MS)
    events: dict[str, list[DealEvent]] = defaultdict(list)

    def collect(_key: bytes, value: bytes) -> None:
        event = validate_deal(codec.decode_plain(value), config, rates, limits)
        if not isinstance(event, Rejection):  # the importer validated it already
            events[event.deal_id].append(event)

    with path.open(encoding="utf-8", errors="surrogateescape", newline="") as fh:
        report = import_lines(fh, "deals", config, rates, 0, collect, fmt=fmt, max_future_ms=FAR_FUTURE_MS)
    return [fold(evs, config) for evs in events.values()], len(report.rejected)


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--as-of must be a day YYYY-MM-DD, got {text!r}") from None


def print_report(results: list[Backtest], currency: str, tz: ZoneInfo, out: TextIO) -> None:
    """A table per method, then the summary (module doc)."""
    for method in METHODS:
        print(f"\n{METHOD_TITLES[method]} ({currency})", file=out)
        print(f"{'period':<24} {'cut-off':<10} {'forecast':>16} {'actual':>16} {'error':>16}", file=out)
        for r in results:
            cut = date.fromordinal(day_of(r.cutoff_ms, tz)).isoformat()
            print(
                f"{r.period:<24} {cut:<10} {money(r.forecast(method)):>16} "
                f"{money(r.actual_cents):>16} {money(r.error(method)):>16}",
                file=out,
            )
    summary = summarize(results)
    print(f"\nsummary over {summary.periods} period(s)", file=out)
    print(f"{'method':<16} {'bias (mean error)':>18} {'WAPE':>8}", file=out)
    for e in summary.errors:
        wape = "-" if e.wape is None else f"{e.wape:.1%}"
        print(f"{METHOD_TITLES[e.method]:<16} {money(round(e.mean_error_cents)):>18} {wape:>8}", file=out)
    inside = sum(r.inside_p10_p90 for r in results)
    coverage = "-" if summary.coverage is None else f"{summary.coverage:.1%}"
    print(
        f"actual inside P10..P90: {inside} of {summary.periods} ({coverage}; 80 % when calibrated)", file=out
    )
    print(f"{'period':<24} {'P10':>16} {'P90':>16} {'actual':>16} inside", file=out)
    for r in results:
        mc = r.monte_carlo
        print(
            f"{r.period:<24} {money(mc.p10_cents):>16} {money(mc.p90_cents):>16} "
            f"{money(r.actual_cents):>16} {'yes' if r.inside_p10_p90 else 'no'}",
            file=out,
        )


def run_backtest(args: argparse.Namespace, settings: Settings, out: TextIO = sys.stdout) -> int:
    def fail(message: str) -> int:
        print(f"salesops backtest: {message}", file=sys.stderr)
        return 2

    tz = ZoneInfo(settings.timezone)
    try:
        as_of = _day(args.as_of)
        period = parse_period(args.period, 0, tz, settings.fiscal_year_start_month)
    except (ValueError, PeriodError) as exc:
        return fail(str(exc))
    if args.period.startswith("last-"):
        return fail(f"--period must be fixed (a month, quarter, year or range), not {args.period!r}")
    if args.cutoffs < 1:
        return fail(f"--cutoffs must be >= 1, got {args.cutoffs}")
    trials = settings.forecast_trials if args.trials is None else args.trials
    if trials < MIN_TRIALS:
        return fail(f"--trials must be >= {MIN_TRIALS}, got {trials}")
    window = settings.forecast_window_days if args.window_days is None else args.window_days
    if window < 1:
        return fail(f"--window-days must be >= 1, got {window}")
    path: Path = args.file
    fmt = args.format or {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv"}.get(path.suffix.lower())
    if fmt is None:
        return fail(f"cannot tell the format of {path} from its extension; pass --format")
    if not path.is_file():
        return fail(f"{path}: no such file")
    try:
        config, rates = load_config(settings)
    except ConfigError as exc:
        return fail(f"configuration error: {exc}")
    started = time.perf_counter()
    deals, rejected = read_deals(path, fmt, config, rates)
    print(
        f"read {len(deals)} deals from {path} ({rejected} rejected lines) "
        f"in {time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )
    if not deals:
        return fail(f"{path}: no valid deal event")
    cases = earlier_cases(day_start_ms(as_of.toordinal(), tz), period, args.cutoffs, tz)
    seed = settings.forecast_seed if args.seed is None else args.seed
    results: list[Backtest] = []
    for i, case in enumerate(cases, start=1):
        t0 = time.perf_counter()
        results += backtest(deals, config, rates, tz, [case], window_days=window, trials=trials, seed=seed)
        print(
            f"cut-off {i}/{len(cases)}: {case[1].label} done in {time.perf_counter() - t0:.1f} s",
            file=sys.stderr,
        )
    print_report(results, rates.reporting_currency, tz, out)
    return 0
