"""The bench's results: rows, the markdown tables, and the arithmetic on polled figures.

Pure (no Kafka, no processes): the unit tests check it with hand-computed cases.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Row:
    """One line of the report.  ``headline`` rows are the issue's targets (the first
    table); the others say where the time goes (the second)."""

    metric: str
    value: float | None
    unit: str
    target: str = ""
    met: bool | None = None
    note: str = ""
    headline: bool = False


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        return row


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        if value == float("inf"):
            return "> largest bucket"
        return f"{value * 1000:,.0f} ms" if value < 10 else f"{value:,.1f} s"
    if unit == "B":
        return f"{value:,.0f} B"
    if unit == "x":
        return f"{value:.2f} x"
    if unit == "us":
        return f"{value:,.0f} us/event"
    return f"{value:,.0f} {unit}"


def _markdown(head: tuple[str, ...], body: Sequence[tuple[str, ...]]) -> list[str]:
    return [
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
        *("| " + " | ".join(cells) + " |" for cells in body),
    ]


def render(report: Report) -> str:
    """The headline table (metric, value, target, met) and the breakdown (metric, value,
    note), both as markdown."""
    head = [
        (
            r.metric,
            fmt(r.value, r.unit),
            r.target or "-",
            "-" if r.met is None else ("yes" if r.met else "no"),
        )
        for r in report.rows
        if r.headline
    ]
    rest = [(r.metric, fmt(r.value, r.unit), r.note) for r in report.rows if not r.headline]
    return "\n".join(
        [
            *_markdown(("metric", "value", "target", "met"), head),
            "",
            *_markdown(("breakdown", "value", "note"), rest),
        ]
    )


def forecast_rows(seconds: float, peak_bytes: int, deals: int, trials: int) -> list[Row]:
    """The forecast's headline rows (issue 11): Monte Carlo time and traced peak memory
    for ``deals`` open deals x ``trials`` trials (tests/bench/forecast_bench.py)."""
    what = f"forecast Monte Carlo, {deals:,} open deals x {trials:,} trials"
    return [
        Row(f"{what}: time", seconds, "s", note="one core, seeded, new-deal sources included", headline=True),
        Row(f"{what}: peak memory", peak_bytes, "B", note="tracemalloc peak of one run", headline=True),
    ]


def quantile(buckets_before: dict[float, float], buckets_after: dict[float, float], q: float) -> float | None:
    """``histogram_quantile`` over bucket deltas: linear inside the bucket, so only as fine
    as the buckets; +Inf when the quantile lies past the last finite bound."""
    bounds = sorted(buckets_after)
    delta = [(b, buckets_after[b] - buckets_before.get(b, 0.0)) for b in bounds]
    total = delta[-1][1] if delta else 0.0
    if total <= 0:
        return None
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in delta:
        if count >= rank:
            if bound == float("inf"):
                return float("inf")
            span = count - prev_count
            return prev_bound + (bound - prev_bound) * ((rank - prev_count) / span if span else 1.0)
        prev_bound, prev_count = bound, count
    return float("inf")


@dataclass
class Progress:
    """Counts polled from a process's counter while it works through a topic."""

    t0: float
    points: list[tuple[float, float, float]] = field(default_factory=list)  # (s since t0, count, cpu s)

    def first(self) -> tuple[float, float, float]:
        return next(p for p in self.points if p[1] > 0)

    def at(self, count: float) -> float | None:
        return next((t for t, c, _ in self.points if c >= count), None)

    def summary(self) -> dict[str, Any]:
        """Rates from the first poll that saw events to the last: start-up, group join and
        recovery are left out (``first_event_s`` says how long they took)."""
        t_first, c_first, cpu_first = self.first()
        t_done, c_done, cpu_done = self.points[-1]
        span = t_done - t_first
        rate = (c_done - c_first) / span if span > 0 else None
        lo, hi = self.at(0.1 * c_done), self.at(0.9 * c_done)
        steady = 0.8 * c_done / (hi - lo) if lo is not None and hi is not None and hi > lo else None
        return {
            "counted": c_done,
            "first_event_s": t_first,
            "done_s": t_done,
            "sustained_rate": rate,
            "steady_rate_10_90": steady,
            "cpu_cores_used": (cpu_done - cpu_first) / span if span > 0 else None,
            "cpu_us_per_event": (cpu_done - cpu_first) / max(c_done - c_first, 1) * 1e6,
            "progress": [(round(t, 1), c) for t, c, _ in self.points],
        }
