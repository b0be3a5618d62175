"""Pipeline, funnel, aging and movement views: sums of per-deal contributions.

docs/design.md, "Derived views, not counters": a view never counts events.  It holds the sum, over
the deals of one partition, of what each deal's *whole state* contributes.  When a deal
changes, :meth:`PipelineViews.replace` subtracts the old state's contribution and adds the
new one's, so a late event that rewrites a deal's history corrects every number exactly,
and a duplicate (same state) changes nothing.  After recovery the views are rebuilt with
``replace(None, deal)`` for every deal of the recovered table.  Money is integer cents of
the reporting currency, so add/subtract is exact, and a counter that reaches 0 is deleted:
removing every deal leaves exactly the empty view.

A worker publishes :meth:`PipelineViews.partial` per partition; global numbers come from
:func:`merge_partials` over the latest partial of every partition, then the query
functions :func:`pipeline_rows`, :func:`funnel`, :func:`aging` and :func:`movement`.
Prometheus gauges read ``pipeline_rows(p)["by_stage"]`` (pipeline value) and
``funnel(...)["pipelines"][*]["stages"]`` (conversion ratios); no other helper is needed.

What one deal contributes (``tz`` decides the calendar day of an instant):

* **Open pipeline** (status open): by (pipeline, stage), owner, team and region (None ->
  ``"unknown"``): ``deals`` 1, ``value_cents``, ``weighted_cents`` = value_cents x p
  rounded half to even, computed exactly with ``p`` as the decimal it is written as
  (0.35, not the binary float nearest to it), ``p`` the deal's probability, else the
  stage default, else 0 (unknown stage).  A currency without a rate counts as 0 cents and
  ``unpriced`` 1, so it is visible.
* **Funnel** (known pipelines only, per open stage and day).  The deal's observations are
  reduced to *positions*: its stage while open, ``won``, or ``out`` (lost/deleted); a
  run of equal positions is one funnel visit.  Unlike :meth:`Deal.history`, a close or
  delete without a stage change therefore ends the visit, and a restore starts a new one.
  For a visit of open stage S (rank r): ``entered[day(start)]``; when it ends at time t,
  ``exited[day(t)]``, plus ``advanced`` if the next position ranks higher (won ranks above
  every open stage; each skipped stage in between counts one entered, exited, advanced,
  cohort_entered and cohort_advanced at t), or ``regressed`` if it ranks lower.  A move to
  lost/deleted or to an unknown stage only counts ``exited``.  ``cohort_advanced[day
  (start)]`` if any later position ranks above S.  Every entry (skipped ones included) is
  also a cohort entry on the same day, so ``cohort_entered`` equals ``entered`` and is not
  stored; :func:`funnel` reports both.  A deal first seen in a later stage did not pass
  the earlier ones.
* **Closed** (status won/lost), per pipeline and close day (:attr:`Deal.closed_at`):
  ``won_count``/``won_cents`` or ``lost_count``/``lost_cents`` (amount at the closing
  observation), and ``cycle_ms_sum`` (closed_at - created_at) for won deals.
* **Aging** (status open): the ``entered_at`` of the current stage visit, as a multiset per
  (pipeline, stage).  The multiset stays in memory; the partial carries a bounded summary
  of it (:func:`aging_summary`: exact count, first and last entry, at most
  ``AGING_CELLS`` histogram cells), so a partial does not grow with the number of deals.
* **Movement**, per pipeline and calendar month: the deal's open value v(t) (reporting
  cents if open, else 0) changes only at observations; each change a -> b is classified:
  first observation and open -> ``new`` b; not open -> open: ``reopened`` b; open -> open:
  ``increased`` b-a or ``decreased`` a-b; open -> won/lost/deleted: first the amount change
  (increased/decreased by amount-a), then ``won``/``lost``/``deleted`` += amount.  So for
  every month, new + reopened + increased - decreased - won - lost - deleted is the net
  change of the open value, and the open value at any month start is a prefix sum.

A deal's contribution depends on nothing but its current state (and the views' fixed
config, rates and time zone), or subtracting it later would not cancel what was added:
funnel and movement use the deal's *current* pipeline for its whole history, and every
amount is converted at the configured rates, not the rate of the day (new rates take
effect by a restart, which rebuilds the views).  Months and days are those of the views'
time zone.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from datetime import date
from decimal import Decimal
from fractions import Fraction
from itertools import accumulate
from typing import Any
from zoneinfo import ZoneInfo

from streams.deals import CLOSED_STATUSES, OPEN, WON, Deal, Observation
from streams.events import DAY_MS
from streams.periods import Period, PeriodError, day_of
from streams.pipelines import PipelineConfig, Rates

PARTIAL_VERSION = 2  # 2: aging as a bounded summary (1 listed every open deal)
UNKNOWN = "unknown"
OPEN_FIELDS = ("deals", "value_cents", "weighted_cents", "unpriced")
# a row's fields in the order partial() has always listed them (by name)
_OPEN_FIELD_ORDER = sorted((name, i) for i, name in enumerate(OPEN_FIELDS))
FUNNEL_COUNTERS = ("entered", "exited", "advanced", "regressed", "cohort_advanced")
# what a skipped stage counts at the jump: it was entered, left forwards, and reached a later stage
_PASSED_THROUGH = ("entered", "exited", "advanced", "cohort_advanced")
_NONE: dict[str, float] = {}
CLOSED_FIELDS = ("won_count", "won_cents", "lost_count", "lost_cents", "cycle_ms_sum")
MOVEMENT_FIELDS = ("new", "reopened", "increased", "decreased", "won", "lost", "deleted")
_DIMENSIONS = ("owner", "team", "region")

# Day buckets are cached per 15-minute slice of UTC time: every time-zone offset in use is
# a multiple of 15 minutes, so a slice lies within one local day.  A slice whose two ends
# fall on different days (historic odd offsets) is never cached.
_SLICE_MS = 15 * 60 * 1000
_MAX_CACHED_SLICES = 1 << 20

# Aging summary: entry times are counted in cells of AGING_BASE_MS x 2**level, aligned on
# the epoch, at the smallest level whose cells span the stage's entries in AGING_CELLS
# cells or fewer.  Cells of one level nest exactly in those of the next, so summaries of
# different levels merge exactly (coarsen to the common level).
AGING_CELLS = 1024
AGING_BASE_MS = 60_000
# exact ratios of the probabilities seen (few distinct values: stage defaults, overrides)
_RATIOS: dict[float, tuple[int, int]] = {}
_MAX_RATIOS = 4096

# where the helpers of PipelineViews.replace put (counter, change) pairs
_Emit = Callable[[tuple[tuple[Any, ...], int]], None]

_OUT = "\x00out"  # position of a lost or deleted deal; cannot collide with a stage id
_WON = "\x00won"


class PipelineViews:
    """Per-partition views, kept incrementally with :meth:`replace`; see the module doc."""

    def __init__(self, config: PipelineConfig, rates: Rates, tz: ZoneInfo) -> None:
        self._config = config
        self._rates = rates
        self._tz = tz
        # Open pipeline rows: (dimension, a, b) -> [deals, value_cents, weighted_cents,
        # unpriced] (OPEN_FIELDS), not all 0; dimension "stage": a, b = pipeline, stage;
        # else a = value, b = "".  A row changes as a whole, so it is one entry.
        self._open: dict[tuple[str, str, str], list[int]] = {}
        # Everything else: flat tuple key -> non-zero int.  Key shapes, by first element:
        #   "f", pipeline, stage, counter, day   funnel (day = date ordinal)
        #   "c", pipeline, day, field            closed deals
        #   "a", pipeline, stage, entered_at     aging multiset (value = multiplicity)
        #   "m", pipeline, month, field          movement; month = year * 12 + month - 1
        self._counts: dict[tuple[Any, ...], int] = {}
        self._ranks = {
            pid: {s.id: i for i, s in enumerate(p.stages)} | {p.won_stage: len(p.stages)}
            for pid, p in config.pipelines.items()
        }
        self._open_stages = {pid: p.open_stage_ids for pid, p in config.pipelines.items()}
        self._probabilities = {
            pid: {s.id: s.probability for s in p.stages} for pid, p in config.pipelines.items()
        }
        self._slice_days: dict[int, int] = {}
        self._months: dict[int, int] = {}

    def replace(self, old: Deal | None, new: Deal | None) -> None:
        """Swap one deal's contribution: ``old`` is the state previously added (None for a
        new deal), ``new`` the state now in the table (None when it is removed).

        Costs what changed, not both deals' whole contributions: the part that depends on
        the current state (open pipeline, aging, closed) is swapped only when its inputs
        differ, and the movement and funnel counts are emitted by a left-to-right walk
        over the observations (:meth:`_walk`) whose emissions for the observations the two
        states share as a prefix are identical, so only those after it are swapped."""
        if old is new:
            return
        delta: list[tuple[tuple[Any, ...], int]] = []  # (counter, change), zeros possible
        emit = delta.append
        self._swap_current(old, new, emit)
        if old is not None and new is not None and old.pipeline == new.pipeline:
            a, b = old.observations, new.observations
            n = min(len(a), len(b))
            p = 0
            while p < n and (a[p] is b[p] or a[p] == b[p]):
                p += 1
            if p < len(a):
                self._walk(old.pipeline, a, -1, emit, p)
            if p < len(b):
                self._walk(new.pipeline, b, 1, emit, p)
        else:
            if old is not None:
                self._walk(old.pipeline, old.observations, -1, emit)
            if new is not None:
                self._walk(new.pipeline, new.observations, 1, emit)
        counts = self._counts
        for key, d in delta:
            if d:
                total = counts.get(key, 0) + d
                if total:
                    counts[key] = total
                else:
                    del counts[key]

    def partial(self) -> dict[str, Any]:
        """The JSON-able snapshot of this partition (structure in :func:`empty_partial`).
        Counters that are 0 are absent; its size grows with the number of distinct
        dimension values and days, never with the number of deals of one stage."""
        out = empty_partial()
        open_, funnel_, closed, aging_, movement_ = (
            out["open"],
            out["funnel"],
            out["closed"],
            out["aging"],
            out["movement"],
        )
        iso: dict[int, str] = {}
        entries: dict[tuple[str, str], list[tuple[int, int]]] = {}

        def day_label(day: int) -> str:
            s = iso.get(day)
            if s is None:
                s = iso[day] = date.fromordinal(day).isoformat()
            return s

        for (dim, a, b), row in sorted(self._open.items()):
            fields = {name: row[i] for name, i in _OPEN_FIELD_ORDER if row[i]}
            if dim == "stage":
                open_["by_stage"].setdefault(a, {})[b] = fields
            else:
                open_[f"by_{dim}"][a] = fields
        # Kinds differ in their first element, so tuple comparison never mixes str and int.
        for key, n in sorted(self._counts.items()):
            kind = key[0]
            if kind == "f":
                _, pid, stage, counter, day = key
                stage_counters = funnel_.setdefault(pid, {}).setdefault(stage, {})
                stage_counters.setdefault(counter, {})[day_label(day)] = n
            elif kind == "c":
                _, pid, day, field = key
                closed.setdefault(pid, {}).setdefault(day_label(day), {})[field] = n
            elif kind == "a":
                _, pid, stage, entered_at = key
                entries.setdefault((pid, stage), []).append((entered_at, n))
            else:
                _, pid, month, field = key
                label = f"{month // 12:04d}-{month % 12 + 1:02d}"
                movement_.setdefault(pid, {}).setdefault(label, {})[field] = n
        for (pid, stage), stage_entries in entries.items():
            aging_.setdefault(pid, {})[stage] = aging_summary(stage_entries)
        return out

    # -- contributions ----------------------------------------------------------------

    def _day(self, ts: int) -> int:
        s = ts // _SLICE_MS
        day = self._slice_days.get(s)
        if day is None:
            start = s * _SLICE_MS
            first, last = day_of(start, self._tz), day_of(start + _SLICE_MS - 1, self._tz)
            day = first if first == last else -1
            if len(self._slice_days) >= _MAX_CACHED_SLICES:
                self._slice_days.clear()
            self._slice_days[s] = day
        return day if day >= 0 else day_of(ts, self._tz)

    def _month(self, day: int) -> int:
        m = self._months.get(day)
        if m is None:
            d = date.fromordinal(day)
            m = self._months[day] = d.year * 12 + d.month - 1
        return m

    def _current_inputs(self, deal: Deal | None) -> tuple[Any, ...] | None:
        """Everything the open, aging and closed counts of ``deal`` depend on (None: none)."""
        if deal is None:
            return None
        status = deal.status
        if status == OPEN:
            return (
                deal.pipeline,
                deal.stage,
                deal.amount,
                deal.currency,
                deal.probability,
                deal.owner_id,
                deal.team,
                deal.region,
                deal.current_visit().entered_at,
            )
        if status in CLOSED_STATUSES:
            closing = deal.closing_observation()
            assert closing is not None
            return (deal.pipeline, status, closing, deal.created_at)
        return None

    def _swap_current(self, old: Deal | None, new: Deal | None, emit: _Emit) -> None:
        """Replace the open pipeline, aging and closed counts of ``old`` by those of ``new``
        when their inputs differ; open dimensions whose key and figures stay are skipped."""
        a, b = self._current_inputs(old), self._current_inputs(new)
        if a == b:
            return
        old_open = self._open_figures(old) if old is not None and old.status == OPEN else None
        new_open = self._open_figures(new) if new is not None and new.status == OPEN else None
        if old_open is not None and new_open is not None:
            before, after = old_open[4:], new_open[4:]
            for x, y in zip(old_open[:4], new_open[:4], strict=True):
                if x != y:
                    self._add_open(x, before, -1)
                    self._add_open(y, after, 1)
                elif before != after:  # same row: only its figures change
                    row = self._open[x]
                    row[1] += after[0] - before[0]
                    row[2] += after[1] - before[1]
                    row[3] += after[2] - before[2]
        else:
            for figures, sign in ((old_open, -1), (new_open, 1)):
                if figures is not None:
                    for dim_key in figures[:4]:
                        self._add_open(dim_key, figures[4:], sign)
        aged: list[tuple[Any, ...] | None] = [None, None]
        for i, (deal, inputs, sign) in enumerate(((old, a, -1), (new, b, 1))):
            if deal is None or inputs is None:
                continue
            if deal.status == OPEN:
                aged[i] = ("a", deal.pipeline, deal.stage, inputs[-1])
            else:
                self._add_closed(deal, inputs[2], sign, emit)
        if aged[0] != aged[1]:
            if aged[0] is not None:
                emit((aged[0], -1))
            if aged[1] is not None:
                emit((aged[1], 1))

    def _open_figures(self, deal: Deal) -> tuple[Any, ...]:
        """(stage key, owner key, team key, region key, value, weighted, unpriced) of an open deal."""
        pid = deal.pipeline
        amount_cents = self._rates.to_reporting_cents(deal.amount, deal.currency)
        cents = 0 if amount_cents is None else amount_cents
        p = deal.probability
        if p is None:
            p = self._probabilities.get(pid, _NONE).get(deal.stage, 0.0)
        return (
            ("stage", pid, deal.stage),
            ("owner", deal.owner_id or UNKNOWN, ""),
            ("team", deal.team or UNKNOWN, ""),
            ("region", deal.region or UNKNOWN, ""),
            cents,
            weighted_cents(cents, p),
            1 if amount_cents is None else 0,
        )

    def _add_open(self, row_key: tuple[str, str, str], figures: tuple[Any, ...], sign: int) -> None:
        row = self._open.get(row_key)
        if row is None:
            row = self._open[row_key] = [0, 0, 0, 0]
        row[0] += sign
        row[1] += sign * figures[0]
        row[2] += sign * figures[1]
        row[3] += sign * figures[2]
        if not (row[0] or row[1] or row[2] or row[3]):
            del self._open[row_key]

    def _add_closed(self, deal: Deal, closing: Observation, sign: int, emit: _Emit) -> None:
        pid = deal.pipeline
        cents = self._rates.to_reporting_cents(closing.amount, closing.currency) or 0
        day = self._day(closing.occurred_at)
        if deal.status == WON:
            emit((("c", pid, day, "won_count"), sign))
            emit((("c", pid, day, "won_cents"), sign * cents))
            emit((("c", pid, day, "cycle_ms_sum"), sign * (closing.occurred_at - deal.created_at)))
        else:
            emit((("c", pid, day, "lost_count"), sign))
            emit((("c", pid, day, "lost_cents"), sign * cents))

    def _walk(self, pid: str, obs: tuple[Observation, ...], sign: int, emit: _Emit, start: int = 0) -> None:
        """Emit ``sign`` x the movement and funnel counts of ``obs[start:]``.

        The walk goes left to right and what observation j emits depends only on the state
        after ``obs[:j]`` and on ``obs[j]``; so two observation sequences that share a
        prefix emit the same counts for it (:meth:`replace` walks only past it).  The state:
        the previous observation (movement), the current funnel position and rank, and the
        open-stage runs not yet outranked by a later run (``pending``, ranks non-increasing:
        a later run of higher rank makes each of them ``cohort_advanced`` on its first day).
        """
        ranks = self._ranks.get(pid)
        stages = self._open_stages.get(pid, ())
        won_rank = len(stages)
        to_cents = self._rates.to_reporting_cents
        day_of_ts = self._day
        pending: list[tuple[int, str, int]] = []  # (rank, stage, first time) of open-stage runs
        run_pos: str | None = None
        run_rank: int | None = None
        prev: Observation | None = None
        for o in obs[:start]:
            if ranks is not None:
                if o.status == OPEN:
                    pos, rank = o.stage, ranks.get(o.stage)
                elif o.status == WON:
                    pos, rank = _WON, won_rank
                else:
                    pos, rank = _OUT, None
                if pos != run_pos:
                    if rank is not None:
                        while pending and pending[-1][0] < rank:
                            pending.pop()
                        if rank < won_rank:
                            pending.append((rank, pos, o.occurred_at))
                    run_pos, run_rank = pos, rank
            prev = o

        last_amount: Decimal | None = None
        last_currency = ""
        last_cents = 0
        for o in obs[start:]:
            st = o.status
            is_open = st == OPEN
            prev_open = prev is not None and prev.status == OPEN
            day = -1
            if is_open or prev_open:
                if o.amount != last_amount or o.currency != last_currency:
                    last_cents = to_cents(o.amount, o.currency) or 0
                    last_amount, last_currency = o.amount, o.currency
                cents = last_cents
                day = day_of_ts(o.occurred_at)
                month = self._month(day)
                if prev is None:
                    emit((("m", pid, month, "new"), sign * cents))
                elif not prev_open:
                    emit((("m", pid, month, "reopened"), sign * cents))
                else:
                    prev_value = to_cents(prev.amount, prev.currency) or 0
                    change = cents - prev_value
                    if change > 0:
                        emit((("m", pid, month, "increased"), sign * change))
                    elif change < 0:
                        emit((("m", pid, month, "decreased"), -sign * change))
                    if not is_open:
                        emit((("m", pid, month, st), sign * cents))
            prev = o

            if ranks is None:
                continue
            if is_open:
                pos, rank = o.stage, ranks.get(o.stage)
            elif st == WON:
                pos, rank = _WON, won_rank
            else:
                pos, rank = _OUT, None
            if pos == run_pos:
                continue
            if day < 0:
                day = day_of_ts(o.occurred_at)
            if run_pos is not None and run_rank is not None and run_rank < won_rank:
                emit((("f", pid, run_pos, "exited", day), sign))
                if rank is not None and rank > run_rank:
                    emit((("f", pid, run_pos, "advanced", day), sign))
                    for skipped in stages[run_rank + 1 : rank]:
                        for counter in _PASSED_THROUGH:
                            emit((("f", pid, skipped, counter, day), sign))
                elif rank is not None:
                    emit((("f", pid, run_pos, "regressed", day), sign))
            if rank is not None:
                while pending and pending[-1][0] < rank:
                    _, stage, entered_at = pending.pop()
                    emit((("f", pid, stage, "cohort_advanced", day_of_ts(entered_at)), sign))
                if rank < won_rank:
                    emit((("f", pid, pos, "entered", day), sign))
                    pending.append((rank, pos, o.occurred_at))
            run_pos, run_rank = pos, rank


def weighted_cents(cents: int, probability: float) -> int:
    """``cents`` x ``probability`` rounded half to even, exact: the probability is taken as
    the shortest decimal that reads back as the float (0.35 is 35/100), so no float
    product loses cents however large the amount."""
    ratio = _RATIOS.get(probability)
    if ratio is None:
        if len(_RATIOS) >= _MAX_RATIOS:
            _RATIOS.clear()
        ratio = _RATIOS[probability] = Fraction(repr(probability)).as_integer_ratio()
    num, den = ratio
    q, r = divmod(cents * num, den)
    if 2 * r > den or (2 * r == den and q % 2):
        q += 1
    return q


def aging_level(first: int, last: int, at_least: int = 0) -> int:
    """The smallest level >= ``at_least`` whose cells (AGING_BASE_MS x 2**level ms, aligned
    on the epoch) cover the entry times ``first``..``last`` in at most AGING_CELLS cells."""
    level = at_least
    while last // (AGING_BASE_MS << level) - first // (AGING_BASE_MS << level) >= AGING_CELLS:
        level += 1
    return level


def aging_summary(entries: Iterable[tuple[int, int]]) -> dict[str, Any]:
    """The bounded aging summary of one (pipeline, stage) from ``(entered_at, count)``
    pairs (count > 0, at least one pair)::

        {"open": n, "first": min entered_at, "last": max entered_at,
         "level": k, "cells": [[cell, count], ...]}   # cell = entered_at // (60 s x 2**k)

    ``open``, ``first`` and ``last`` are exact; cells are sorted, at most AGING_CELLS."""
    pairs = list(entries)
    first = min(e for e, _ in pairs)
    last = max(e for e, _ in pairs)
    level = aging_level(first, last)
    width = AGING_BASE_MS << level
    cells: defaultdict[int, int] = defaultdict(int)
    for entered_at, n in pairs:
        cells[entered_at // width] += n
    return {
        "open": sum(n for _, n in pairs),
        "first": first,
        "last": last,
        "level": level,
        "cells": [[c, n] for c, n in sorted(cells.items())],
    }


def merge_aging_summaries(summaries: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Exact merge of summaries of disjoint sets of deals: equal to the summary of their
    union (counts add, first/last are the min/max, cells coarsen to the common level)."""
    parts = list(summaries)
    first = min(s["first"] for s in parts)
    last = max(s["last"] for s in parts)
    level = aging_level(first, last, max(s["level"] for s in parts))
    cells: defaultdict[int, int] = defaultdict(int)
    for s in parts:
        shift = level - s["level"]
        for c, n in s["cells"]:
            cells[c >> shift] += n
    return {
        "open": sum(s["open"] for s in parts),
        "first": first,
        "last": last,
        "level": level,
        "cells": [[c, n] for c, n in sorted(cells.items())],
    }


