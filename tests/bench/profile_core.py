"""The pure per-event work of the deal path, stage by stage, in one process.

``python -m tests.bench.profile_core [--events N] [--seed S] [--repeat R] [--profile]``
generates ``N`` simulated deal events (the simulator's lifecycles over a four-month
backfill, delivered with the ``salesops simulate`` defaults: 2 % duplicates, 5 %
reordering), encodes them with ``schemas/codec.py`` and then times, per event:

* ``decode``: the worker's hot-path decode of a DealEvent value (``Codec.decode_plain``:
  logical types as plain values); ``decode (reference types)`` is ``Codec.decode``,
  which builds datetime/Decimal/date objects, for comparison only;
* ``validate``: ``streams.validation.validate_deal``;
* ``step``: ``streams.deal_step.apply_batch`` over one :class:`DealPartition` (watermark
  clock, as a replay runs), in batches of the worker's size, with the partition's due
  stall checks fed back as items of the next batch, as the worker does;
* ``table read`` / ``table write``: the deals table is a dict of
  ``agents.records.DealRecord`` bytes: ``stored()`` parses a record
  (``DealRecord.from_bytes``), each changed deal is written once per batch
  (``DealRecord.to_bytes``).

It prints microseconds of process CPU time per event for each stage (the best of
``--repeat`` runs: CPU time, because the machine may be shared) and the whole in-process
rate (decode + validate + step + table bytes), then with ``--profile`` a cProfile of one more run of the
same work, sorted by own time.  No Kafka, no Faust: the floor under the worker's cost.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from agents.records import DealRecord
from agents.settings import Settings
from agents.simulator import RecordEncoder, deliver, generate_deals
from schemas.codec import Codec
from streams import stalled
from streams.deal_step import DealPartition, StoredDeal, apply_batch
from streams.events import DAY_MS, DealEvent
from streams.pipelines import DEFAULT_PIPELINES_FILE, DEFAULT_RATES_FILE, load_pipelines, load_rates
from streams.validation import Limits, validate_deal

HISTORY_DAYS = 120
DUPLICATE_RATE = 0.02
REORDER_RATE = 0.05
BATCH = 2000  # the worker's BATCH_MAX_EVENTS
NOW_MS = 1_767_225_600_000  # 2026-01-01T00:00Z: fixed, so a seed gives the same events


def encoded_events(n_events: int, seed: int, now_ms: int = NOW_MS) -> list[bytes]:
    """``n_events`` simulated deal events as the worker receives them (Avro values)."""
    settings = Settings()
    config = load_pipelines(settings.pipelines_file or DEFAULT_PIPELINES_FILE)
    rates = load_rates(settings.rates_file or DEFAULT_RATES_FILE)
    encoder = RecordEncoder(config, rates)
    events: list[dict[str, Any]] = []
    n_deals = max(n_events // 4, 1)
    while len(events) < n_events:
        canonical = generate_deals(seed, n_deals, now_ms - HISTORY_DAYS * DAY_MS, config, now_ms=now_ms)
        events = deliver(canonical, seed, DUPLICATE_RATE, REORDER_RATE)
        n_deals = int(n_deals * 1.3) + 1
    return [encoder.encode("deals", e, now_ms)[1] for e in events[:n_events]]


@dataclass
class Timings:
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, s: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + s


class Core:
    """decode -> validate -> apply_batch over one partition with a dict of record bytes."""

    def __init__(self, now_ms: int = NOW_MS) -> None:
        settings = Settings()
        self.config = load_pipelines(settings.pipelines_file or DEFAULT_PIPELINES_FILE)
        self.rates = load_rates(settings.rates_file or DEFAULT_RATES_FILE)
        self.codec = Codec.for_record("DealEvent")
        self.limits = Limits(now_ms, settings.max_future_s * 1000)
        lateness_ms = settings.allowed_lateness_s * 1000
        self.part = DealPartition(self.config, self.rates, ZoneInfo(settings.timezone), lateness_ms)
        self.table: dict[str, bytes] = {}
        self.timings = Timings()
        self.checks = 0
        self.problems = 0
        self.alerts = 0

    def decode(self, values: list[bytes]) -> list[dict[str, Any]]:
        t0 = time.process_time()
        decode = self.codec.decode_plain
        out = [decode(v) for v in values]
        self.timings.add("decode", time.process_time() - t0)
        return out

    def validate(self, raws: list[dict[str, Any]]) -> list[DealEvent]:
        t0 = time.process_time()
        config, rates, limits = self.config, self.rates, self.limits
        out = [e for r in raws if isinstance(e := validate_deal(r, config, rates, limits), DealEvent)]
        self.timings.add("validate", time.process_time() - t0)
        return out

    def step(self, events: list[DealEvent]) -> None:
        """One batch: the due stall checks, then ``events``; each changed deal written once."""
        table = self.table
        read_s = 0.0

        def stored(deal_id: str) -> StoredDeal | None:
            nonlocal read_s
            raw = table.get(deal_id)
            if raw is None:
                return None
            t = time.process_time()
            rec = DealRecord.from_bytes(raw)
            out = StoredDeal(rec.deal, stalled.AlertState.from_dict(rec.alert))
            read_s += time.process_time() - t
            return out

        items: list[DealEvent | stalled.DueCheck] = [*self.part.due_checks()]
        self.checks += len(items)
        items.extend(events)
        t0 = time.process_time()
        outcome = apply_batch(self.part, stored, items)
        t1 = time.process_time()
        for deal_id, rec in outcome.changed.items():
            alert = rec.alert.to_dict() if rec.alert else None
            table[deal_id] = DealRecord(0, rec.deal, alert).to_bytes()
        t2 = time.process_time()
        self.timings.add("step", t1 - t0 - read_s)
        self.timings.add("table read", read_s)
        self.timings.add("table write", t2 - t1)
        self.problems += len(outcome.problems)
        self.alerts += len(outcome.transitions)

    def run(self, values: list[bytes]) -> None:
        """Batch by batch, as the worker fetches them: decode, validate, step."""
        for i in range(0, len(values), BATCH):
            self.step(self.validate(self.decode(values[i : i + BATCH])))


def _timed(fn: Callable[[bytes], object], values: list[bytes]) -> float:
    t0 = time.process_time()
    for v in values:
        fn(v)
    return time.process_time() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=3, help="runs; each stage's best is reported")
    ap.add_argument("--profile", action="store_true", help="also print a cProfile of the same work")
    ap.add_argument("--top", type=int, default=25, help="profile rows to print")
    args = ap.parse_args(argv)

    values = encoded_events(args.events, args.seed)
    n = len(values)
    Core().run(values[: min(n, 5000)])  # warm caches and first-use code paths
    best: dict[str, float] = {}
    reference_s = float("inf")
    for _ in range(args.repeat):  # the machine is shared: keep each stage's best run
        core = Core()
        reference_s = min(reference_s, _timed(core.codec.decode, values))
        core.run(values)
        for stage, s in core.timings.seconds.items():
            best[stage] = min(best.get(stage, s), s)
    total = sum(best.values())
    print(
        f"{n:,} deal events, {len(core.table):,} deals, {core.checks:,} stall checks, "
        f"{core.alerts:,} alert transitions, {core.problems:,} problems; best of {args.repeat} runs"
    )
    print(f"{'stage':<28} {'us/event':>9}")
    for stage in ("decode", "validate", "table read", "step", "table write"):
        print(f"{stage:<28} {best[stage] / n * 1e6:9.1f}")
    print(f"{'total':<28} {total / n * 1e6:9.1f}   = {n / total:,.0f} events/s")
    print(f"{'decode (reference types)':<28} {reference_s / n * 1e6:9.1f}   (Codec.decode, for comparison)")

    if args.profile:
        prof = cProfile.Profile()
        profiled = Core()
        prof.enable()
        profiled.run(values)
        prof.disable()
        print()
        pstats.Stats(prof).sort_stats("tottime").print_stats(args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
