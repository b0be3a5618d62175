"""``salesops`` command line: worker, import, simulate, backtest, topics, settings.

Each subcommand builds :class:`~agents.settings.Settings` from the environment once and
passes it down.  Exit status: 0 success, 1 rejected input (import), 2 usage or
configuration error (for ``worker`` also: no usable ``SALESOPS_RESPONDENT_SECRET``, or a
pipelines, rates, quotas or plans file the loader refuses).
``settings`` prints every value with its secrets masked by their type.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from agents.settings import Settings, SettingsError, describe, masked_items, respondent_secret_problem


def _settings_epilog() -> str:
    rows = [f"  {name:<36} default {default!r}\n      {doc}" for name, default, doc in describe()]
    return "settings (environment variables):\n" + "\n".join(rows)


def config_problem(settings: Settings) -> str | None:
    """The loader's message when a configuration file of the worker (pipelines, rates,
    quotas, plans) is missing or invalid, else None: checked before the worker starts,
    so that a bad file is one clear line and exit status 2, not a traceback."""
    from agents.importer import load_config
    from agents.targets import load_files
    from streams.pipelines import ConfigError

    try:
        _config, rates = load_config(settings)
        load_files(settings, rates)
    except ConfigError as exc:
        return str(exc)
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="salesops",
        description="Kafka-native stream processor for sales operations and pulse surveys.",
        epilog=_settings_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("worker", help="run the stream processor (Faust worker)")

    imp = sub.add_parser("import", help="validate a JSON Lines or CSV file and produce it to Kafka")
    imp.add_argument("kind", choices=["deals", "surveys", "invitations"])
    imp.add_argument("file", type=Path)
    imp.add_argument("--format", choices=["jsonl", "csv"], help="default: from the file extension")
    imp.add_argument("--skip-invalid", action="store_true", help="exit 0 even when lines were rejected")
    imp.add_argument("--topic", help="override the target topic")
    imp.add_argument("--no-progress", action="store_true", help="no progress bar")

    sim = sub.add_parser("simulate", help="generate realistic deal lifecycles and survey waves")
    sim.add_argument("--seed", type=int, default=42)
    sim.add_argument("--deals", type=int, default=500, help="number of deals to simulate")
    sim.add_argument("--survey-waves", type=int, default=2, help="number of survey waves")
    sim.add_argument("--employees", type=int, default=120, help="employees invited per wave")
    sim.add_argument("--rate", type=float, default=0.0, help="events per second; 0 = as fast as possible")
    sim.add_argument(
        "--duration", type=float, default=0.0, help="stop after this many seconds (0 = no limit)"
    )
    sim.add_argument("--count", type=int, default=0, help="stop after this many events (0 = all generated)")
    sim.add_argument("--duplicate-rate", type=float, default=0.02, help="share of events delivered twice")
    sim.add_argument(
        "--reorder-rate", type=float, default=0.05, help="share of events delivered out of order"
    )
    sim.add_argument("--stall-rate", type=float, default=0.1, help="share of deals that stall in a stage")
    sim.add_argument("--start", help="event time of the first event (ISO-8601); default: 120 days ago")
    sim.add_argument("--loop", action="store_true", help="keep generating new deals until stopped")
    sim.add_argument(
        "--output-dir",
        type=Path,
        help="write deals.jsonl, surveys.jsonl, invitations.jsonl here instead of producing to Kafka",
    )

    bt = sub.add_parser(
        "backtest",
        help="forecast a period from the deal history cut at a date and compare with what closed",
        description="Read a deal export (the import format: JSON Lines or CSV, validated as the "
        "worker does), cut every deal at --as-of, forecast --period with each method and "
        "compare with everything that closed won in it; with --cutoffs N also the N-1 "
        "periods before it, cut at the same place, and the share of actuals inside P10..P90.",
    )
    bt.add_argument("--as-of", required=True, help="cut-off day YYYY-MM-DD (its start, in SALESOPS_TIMEZONE)")
    bt.add_argument("--period", required=True, help="period to forecast: YYYY-MM, YYYY-Qn, YYYY, FY..., a..b")
    bt.add_argument("--cutoffs", type=int, default=1, help="number of periods (this one and those before)")
    bt.add_argument("--file", type=Path, required=True, help="deal events: a .jsonl or .csv import file")
    bt.add_argument("--format", choices=["jsonl", "csv"], help="default: from the file extension")
    bt.add_argument("--trials", type=int, help="Monte Carlo trials (default SALESOPS_FORECAST_TRIALS)")
    bt.add_argument("--seed", type=int, help="Monte Carlo seed (default SALESOPS_FORECAST_SEED)")
    bt.add_argument(
        "--window-days", type=int, help="learning window in days (default SALESOPS_FORECAST_WINDOW_DAYS)"
    )

    top = sub.add_parser("topics", help="create (or list) the topics salesops uses")
    top.add_argument("--list", action="store_true", help="only list what exists")

    sub.add_parser("settings", help="print the effective settings (secrets masked)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"salesops: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
        stream=sys.stderr,
    )
    if args.command == "worker":
        problem = respondent_secret_problem(settings)
        if problem:
            print(f"salesops: configuration error: {problem}", file=sys.stderr)
            return 2
        problem = config_problem(settings)
        if problem:
            print(f"salesops: configuration error: {problem}", file=sys.stderr)
            return 2
        from agents.app import run_worker

        return run_worker(settings)
    if args.command == "import":
        from agents.importer import run_import

        return run_import(args, settings)
    if args.command == "simulate":
        from agents.simulator import run_simulate

        return run_simulate(args, settings)
    if args.command == "backtest":
        from agents.backtest import run_backtest

        return run_backtest(args, settings)
    if args.command == "topics":
        from agents.topics import run_topics

        return run_topics(args, settings)
    if args.command == "settings":
        for name, shown in sorted(masked_items(settings)):
            print(f"{name}={shown}")
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