def empty_partial() -> dict[str, Any]:
    """The partial of a partition without deals; every partial has this shape::

        {"version": 2,
         "open": {"by_stage": {pipeline: {stage: {field: int}}},      # OPEN_FIELDS
                  "by_owner" | "by_team" | "by_region": {value: {field: int}}},
         "funnel": {pipeline: {stage: {counter: {"YYYY-MM-DD": int}}}},  # FUNNEL_COUNTERS
         "closed": {pipeline: {"YYYY-MM-DD": {field: int}}},            # CLOSED_FIELDS
         "aging": {pipeline: {stage: summary}},                        # see aging_summary
         "movement": {pipeline: {"YYYY-MM": {field: int}}}}             # MOVEMENT_FIELDS

    A counter that is 0 is absent (read with ``.get(field, 0)``); money is integer cents
    of the reporting currency; days are local calendar days of the views' time zone."""
    return {
        "version": PARTIAL_VERSION,
        "open": {"by_stage": {}, "by_owner": {}, "by_team": {}, "by_region": {}},
        "funnel": {},
        "closed": {},
        "aging": {},
        "movement": {},
    }


def merge_partials(parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Sum partials: counters add, aging summaries merge exactly
    (:func:`merge_aging_summaries`).  Merging the partials of a split of the deals equals
    the partial of all of them.  Raises ValueError on a partial of another version."""
    out = empty_partial()
    aging_parts: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for part in parts:
        if part.get("version") != PARTIAL_VERSION:
            raise ValueError(f"cannot merge partial version {part.get('version')!r}")
        for section in ("open", "funnel", "closed", "movement"):
            _merge_into(out[section], part[section])
        for pid, stages in part["aging"].items():
            for stage, summary in stages.items():
                aging_parts[pid, stage].append(summary)
    for (pid, stage), summaries in sorted(aging_parts.items()):
        merged = summaries[0] if len(summaries) == 1 else merge_aging_summaries(summaries)
        out["aging"].setdefault(pid, {})[stage] = merged
    return out


def _merge_into(into: dict[str, Any], part: dict[str, Any]) -> None:
    for key, value in part.items():
        if isinstance(value, dict):
            _merge_into(into.setdefault(key, {}), value)
        else:
            into[key] = into.get(key, 0) + value


# -- queries over a (merged) partial ----------------------------------------------------


def money(cents: int) -> str:
    """Exact decimal string of an amount in cents: 1234567 -> "12345.67", -5 -> "-0.05".
    The API gives money this way (and as integer ``*_cents``), never as a float, which
    loses cents above 2**53 cents."""
    sign = "-" if cents < 0 else ""
    whole, frac = divmod(abs(cents), 100)
    return f"{sign}{whole}.{frac:02d}"


def _average_cents(total_cents: int, count: int) -> int | None:
    """total / count in cents, rounded half to even (exact integer arithmetic)."""
    if not count:
        return None
    return round(Fraction(total_cents, count))


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def _open_row(counters: dict[str, int]) -> dict[str, Any]:
    value = counters.get("value_cents", 0)
    weighted = counters.get("weighted_cents", 0)
    return {
        "deals": counters.get("deals", 0),
        "value_cents": value,
        "value": money(value),
        "weighted_cents": weighted,
        "weighted_value": money(weighted),
        "unpriced_deals": counters.get("unpriced", 0),
    }


def pipeline_rows(partial: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Open pipeline rows, sorted by key: ``by_stage`` rows carry ``pipeline`` and
    ``stage``; ``by_owner``/``by_team``/``by_region`` rows carry ``owner``/``team``/
    ``region``.  Each row: deals, value_cents, value (exact decimal string in reporting
    units, see :func:`money`), weighted_cents, weighted_value (same), unpriced_deals
    (deals whose currency has no rate, counted as 0)."""
    by_stage = [
        {"pipeline": pid, "stage": stage, **_open_row(counters)}
        for pid, stages in sorted(partial["open"]["by_stage"].items())
        for stage, counters in sorted(stages.items())
    ]
    out: dict[str, list[dict[str, Any]]] = {"by_stage": by_stage}
    for dim in _DIMENSIONS:
        out[f"by_{dim}"] = [
            {dim: value, **_open_row(counters)}
            for value, counters in sorted(partial["open"][f"by_{dim}"].items())
        ]
    return out


def _sum_days(by_day: dict[str, int], first: str, last: str) -> int:
    return sum(n for day, n in by_day.items() if first <= day <= last)


def _pipeline_order(config: PipelineConfig, partial: dict[str, Any]) -> list[str]:
    seen = (set(partial["open"]["by_stage"]) | set(partial["funnel"]) | set(partial["closed"])) - set(
        config.pipelines
    )
    return [*config.pipelines, *sorted(seen)]


def funnel(partial: dict[str, Any], config: PipelineConfig, period: Period, now_ms: int) -> dict[str, Any]:
    """Conversion, win rate, deal size, cycle and velocity per pipeline for ``period``.

    Per open stage (config order): entered/exited/advanced/regressed and
    cohort_entered/cohort_advanced summed over the period's days; ``window_conversion`` =
    advanced / exited, ``cohort_conversion`` = cohort_advanced / cohort_entered (None when
    the denominator is 0).  Per pipeline, over deals closed in the period: won/lost counts
    and values, ``win_rate_count`` = won / (won + lost), ``win_rate_value`` = won_cents /
    (won_cents + lost_cents), ``avg_deal_size_cents`` = won_cents / won count rounded half
    to even (``avg_deal_size`` the same as a decimal string),
    ``avg_cycle_days`` = mean days from creation to won; ``open_deals`` is the current
    number of open deals (not period-bound) and ``sales_velocity_per_day`` = open_deals x
    avg_deal_size x win_rate_count / avg_cycle_days, None if a factor is undefined or the
    cycle is 0.  Money: ``won_cents``/``lost_cents`` and exact decimal strings
    ``won_value``/``lost_value``.  Unknown pipelines are listed after the configured
    ones, without stages.
    ``now_ms`` is echoed as ``as_of_ms``: the open-deal count is as of the partial.
    """
    first = date.fromordinal(period.first_day).isoformat()
    last = date.fromordinal(period.last_day).isoformat()
    pipelines = []
    for pid in _pipeline_order(config, partial):
        p = config.get(pid)
        stage_counts = partial["funnel"].get(pid, {})
        stages = []
        for stage in p.open_stage_ids if p is not None else ():
            counters = stage_counts.get(stage, {})
            c = {name: _sum_days(counters.get(name, {}), first, last) for name in FUNNEL_COUNTERS}
            c["cohort_entered"] = c["entered"]  # identical by construction, so not stored
            stages.append(
                {
                    "stage": stage,
                    **c,
                    "window_conversion": _ratio(c["advanced"], c["exited"]),
                    "cohort_conversion": _ratio(c["cohort_advanced"], c["cohort_entered"]),
                }
            )
        closed = {name: 0 for name in CLOSED_FIELDS}
        for day, counters in partial["closed"].get(pid, {}).items():
            if first <= day <= last:
                for name, n in counters.items():
                    closed[name] += n
        won, lost = closed["won_count"], closed["lost_count"]
        won_cents, lost_cents = closed["won_cents"], closed["lost_cents"]
        win_rate = _ratio(won, won + lost)
        avg_size_cents = _average_cents(won_cents, won)
        avg_cycle = _ratio(closed["cycle_ms_sum"] / DAY_MS, won)
        open_deals = sum(c.get("deals", 0) for c in partial["open"]["by_stage"].get(pid, {}).values())
        velocity = None
        if won and win_rate is not None and avg_cycle:
            velocity = open_deals * (won_cents / won / 100) * win_rate / avg_cycle
        pipelines.append(
            {
                "pipeline": pid,
                "stages": stages,
                "won_count": won,
                "won_cents": won_cents,
                "won_value": money(won_cents),
                "lost_count": lost,
                "lost_cents": lost_cents,
                "lost_value": money(lost_cents),
                "win_rate_count": win_rate,
                "win_rate_value": _ratio(won_cents, won_cents + lost_cents),
                "avg_deal_size_cents": avg_size_cents,
                "avg_deal_size": None if avg_size_cents is None else money(avg_size_cents),
                "avg_cycle_days": avg_cycle,
                "open_deals": open_deals,
                "sales_velocity_per_day": velocity,
            }
        )
    return {
        "period": period.label,
        "first_day": first,
        "last_day": last,
        "as_of_ms": now_ms,
        "pipelines": pipelines,
    }


def aging(partial: dict[str, Any], now_ms: int) -> list[dict[str, Any]]:
    """Per (pipeline, stage), sorted: ``open`` deals and the age in days of their current
    stage visit, from the stage's summary (:func:`aging_summary`).

    * The age of an entry time e is max(0, now_ms - e) / 86_400_000: clamped at 0, since
      "now" can be behind an entry (the watermark clock is the newest event time minus
      the allowed lateness; a wall clock can be skewed against a CRM's).
    * ``max_days``: the age of the stage's first entry, exact.
    * ``median_days`` and ``p90_days``: each deal counts at its cell's midpoint (cells of
      w = 60 s x 2**level; the midpoint clamped to the exact first..last entry), and the
      quantile q of those ages is numpy's default ("linear"): with the n ages sorted,
      h = (n - 1) q, value = x[floor h] + (h - floor h) (x[ceil h] - x[floor h]).
      Each midpoint is within w/2 of the deal's entry, so both are within w/2 of the
      exact quantile; w < 2 x (last - first) / 1023 (at least 1 minute), so the error is
      below 0.1 % of the span of entry times: 90 days of entries give w = 128 minutes.
    """
    rows = []
    for pid, stages in sorted(partial["aging"].items()):
        for stage, summary in sorted(stages.items()):
            first, last = summary["first"], summary["last"]
            width = AGING_BASE_MS << summary["level"]
            # ages ascending = cells descending
            ages: list[int] = []
            counts: list[int] = []
            for c, n in reversed(summary["cells"]):
                mid = min(max(c * width + width // 2, first), last)
                ages.append(max(0, now_ms - mid))
                counts.append(n)
            ends = list(accumulate(counts))  # ends[i]: positions < ends[i] hold ages[i]
            n_open = ends[-1]
            rows.append(
                {
                    "pipeline": pid,
                    "stage": stage,
                    "open": summary["open"],
                    "median_days": _quantile(ages, ends, n_open, 0.5) / DAY_MS,
                    "p90_days": _quantile(ages, ends, n_open, 0.9) / DAY_MS,
                    "max_days": max(0, now_ms - first) / DAY_MS,
                }
            )
    return rows


def _quantile(values: list[int], ends: list[int], n: int, q: float) -> float:
    """numpy's linear quantile of a sorted multiset given as values with cumulative counts."""

    def at(position: int) -> int:
        return values[bisect_right(ends, position)]

    h = (n - 1) * q
    lo = int(h)
    a = at(lo)
    if lo + 1 >= n:
        return float(a)
    b = at(lo + 1)
    if q == 0.5 and h != lo:
        return (a + b) / 2  # numpy's median: the mean of the two middle values
    return a + (h - lo) * (b - a)


def movement(partial: dict[str, Any], period: Period) -> list[dict[str, Any]]:
    """Open-pipeline movement per pipeline (sorted) over ``period``, which must be whole
    calendar months (a month or a quarter; PeriodError otherwise).  ``start`` is the open
    value when the period begins (the sum of every earlier month's net change), and
    ``end = start + new + reopened + increased - decreased - won - lost - deleted``.
    Each figure is given as ``<name>_cents`` (int) and ``<name>`` (exact decimal string)."""
    first, last = date.fromordinal(period.first_day), date.fromordinal(period.last_day + 1)
    if first.day != 1 or last.day != 1:
        raise PeriodError(f"movement needs whole months, got {period.label!r}")
    first_month = f"{first.year:04d}-{first.month:02d}"
    end_month = f"{last.year:04d}-{last.month:02d}"  # exclusive
    rows = []
    for pid, months in sorted(partial["movement"].items()):
        start = 0
        sums = dict.fromkeys(MOVEMENT_FIELDS, 0)
        for month, c in months.items():
            if month < first_month:
                start += _net(c)
            elif month < end_month:
                for name in MOVEMENT_FIELDS:
                    sums[name] += c.get(name, 0)
        end = start + _net(sums)
        row: dict[str, Any] = {"pipeline": pid}
        for name, cents in (("start", start), *sums.items(), ("end", end)):
            row[f"{name}_cents"] = cents
            row[name] = money(cents)
        rows.append(row)
    return rows


def _net(c: dict[str, int]) -> int:
    g = c.get
    return (
        g("new", 0)
        + g("reopened", 0)
        + g("increased", 0)
        - g("decreased", 0)
        - g("won", 0)
        - g("lost", 0)
        - g("deleted", 0)
    )
