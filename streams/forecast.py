"""Forecast: what will close won in a period, and how sure that is.

Pure functions over plain data (no broker, no clock: ``now_ms`` and the time zone are
arguments).  The worker calls them off the event path, on a timer, over the merged global
deal state; the backtest (:mod:`streams.backtest`) calls the same functions on history cut
at a date.  Money is integer cents of the reporting currency, as in every view.

**Rows.** :func:`rows` reduces each :class:`~streams.deals.Deal` to a :class:`DealRow`:
status (open, won, lost; deleted deals are left out), amount in reporting cents (the
closing observation's amount for a closed deal, as in the closed-deal views; a currency
without a rate counts 0), creation and close times, the stage of its first observation,
its own probability and expected close day, and its owner, team and region (``unknown``
when missing).  Breakdowns by pipeline, owner, team and region are the same functions over
the subsets :func:`split` returns.  Weighted, expected-open and already-won values add up
over a breakdown; the new-deal component and the Monte Carlo quantiles do not (each subset
has its own creation rate, deal size and cycle, and quantiles of a sum are not sums).

**Learned chain** (:func:`learn`, per pipeline, over the trailing window
``[now - window_days, now)``).  A deal's observations are reduced to *positions*: its
open stage (a configured one), ``won`` or ``lost`` by the observation's status.  Deleted
observations and open ones in a stage the configuration does not know are skipped, so a
deleted and restored deal continues its visit and a deal deleted for good ends censored
(neither won nor lost).  A run of equal positions is one visit.  Each visit of an open
stage ``i`` that ends inside the window with a move to position ``j`` counts one
transition ``i -> j``: a skip is a direct transition to the later stage, a regression a
transition back; a move out of won or lost (a reopened deal) is not a transition, the
visit it starts is.  Its length (next visit's start minus this one's) is a dwell time of
``i``.  With ``k`` open stages, rows normalised to 1::

    P = [[Q, R],      Q: k x k open -> open,   R: k x 2 open -> (won, lost)
         [0, I]]

    N = (I - Q)^-1    expected visits of j starting from i (the fundamental matrix)
    B = N R           B[i, won] = P(win | i): the learned win probability
    s = N 1           expected visits (steps) until absorption
    t = N d           expected days to close (won or lost), d the mean dwell days
    w = N (d * b) / b expected days to close *won*, b = B[:, won]: the chain conditioned
                      on winning (Doob's h-transform: N'_ij = N_ij b_j / b_i), dwell times
                      taken independent of the next move

A stage with fewer than ``min_exits`` transitions in the window has no data: its row is
replaced by the configured probability (won ``p``, lost ``1 - p``, no open successor), its
dwell by its own mean if it has any, else the pooled mean dwell of the pipeline, and
:attr:`Chain.notes` says so.  ``I - Q`` is singular exactly when some open stages form a
closed loop that never reaches won or lost in the data (e.g. only ``a -> b`` and ``b -> a``
seen); such stages fall back the same way (noted), after which every stage reaches
absorption, the spectral radius of ``Q`` is below 1 and ``I - Q`` is invertible.  No
regularisation is added: a fallback to the configured number is visible and explainable,
an epsilon is neither.  The learned probability ignores a deal's own ``probability`` (a
rep's judgement is what the weighted method uses).

**Close timing.**  Whether an open deal closes inside the period, if it wins:

* with an ``expected_close_date``: on that day, or today when the date has passed (a stale
  CRM date still means "soon");
* else with timing ``mean`` (the default): at ``now + w[stage]`` (the expected days to
  close won), in the period or not;
* else with timing ``empirical``: the share of the stage's observed times from entering
  it to winning (won inside the window) that land in the period when added to ``now`` (a
  stage with fewer than ``min_exits`` of them uses ``mean``).

The chain is memoryless: time already spent in the stage does not change what is left.

**Methods** (for a period ``P``, all in reporting cents):

* :func:`weighted`: sum over open deals whose expected close date lies in ``P`` of
  amount x probability (the deal's own, else the stage's configured, else 0), rounded
  half to even per deal exactly like the weighted pipeline.  No date, no contribution.
* :func:`expected`: three components, each shown on its own: ``open`` = sum over open
  deals of amount x learned P(win) x close share (per deal, rounded half to even);
  ``won`` = already won in ``P`` (closing amount, by close day); ``new`` = deals not yet
  created (:func:`new_deals`).
* :func:`monte_carlo` / :func:`simulate`: per trial each open deal wins inside ``P`` with
  probability P(win) x close share, independently; new deals arrive as a Poisson number of
  in-period wins with amounts drawn from the window's won deals; P10/P50/P90 and the mean
  of the closed-won value at period end, plus what is already won.

**New deals** (:func:`new_deals`, per pipeline).  From the window: the creation rate
``c`` (deals created per day), the mean won amount ``a`` (won deals closed in the window,
the average deal size), their sales cycles (created -> closed, days) with ``F(x)`` the
share shorter than ``x``, and ``p0``, the mean learned P(win) of the stage the created
deals entered in (P(win from the first stage) when every deal starts there).  A deal
created on day ``d`` of ``P`` (from the day after today, or the period's first day if
later; taken at mid-day) has ``x_d`` days left until the period ends, so::

    expected wins   L = c x p0 x sum_d F(x_d)       (= c x days left x p0 x mean share)
    expected value  L x a

**Monte Carlo kernel.**  Deals that cannot win in the period (P(win) x share = 0) are
dropped and certain ones (= 1) added as a constant; each remaining deal's probability is
a 32-bit threshold ``floor(p x 2^32)`` (exact to 2^-32) compared with raw 32-bit draws of
an SFC64 stream; a trial's won value is a matrix-vector product of the 0/1 outcomes with
the amounts in float64 (exact: the amounts' total is checked below 2^53 cents), done in
blocks of deals so that the outcomes (``BLOCK_CELLS`` float64, 512 KiB) stay in cache.
Trials run in chunks of ``chunk_trials`` rows; every trial consumes a fixed number of
draws from its stream (the open deals, and per new-deal source one stream for counts and
one for amounts, all spawned from ``seed``), so the result is identical for any chunk size
and deterministic for a seed (on one platform: the draws are read in native byte order).
Peak memory is about ``4 x chunk_trials x deals`` bytes for one chunk's draws, plus
~35 bytes per deal for the inputs, 512 KiB of outcomes and 16 bytes per trial for the
totals; by default a chunk holds ``CHUNK_CELLS`` (2^21) deal-trials, so 8 MiB of draws
(100,000 deals x 10,000 trials: 20 trials a chunk, ~11 MiB traced at peak, ~2.3 s on one
core of the development machine).  Quantiles are order statistics (the inverted CDF: the
smallest trial value ``v`` with at least ``q x trials`` trials at or below it), so they
are exact cents of a real trial.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from streams.deals import LOST, OPEN, WON, Deal
from streams.events import DAY_MS
from streams.periods import Period, day_of, day_start_ms, period_bounds_ms
from streams.pipeline_views import weighted_cents
from streams.pipelines import Pipeline, PipelineConfig, Rates

UNKNOWN = "unknown"
DIMENSIONS = ("pipeline", "owner", "team", "region")
TIMINGS = ("mean", "empirical")
DEFAULT_WINDOW_DAYS = 365
DEFAULT_MIN_EXITS = 5
MIN_TRIALS = 10_000
CHUNK_CELLS = 1 << 21
BLOCK_CELLS = 1 << 16
QUANTILES = (0.1, 0.5, 0.9)
_EXACT_FLOAT = 2**53  # float64 sums of integers below this are exact
_THRESHOLD_SCALE = 2**32

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


# --------------------------------------------------------------------------- rows


@dataclass(frozen=True, slots=True)
class DealRow:
    """What the forecast reads of one deal: reporting cents, epoch ms, day ordinals."""

    deal_id: str
    pipeline: str
    stage: str
    status: str  # open | won | lost
    amount_cents: int
    probability: float | None  # the deal's own override
    expected_close_day: int | None
    created_at: int
    closed_at: int | None  # won or lost deals
    entry_stage: str  # stage of the deal's first observation
    owner: str
    team: str
    region: str


def rows(deals: Iterable[Deal], rates: Rates) -> list[DealRow]:
    """One :class:`DealRow` per open, won or lost deal (deleted deals are left out)."""
    out = []
    for deal in deals:
        if deal.status not in (OPEN, WON, LOST):
            continue
        closing = deal.closing_observation()
        amount, currency = (
            (deal.amount, deal.currency) if closing is None else (closing.amount, closing.currency)
        )
        cents = rates.to_reporting_cents(amount, currency)
        close = deal.expected_close_date
        out.append(
            DealRow(
                deal_id=deal.deal_id,
                pipeline=deal.pipeline,
                stage=deal.stage,
                status=deal.status,
                amount_cents=0 if cents is None else cents,
                probability=deal.probability,
                expected_close_day=None if close is None else close.toordinal(),
                created_at=deal.created_at,
                closed_at=None if closing is None else closing.occurred_at,
                entry_stage=deal.observations[0].stage,
                owner=deal.owner_id or UNKNOWN,
                team=deal.team or UNKNOWN,
                region=deal.region or UNKNOWN,
            )
        )
    return out


def split(deal_rows: Iterable[DealRow], dimension: str) -> dict[str, list[DealRow]]:
    """The rows grouped by ``dimension`` (one of :data:`DIMENSIONS`), keys sorted."""
    if dimension not in DIMENSIONS:
        raise ValueError(f"dimension must be one of {DIMENSIONS}, got {dimension!r}")
    groups: dict[str, list[DealRow]] = defaultdict(list)
    for row in deal_rows:
        groups[getattr(row, dimension)].append(row)
    return dict(sorted(groups.items()))


def won_in_period(deal_rows: Iterable[DealRow], period: Period, tz: ZoneInfo) -> int:
    """Closing amount of the won deals whose close day lies in ``period``."""
    start, end = period_bounds_ms(period, tz)
    return sum(
        r.amount_cents
        for r in deal_rows
        if r.status == WON and r.closed_at is not None and start <= r.closed_at < end
    )


# --------------------------------------------------------------------------- the chain


@dataclass(frozen=True, slots=True)
class StageForecast:
    """One open stage of a learned chain, as outputs show it."""

    stage: str
    p_win: float
    expected_steps: float
    days_to_close: float
    days_to_win: float | None  # None when the stage never wins
    exits: int  # transitions out of the stage seen in the window
    learned: bool  # False: the configured probability was used


@dataclass(frozen=True, eq=False)
class Chain:
    """The absorbing Markov chain of one pipeline, learned over ``[since_ms, until_ms)``.

    Matrices index the open stages in configured order; the absorbing columns of
    ``counts`` and ``r`` are (won, lost)."""

    pipeline: str
    since_ms: int
    until_ms: int
    stages: tuple[str, ...]
    won_stage: str
    lost_stage: str
    counts: IntArray  # k x (k + 2) observed transitions
    q: FloatArray
    r: FloatArray
    n: FloatArray
    b: FloatArray  # k x 2 absorption probabilities (won, lost)
    dwell_days: FloatArray
    steps: FloatArray
    days_to_close: FloatArray
    days_to_win: FloatArray  # NaN where P(win) is 0
    learned: npt.NDArray[np.bool_]
    win_days: tuple[FloatArray, ...]  # per stage, sorted days from entering it to winning
    min_exits: int
    notes: tuple[str, ...] = ()

    @property
    def window_days(self) -> float:
        return (self.until_ms - self.since_ms) / DAY_MS

    def index(self, stage: str) -> int | None:
        try:
            return self.stages.index(stage)
        except ValueError:
            return None

    def p_win(self, stage: str) -> float:
        """Learned P(win) of a deal in ``stage``: 1 in the won stage, 0 in the lost stage or
        one the configuration does not know."""
        i = self.index(stage)
        if i is not None:
            return float(self.b[i, 0])
        return 1.0 if stage == self.won_stage else 0.0

    def stage_forecasts(self) -> list[StageForecast]:
        exits = self.counts.sum(axis=1)
        return [
            StageForecast(
                stage=s,
                p_win=float(self.b[i, 0]),
                expected_steps=float(self.steps[i]),
                days_to_close=float(self.days_to_close[i]),
                days_to_win=None if math.isnan(self.days_to_win[i]) else float(self.days_to_win[i]),
                exits=int(exits[i]),
                learned=bool(self.learned[i]),
            )
            for i, s in enumerate(self.stages)
        ]


@dataclass
class _Tally:
    """What :func:`learn` collects for one pipeline before solving."""

    k: int
    counts: IntArray
    dwell_ms: FloatArray
    win_ms: list[list[int]] = field(default_factory=list)


def learn(
    deals: Iterable[Deal],
    config: PipelineConfig,
    now_ms: int,
    window_days: float = DEFAULT_WINDOW_DAYS,
    min_exits: int = DEFAULT_MIN_EXITS,
) -> dict[str, Chain]:
    """One :class:`Chain` per configured pipeline from the stage histories of ``deals``,
    counting the transitions that happened in ``[now - window_days, now)`` (see the
    module docstring).  Deals of pipelines the configuration does not know are ignored."""
    if window_days <= 0:
        raise ValueError(f"window_days must be > 0, got {window_days}")
    if min_exits < 1:
        raise ValueError(f"min_exits must be >= 1, got {min_exits}")
    since = now_ms - round(window_days * DAY_MS)
    tallies: dict[str, _Tally] = {}
    for pid, p in config.pipelines.items():
        k = len(p.stages)
        tallies[pid] = _Tally(k, np.zeros((k, k + 2), np.int64), np.zeros(k), [[] for _ in range(k)])
    indexes = {pid: {s: i for i, s in enumerate(p.open_stage_ids)} for pid, p in config.pipelines.items()}
    for deal in deals:
        tally = tallies.get(deal.pipeline)
        if tally is not None:
            _walk(deal, indexes[deal.pipeline], tally, since, now_ms)
    return {
        pid: _solve(p, tallies[pid], since, now_ms, min_exits) for pid, p in sorted(config.pipelines.items())
    }


def _walk(deal: Deal, index: Mapping[str, int], tally: _Tally, since: int, until: int) -> None:
    k = tally.k
    visits: list[tuple[int, int]] = []  # (position, start): k = won, k + 1 = lost
    for o in deal.observations:
        if o.status == WON:
            pos = k
        elif o.status == LOST:
            pos = k + 1
        elif o.status == OPEN and o.stage in index:
            pos = index[o.stage]
        else:
            continue  # deleted, or open in a stage the configuration does not know
        if not visits or visits[-1][0] != pos:
            visits.append((pos, o.occurred_at))
    for (a, ta), (b, tb) in pairwise(visits):
        if a < k and since <= tb < until:
            tally.counts[a, b] += 1
            tally.dwell_ms[a] += tb - ta
    absorbed: tuple[int, int] | None = None  # the next won/lost visit after each visit
    for pos, start in reversed(visits):
        if pos >= k:
            absorbed = (pos, start)
        elif absorbed is not None and absorbed[0] == k and since <= absorbed[1] < until:
            tally.win_ms[pos].append(absorbed[1] - start)


def _solve(p: Pipeline, tally: _Tally, since: int, until: int, min_exits: int) -> Chain:
    k = tally.k
    counts = tally.counts
    exits = counts.sum(axis=1)
    configured = np.array([s.probability for s in p.stages], dtype=np.float64)
    has_data = exits >= min_exits
    notes = []
    if (~has_data).any():
        names = ", ".join(s for s, ok in zip(p.open_stage_ids, has_data, strict=True) if not ok)
        notes.append(f"fewer than {min_exits} exits in the window: configured probability used for {names}")
    # Which stages reach won or lost along observed transitions (no-data stages will be
    # absorbing rows after the fallback, so they count as reaching it).
    reaches = ~has_data | (counts[:, k:].sum(axis=1) > 0)
    changed = True
    while changed:
        grow = has_data & ~reaches & ((counts[:, :k] > 0) & reaches[None, :]).any(axis=1)
        changed = bool(grow.any())
        reaches |= grow
    looped = has_data & ~reaches
    if looped.any():
        names = ", ".join(s for s, bad in zip(p.open_stage_ids, looped, strict=True) if bad)
        notes.append(
            f"never reach won or lost in the window (I - Q singular): configured probability used for {names}"
        )
    learned = has_data & reaches
    probs = np.zeros((k, k + 2))
    probs[learned] = counts[learned] / exits[learned, None]
    q = probs[:, :k].copy()
    r = probs[:, k:].copy()
    r[~learned, 0] = configured[~learned]
    r[~learned, 1] = 1.0 - configured[~learned]
    n = np.asarray(np.linalg.solve(np.eye(k) - q, np.eye(k)) if k else np.zeros((0, 0)), dtype=np.float64)
    b = n @ r
    total_exits = int(exits.sum())
    pooled = float(tally.dwell_ms.sum()) / total_exits / DAY_MS if total_exits else 0.0
    dwell = np.full(k, pooled)
    seen = exits > 0
    dwell[seen] = tally.dwell_ms[seen] / exits[seen] / DAY_MS
    p_win = b[:, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        to_win = np.where(p_win > 0, (n @ (dwell * p_win)) / p_win, np.nan)
    return Chain(
        pipeline=p.id,
        since_ms=since,
        until_ms=until,
        stages=p.open_stage_ids,
        won_stage=p.won_stage,
        lost_stage=p.lost_stage,
        counts=counts,
        q=q,
        r=r,
        n=n,
        b=b,
        dwell_days=dwell,
        steps=n.sum(axis=1),
        days_to_close=n @ dwell,
        days_to_win=to_win,
        learned=learned,
        win_days=tuple(np.sort(np.asarray(w, dtype=np.float64)) / DAY_MS for w in tally.win_ms),
        min_exits=min_exits,
        notes=tuple(notes),
    )


# --------------------------------------------------------------------------- timing


@dataclass(frozen=True, eq=False)
class OpenBook:
    """The open deals of a forecast as arrays: learned P(win), the share of the win that
    lands in the period (:func:`open_book`), and the amount."""

    deal_ids: tuple[str, ...]
    p_win: FloatArray
    close_share: FloatArray
    amount_cents: IntArray


def open_book(
    deal_rows: Iterable[DealRow],
    chains: Mapping[str, Chain],
    period: Period,
    now_ms: int,
    tz: ZoneInfo,
    timing: str = "mean",
) -> OpenBook:
    """Learned P(win) and close share of every open row (module docstring, "Close
    timing").  A deal of a pipeline without a chain has P(win) 0."""
    if timing not in TIMINGS:
        raise ValueError(f"timing must be one of {TIMINGS}, got {timing!r}")
    start, end = period_bounds_ms(period, tz)
    today = day_of(now_ms, tz)
    ids, p, share, amount = [], [], [], []
    for row in deal_rows:
        if row.status != OPEN:
            continue
        chain = chains.get(row.pipeline)
        ids.append(row.deal_id)
        amount.append(row.amount_cents)
        if chain is None:
            p.append(0.0)
            share.append(0.0)
            continue
        p.append(chain.p_win(row.stage))
        share.append(_close_share(row, chain, period, start - now_ms, end - now_ms, today, timing))
    return OpenBook(
        tuple(ids),
        np.array(p, dtype=np.float64),
        np.array(share, dtype=np.float64),
        np.array(amount, np.int64),
    )


def _close_share(
    row: DealRow, chain: Chain, period: Period, lo: int, hi: int, today: int, timing: str
) -> float:
    """P(the win lands in the period), the period being ``[now + lo, now + hi)`` in ms."""
    if row.expected_close_day is not None:
        return 1.0 if period.contains(max(row.expected_close_day, today)) else 0.0
    i = chain.index(row.stage)
    if i is None:
        return 0.0
    samples = chain.win_days[i]
    if timing == "empirical" and len(samples) >= chain.min_exits:
        a, b = np.searchsorted(samples, [lo / DAY_MS, hi / DAY_MS], side="left")
        return float(b - a) / len(samples)
    days = chain.days_to_win[i]
    if math.isnan(days):
        return 0.0
    return 1.0 if lo <= days * DAY_MS < hi else 0.0


# --------------------------------------------------------------------------- new deals


@dataclass(frozen=True, eq=False)
class NewDeals:
    """Deals not created yet that win inside the period, for one pipeline."""

    pipeline: str
    created_per_day: float
    p_win_at_creation: float
    mean_won_cents: float
    days_left: int  # creation days counted
    expected_wins: float  # L = c x p0 x sum_d F(x_d)
    won_amounts_cents: IntArray  # the window's won amounts, drawn from by the Monte Carlo

    @property
    def expected_cents(self) -> int:
        return round(self.expected_wins * self.mean_won_cents)


def new_deals(
    deal_rows: Iterable[DealRow], chains: Mapping[str, Chain], period: Period, now_ms: int, tz: ZoneInfo
) -> list[NewDeals]:
    """The new-deal component per pipeline that has a chain (module docstring)."""
    by_pipeline = split(deal_rows, "pipeline")
    end = period_bounds_ms(period, tz)[1]
    first = max(day_of(now_ms, tz) + 1, period.first_day)
    days = np.arange(first, period.last_day + 1)
    midday = np.array([(day_start_ms(d, tz) + day_start_ms(d + 1, tz)) / 2 for d in days.tolist()])
    left_days = (end - midday) / DAY_MS
    out = []
    for pid, chain in chains.items():
        subset = by_pipeline.get(pid, [])
        created = [r for r in subset if chain.since_ms <= r.created_at < chain.until_ms]
        won = [
            r
            for r in subset
            if r.status == WON and r.closed_at is not None and chain.since_ms <= r.closed_at < chain.until_ms
        ]
        rate = len(created) / chain.window_days
        p0 = sum(chain.p_win(r.entry_stage) for r in created) / len(created) if created else 0.0
        amounts = np.array([r.amount_cents for r in won], dtype=np.int64)
        mean = float(amounts.mean()) if len(amounts) else 0.0
        cycles = np.sort(
            np.array([(r.closed_at or 0) - r.created_at for r in won], dtype=np.float64) / DAY_MS
        )
        shares = (
            np.searchsorted(cycles, left_days, side="left") / len(cycles) if len(cycles) else left_days * 0
        )
        out.append(
            NewDeals(
                pipeline=pid,
                created_per_day=rate,
                p_win_at_creation=p0,
                mean_won_cents=mean,
                days_left=len(days),
                expected_wins=rate * p0 * float(np.sum(shares)),
                won_amounts_cents=amounts,
            )
        )
    return out


# --------------------------------------------------------------------------- methods


def weighted(deal_rows: Iterable[DealRow], config: PipelineConfig, period: Period) -> int:
    """Weighted forecast: amount x (deal, else configured stage, else 0) probability over
    the open deals whose expected close date lies in ``period``."""
    total = 0
    for row in deal_rows:
        if (
            row.status != OPEN
            or row.expected_close_day is None
            or not period.contains(row.expected_close_day)
        ):
            continue
        p = row.probability
        if p is None:
            pipeline = config.get(row.pipeline)
            stage = None if pipeline is None else pipeline.stage(row.stage)
            p = 0.0 if stage is None else stage.probability
        total += weighted_cents(row.amount_cents, p)
    return total


@dataclass(frozen=True, slots=True)
class Expected:
    """The learned expected value of a period, by component."""

    open_cents: int  # open deals: amount x learned P(win) x close share
    won_cents: int  # already won in the period
    new_cents: int  # deals created from tomorrow on
    open_deals: int  # open deals with a non-zero chance of winning in the period

    @property
    def total_cents(self) -> int:
        return self.open_cents + self.won_cents + self.new_cents


def expected(
    deal_rows: Sequence[DealRow],
    chains: Mapping[str, Chain],
    period: Period,
    now_ms: int,
    tz: ZoneInfo,
    timing: str = "mean",
) -> Expected:
    """Expected closed-won value of ``period``: open + already won + new deals."""
    book = open_book(deal_rows, chains, period, now_ms, tz, timing)
    weights = book.p_win * book.close_share
    open_cents = sum(
        weighted_cents(int(a), float(w)) for a, w in zip(book.amount_cents, weights, strict=True) if w > 0
    )
    return Expected(
        open_cents=open_cents,
        won_cents=won_in_period(deal_rows, period, tz),
        new_cents=sum(n.expected_cents for n in new_deals(deal_rows, chains, period, now_ms, tz)),
        open_deals=int(np.count_nonzero(weights)),
    )


# --------------------------------------------------------------------------- Monte Carlo


@dataclass(frozen=True, slots=True)
class MonteCarlo:
    """Closed-won value at period end over ``trials`` seeded trials, already won included."""

    trials: int
    seed: int
    p10_cents: int
    p50_cents: int
    p90_cents: int
    mean_cents: int
    already_won_cents: int
    open_mean_cents: int  # mean of the open deals' part
    new_mean_cents: int  # mean of the new deals' part

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


def monte_carlo(
    probabilities: npt.ArrayLike,
    amounts_cents: npt.ArrayLike,
    close_shares: npt.ArrayLike | None = None,
    new: Sequence[NewDeals] = (),
    already_won_cents: int = 0,
    trials: int = MIN_TRIALS,
    seed: int = 0,
    chunk_trials: int | None = None,
) -> MonteCarlo:
    """Monte Carlo of the closed-won value at period end (module docstring, "Monte Carlo
    kernel"): deal ``i`` wins inside the period with ``probabilities[i] x
    close_shares[i]`` (shares default to 1), independently; each new-deal source adds a
    Poisson(``expected_wins``) number of wins with amounts drawn uniformly from its
    ``won_amounts_cents``.  Deterministic for a seed, whatever ``chunk_trials``."""
    p = np.asarray(probabilities, dtype=np.float64)
    amounts = np.asarray(amounts_cents, dtype=np.int64)
    shares = np.ones_like(p) if close_shares is None else np.asarray(close_shares, dtype=np.float64)
    if not p.shape == amounts.shape == shares.shape or p.ndim != 1:
        raise ValueError("probabilities, amounts and close shares must be 1-d arrays of one length")
    if ((p < 0) | (p > 1) | (shares < 0) | (shares > 1)).any() or (amounts < 0).any():
        raise ValueError("probabilities and close shares must lie in 0..1 and amounts be >= 0")
    if trials < MIN_TRIALS:
        raise ValueError(f"trials must be >= {MIN_TRIALS}, got {trials}")
    w = p * shares
    certain = w >= 1.0
    live = (w > 0) & ~certain
    certain_cents = int(amounts[certain].sum())
    thresholds = np.floor(w[live] * _THRESHOLD_SCALE).astype(np.uint32)  # w < 1: fits
    values = amounts[live].astype(np.float64)
    if int(amounts[live].sum()) >= _EXACT_FLOAT:
        raise ValueError("the open amounts add up past 2^53 cents: float64 sums would not be exact")
    n = len(values)
    words = (n + 1) // 2  # raw 64-bit draws per trial: two 32-bit draws each
    if chunk_trials is None:
        chunk_trials = max(1, CHUNK_CELLS // max(n, 1))
    if chunk_trials < 1:
        raise ValueError(f"chunk_trials must be >= 1, got {chunk_trials}")
    sources = [s for s in new if s.expected_wins > 0 and len(s.won_amounts_cents)]
    streams = [
        np.random.Generator(np.random.SFC64(s))
        for s in np.random.SeedSequence(seed).spawn(1 + 2 * len(sources))
    ]
    open_totals = np.zeros(trials, np.int64)
    new_totals = np.zeros(trials, np.int64)
    rows_per_chunk = min(chunk_trials, trials)
    block = max(1, BLOCK_CELLS // rows_per_chunk)  # deals per block: the outcomes stay in cache
    outcome = np.empty((rows_per_chunk, min(block, n)), dtype=np.float64)
    for start in range(0, trials, chunk_trials):
        c = min(chunk_trials, trials - start)
        if n:
            draws = streams[0].bit_generator.random_raw(c * words).view(np.uint32).reshape(c, 2 * words)
            won = np.zeros(c)
            for j in range(0, n, block):
                end = min(j + block, n)
                hit = outcome[:c, : end - j]
                np.less(draws[:, j:end], thresholds[j:end], out=hit, casting="unsafe")  # 1.0: won
                won += hit @ values[j:end]
            open_totals[start : start + c] = np.rint(won).astype(np.int64)
            del draws  # before the next chunk's draws are allocated
        for j, source in enumerate(sources):
            counts = streams[1 + 2 * j].poisson(source.expected_wins, size=c)
            picks = streams[2 + 2 * j].integers(0, len(source.won_amounts_cents), size=int(counts.sum()))
            cumulative = np.concatenate(([0], np.cumsum(source.won_amounts_cents[picks])))
            ends = np.cumsum(counts)
            new_totals[start : start + c] += cumulative[ends] - cumulative[ends - counts]
    totals = open_totals + new_totals
    totals.sort()
    base = already_won_cents + certain_cents
    p10, p50, p90 = (int(totals[math.ceil(q * trials) - 1]) + base for q in QUANTILES)
    open_sum = sum(open_totals.tolist())  # Python ints: 10,000 totals near 2^53 overflow int64
    new_sum = sum(new_totals.tolist())
    return MonteCarlo(
        trials=trials,
        seed=seed,
        p10_cents=p10,
        p50_cents=p50,
        p90_cents=p90,
        mean_cents=_div_round(open_sum + new_sum, trials) + base,
        already_won_cents=already_won_cents,
        open_mean_cents=_div_round(open_sum, trials) + certain_cents,
        new_mean_cents=_div_round(new_sum, trials),
    )


def _div_round(a: int, b: int) -> int:
    """``a / b`` rounded half to even, exact for Python ints."""
    q, r = divmod(a, b)
    if 2 * r > b or (2 * r == b and q % 2):
        q += 1
    return q


def simulate(
    deal_rows: Sequence[DealRow],
    chains: Mapping[str, Chain],
    period: Period,
    now_ms: int,
    tz: ZoneInfo,
    trials: int = MIN_TRIALS,
    seed: int = 0,
    timing: str = "mean",
    chunk_trials: int | None = None,
) -> MonteCarlo:
    """:func:`monte_carlo` of ``deal_rows``: the open book, the new deals and what is
    already won, as :func:`expected` sees them."""
    book = open_book(deal_rows, chains, period, now_ms, tz, timing)
    return monte_carlo(
        book.p_win,
        book.amount_cents,
        book.close_share,
        new=new_deals(deal_rows, chains, period, now_ms, tz),
        already_won_cents=won_in_period(deal_rows, period, tz),
        trials=trials,
        seed=seed,
        chunk_trials=chunk_trials,
    )
