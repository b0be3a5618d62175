"""An independent, plain recomputation of the deal views from the raw JSON Lines file.

Written from docs/metrics.md's definitions without calling ``streams``: if the core and this
disagree, one of them misreads the definition.  Only the figures the integration tests
compare are computed.
"""

from __future__ import annotations

import json
import tomllib
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from statistics import median
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DAY = 86_400_000
# README "Stage aging": entry times counted in cells of 1 minute x 2**level, the smallest
# level at which the stage's entries span at most 1024 cells
AGING_CELLS = 1024
MINUTE = 60_000


def load_config() -> tuple[dict[str, Any], dict[str, Decimal]]:
    pipelines = tomllib.loads((ROOT / "streams/default_pipelines.toml").read_text())["pipeline"]
    rates = tomllib.loads((ROOT / "streams/default_rates.toml").read_text())["rates"]
    return {p["id"]: p for p in pipelines}, {k: Decimal(str(v)) for k, v in rates.items()}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def day(ts: int) -> int:
    return datetime.fromtimestamp(ts / 1000, tz=UTC).date().toordinal()


class DealReference:
    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.pipelines, self.rates = load_config()
        unique = {(e["source"], e["event_id"], int(e["occurred_at"])): e for e in events}
        by_deal: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for e in unique.values():
            by_deal[e["deal_id"]].append(e)
        self.deals = {
            d: sorted(evs, key=lambda e: (int(e["occurred_at"]), f"{e['source']}:{e['event_id']}"))
            for d, evs in by_deal.items()
        }

    def status(self, e: dict[str, Any]) -> str:
        p = self.pipelines.get(e["pipeline"], {})
        if e["event_type"] == "DELETED":
            return "deleted"
        if e["event_type"] == "WON" or e["stage"] == p.get("won_stage"):
            return "won"
        if e["event_type"] == "LOST" or e["stage"] == p.get("lost_stage"):
            return "lost"
        return "open"

    def cents(self, e: dict[str, Any]) -> int:
        return int((Decimal(str(e["amount"])) * self.rates[e["currency"]] * 100).to_integral_value())

    def probability(self, e: dict[str, Any]) -> float:
        if e.get("probability") is not None:
            return float(e["probability"])
        for s in self.pipelines.get(e["pipeline"], {}).get("stages", []):
            if s["id"] == e["stage"]:
                return float(s["probability"])
        return 0.0

    def open_by_stage(self) -> dict[tuple[str, str], tuple[int, int, int]]:
        """(pipeline, stage) -> (deals, value_cents, weighted_cents) over open deals."""
        out: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
        for evs in self.deals.values():
            last = evs[-1]
            if self.status(last) != "open":
                continue
            row = out[(last["pipeline"], last["stage"])]
            cents = self.cents(last)
            row[0] += 1
            row[1] += cents
            # weighted: exact, with the probability as the decimal it is written as
            row[2] += round(cents * Fraction(repr(self.probability(last))))
        return {k: (v[0], v[1], v[2]) for k, v in out.items()}

    def closed_in(self, first_day: int, last_day: int) -> dict[str, dict[str, int]]:
        """Per pipeline: won/lost counts and cents of deals whose final close fell in the days."""
        out: dict[str, dict[str, int]] = defaultdict(
            lambda: {"won": 0, "lost": 0, "won_cents": 0, "lost_cents": 0}
        )
        for evs in self.deals.values():
            final = self.status(evs[-1])
            if final not in ("won", "lost"):
                continue
            i = len(evs) - 1
            while i > 0 and self.status(evs[i - 1]) == final:
                i -= 1
            closing = evs[i]
            if first_day <= day(int(closing["occurred_at"])) <= last_day:
                row = out[evs[-1]["pipeline"]]
                row[final] += 1
                row[f"{final}_cents"] += self.cents(closing)
        return dict(out)

    def aging(self, now_ms: int) -> dict[tuple[str, str], tuple[int, float, float]]:
        """(pipeline, stage) -> (open deals, median days in stage, max days in stage), as
        the README defines them: ages clamped at 0; the median over each deal's cell
        midpoint (clamped to the stage's first..last entry); the max from the first entry."""
        entered: dict[tuple[str, str], list[int]] = defaultdict(list)
        for evs in self.deals.values():
            last = evs[-1]
            if self.status(last) != "open":
                continue
            i = len(evs) - 1
            while i > 0 and evs[i - 1]["stage"] == last["stage"]:
                i -= 1
            entered[(last["pipeline"], last["stage"])].append(int(evs[i]["occurred_at"]))
        out = {}
        for key, times in entered.items():
            first, last_entry = min(times), max(times)
            width = MINUTE
            while last_entry // width - first // width + 1 > AGING_CELLS:
                width *= 2
            mids = [min(max(e // width * width + width // 2, first), last_entry) for e in times]
            ages = [max(0, now_ms - m) / DAY for m in mids]
            out[key] = (len(times), median(ages), max(0, now_ms - first) / DAY)
        return out

    def open_value_by_pipeline(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for (pipeline, _stage), (_n, cents, _w) in self.open_by_stage().items():
            out[pipeline] += cents
        return dict(out)
