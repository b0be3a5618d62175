"""Forecast core: the absorbing chain solved by hand, fallbacks, the weighted and expected
methods worked by hand, the Monte Carlo against exact and variance-derived tolerances,
determinism, chunking and breakdowns."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.deals import Deal, fold
from streams.events import DAY_MS, DealEvent
from streams.forecast import (
    MIN_TRIALS,
    DealRow,
    NewDeals,
    expected,
    learn,
    monte_carlo,
    new_deals,
    open_book,
    rows,
    simulate,
    split,
    weighted,
    won_in_period,
)
from streams.periods import month_period
from streams.pipelines import Pipeline, PipelineConfig, Rates, Stage

UTC_TZ = ZoneInfo("UTC")
T0 = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp() * 1000)
NOW = T0 + 200 * DAY_MS  # 2024-07-19 00:00 UTC
JULY = month_period(2024, 7)
CONFIG = PipelineConfig(
    {"sales": Pipeline("sales", (Stage("a", 0.2), Stage("b", 0.6)), won_stage="won", lost_stage="lost")}
)
RATES = Rates("EUR", {"EUR": Decimal(1), "USD": Decimal("0.5")})


def deal(
    deal_id: str,
    path: list[tuple[float, str]],
    amount: str = "100",
    currency: str = "EUR",
    start: int = T0,
    **attrs: Any,
) -> Deal:
    """A deal walking ``path``: (days after ``start``, stage); the won and lost stages are
    WON/LOST events, ``-deleted`` a DELETED event in the previous stage."""
    events = []
    stage = path[0][1]
    for i, (day, step) in enumerate(path):
        kind = {"won": "WON", "lost": "LOST", "-deleted": "DELETED"}.get(step, "STAGE_CHANGED")
        stage = stage if step == "-deleted" else step
        events.append(
            DealEvent(
                event_id=f"{deal_id}-{i}",
                source="test",
                deal_id=deal_id,
                event_type="CREATED" if i == 0 else kind,
                occurred_at=start + round(day * DAY_MS),
                pipeline="sales",
                stage=stage,
                amount=Decimal(amount),
                currency=currency,
                **attrs,
            )
        )
    return fold(events, CONFIG)


def hand_chain_deals() -> list[Deal]:
    """Transitions (every visit of a lasts 4 days, of b 10 days):

    a -> b 6, a -> lost 4            (a: 10 exits)
    b -> a 2, b -> won 5, b -> lost 3  (b: 10 exits)
    """
    out = [deal(f"al{i}", [(0, "a"), (4, "lost")]) for i in range(4)]  # a -> lost x4
    # a -> b -> a -> b -> won: a->b x2, b->a, b->won (each of two deals)
    out += [deal(f"aba{i}", [(0, "a"), (4, "b"), (14, "a"), (18, "b"), (28, "won")]) for i in range(2)]
    out += [deal(f"ab{i}", [(0, "a"), (4, "b"), (14, "won")]) for i in range(2)]  # a->b, b->won
    out += [deal("bw", [(0, "b"), (10, "won")])]  # first seen in b: did not pass a
    out += [deal(f"bl{i}", [(0, "b"), (10, "lost")]) for i in range(3)]  # b -> lost x3
    return out


# --------------------------------------------------------------------------- the chain


def test_small_chain_solved_by_hand() -> None:
    # Q = [[0, .6], [.2, 0]]  R = [[0, .4], [.5, .3]]   (columns won, lost)
    # I - Q = [[1, -.6], [-.2, 1]], det = .88
    # N = (I - Q)^-1 = [[1, .6], [.2, 1]] / .88
    # B = N R: P(win | a) = (.6 x .5) / .88 = 15/44;  P(win | b) = .5 / .88 = 25/44
    # steps N 1: a (1 + .6) / .88 = 20/11;  b (.2 + 1) / .88 = 15/11
    # dwell d = (4, 10) days; t = N d: a (4 + 6) / .88 = 125/11;  b (.8 + 10) / .88 = 135/11
    # to win w_i = sum_j N_ij d_j b_j / b_i:
    #   a: (4 x 15/44 + .6 x 10 x 25/44) / .88 / (15/44) = (60 + 150) / 15 / .88 = 175/11
    #   b: (.2 x 4 x 15/44 + 10 x 25/44) / .88 / (25/44) = (12 + 250) / 25 / .88 = 131/11
    chain = learn(hand_chain_deals(), CONFIG, NOW, window_days=365, min_exits=1)["sales"]
    assert chain.stages == ("a", "b")
    assert chain.counts.tolist() == [[0, 6, 0, 4], [2, 0, 5, 3]]
    np.testing.assert_allclose(chain.q, [[0, 0.6], [0.2, 0]])
    np.testing.assert_allclose(chain.r, [[0, 0.4], [0.5, 0.3]])
    np.testing.assert_allclose(chain.n, np.array([[1, 0.6], [0.2, 1]]) / 0.88)
    np.testing.assert_allclose(chain.b[:, 0], [15 / 44, 25 / 44])
    np.testing.assert_allclose(chain.b.sum(axis=1), [1, 1])  # every deal is absorbed
    np.testing.assert_allclose(chain.steps, [20 / 11, 15 / 11])
    np.testing.assert_allclose(chain.dwell_days, [4, 10])
    np.testing.assert_allclose(chain.days_to_close, [125 / 11, 135 / 11])
    np.testing.assert_allclose(chain.days_to_win, [175 / 11, 131 / 11])
    assert chain.learned.tolist() == [True, True] and chain.notes == ()
    assert chain.p_win("won") == 1.0 and chain.p_win("lost") == 0.0 and chain.p_win("nowhere") == 0.0
    # days from entering a stage to the win: from a 28 and 14 (aba, a visits at 0 and 14,
    # won at 28), 14 (ab); from b 24 and 10 (aba), 10 (ab), 10 (bw); two deals each
    assert sorted(chain.win_days[0].tolist()) == [14, 14, 14, 14, 28, 28]
    assert sorted(chain.win_days[1].tolist()) == [10, 10, 10, 10, 10, 24, 24]
    table = {s.stage: s for s in chain.stage_forecasts()}
    assert table["b"].exits == 10 and table["b"].p_win == pytest.approx(25 / 44)


def test_deleted_unknown_stage_and_out_of_window_moves_are_not_transitions() -> None:
    base = hand_chain_deals()
    extra = [
        # deleted while in a, restored in a: one visit of a, then a -> b
        deal("del", [(0, "a"), (1, "-deleted"), (2, "a"), (4, "b")]),
        # a stage the configuration does not know is skipped: a -> b
        deal("unk", [(0, "a"), (2, "mystery"), (4, "b")]),
        # a move long before the window (now - 365 days): not counted
        deal("old", [(0, "a"), (4, "b")], start=T0 - 400 * DAY_MS),
        # won then reopened into b: the reopen is no transition, the next visit is
        deal("re", [(0, "b"), (10, "won"), (12, "b"), (22, "lost")]),
    ]
    chain = learn(base + extra, CONFIG, NOW, window_days=365, min_exits=1)["sales"]
    # the hand counts plus a -> b twice (del, unk) and b -> won, b -> lost (re)
    assert chain.counts.tolist() == [[0, 8, 0, 4], [2, 0, 6, 4]]


def test_a_stage_without_data_falls_back_to_its_configured_probability() -> None:
    # only a -> b seen (5 times), b never left: b has no data and becomes absorbing with
    # its configured 0.6, so P(win | a) = 1 x 0.6
    deals = [deal(f"d{i}", [(0, "a"), (3, "b")]) for i in range(5)]
    chain = learn(deals, CONFIG, NOW, window_days=365, min_exits=5)["sales"]
    assert chain.learned.tolist() == [True, False]
    np.testing.assert_allclose(chain.b[:, 0], [0.6, 0.6])
    assert "configured probability used for b" in chain.notes[0]
    # b's dwell is the pipeline's pooled mean (3 days, from a): time to close from a is
    # 3 + 3 days
    np.testing.assert_allclose(chain.dwell_days, [3, 3])
    np.testing.assert_allclose(chain.days_to_close, [6, 3])
    # with fewer exits than min_exits, a has no data either
    assert learn(deals, CONFIG, NOW, window_days=365, min_exits=6)["sales"].learned.tolist() == [False, False]


def test_a_closed_loop_is_singular_and_falls_back_instead_of_failing() -> None:
    # a -> b and b -> a only: I - Q = [[1, -1], [-1, 1]] is singular (np.linalg.solve
    # raises); both stages never reach won or lost and use their configured numbers
    deals = [deal(f"l{i}", [(0, "a"), (2, "b"), (4, "a"), (6, "b")]) for i in range(3)]
    chain = learn(deals, CONFIG, NOW, window_days=365, min_exits=1)["sales"]
    assert chain.learned.tolist() == [False, False]
    np.testing.assert_allclose(chain.b[:, 0], [0.2, 0.6])
    assert "never reach won or lost" in chain.notes[0]
    # one exit from the loop to lost makes both stages learnable again: from a, b -> a
    # and a -> b repeat until a leaves to lost (1 of its 7 exits): P(win) = 0
    chain = learn([*deals, deal("out", [(0, "a"), (1, "lost")])], CONFIG, NOW, 365, min_exits=1)["sales"]
    assert chain.learned.tolist() == [True, True]
    np.testing.assert_allclose(chain.b, [[0, 1], [0, 1]])


# --------------------------------------------------------------------------- rows


def test_rows_convert_amounts_take_closing_amounts_and_skip_deleted() -> None:
    won = fold(
        [
            DealEvent("w1", "test", "w", "CREATED", T0, "sales", "a", Decimal("10"), "USD"),
            DealEvent("w2", "test", "w", "WON", T0 + DAY_MS, "sales", "won", Decimal("30"), "USD"),
            DealEvent("w3", "test", "w", "UPDATED", T0 + 2 * DAY_MS, "sales", "won", Decimal("50"), "USD"),
        ],
        CONFIG,
    )
    out = rows(
        [
            won,
            deal("gone", [(0, "a"), (1, "-deleted")]),
            deal("jpy", [(0, "b")], currency="JPY", owner_id="u-1", region="EMEA"),
        ],
        RATES,
    )
    assert [r.deal_id for r in out] == ["w", "jpy"]
    w, jpy = out
    # won at 30 USD = 15.00 EUR (the closing observation), not the later 50
    assert (w.status, w.amount_cents, w.closed_at, w.entry_stage) == ("won", 1500, T0 + DAY_MS, "a")
    assert (jpy.amount_cents, jpy.owner, jpy.team, jpy.region) == (0, "u-1", "unknown", "EMEA")  # no rate


def row(deal_id: str, stage: str, cents: int, **kw: Any) -> DealRow:
    values: dict[str, Any] = {
        "deal_id": deal_id,
        "pipeline": "sales",
        "stage": stage,
        "status": "open",
        "amount_cents": cents,
        "probability": None,
        "expected_close_day": None,
        "created_at": NOW - DAY_MS,
        "closed_at": None,
        "entry_stage": stage,
        "owner": "u-1",
        "team": "t-1",
        "region": "EMEA",
    }
    values.update(kw)
    return DealRow(**values)


def day(iso: str) -> int:
    return date.fromisoformat(iso).toordinal()


# --------------------------------------------------------------------------- methods


def test_weighted_by_hand() -> None:
    book = [
        row("x", "a", 10_000, expected_close_day=day("2024-07-25")),  # 10000 x .2 = 2000
        row("y", "b", 333, expected_close_day=day("2024-07-01")),  # 333 x .6 = 199.8 -> 200
        row("z", "b", 10_000, expected_close_day=day("2024-07-31"), probability=0.35),  # 3500
        row("u", "mystery", 10_000, expected_close_day=day("2024-07-02")),  # unknown stage: 0
        row("late", "b", 10_000, expected_close_day=day("2024-08-01")),  # after July
        row("nodate", "b", 10_000),  # no date, no contribution
        row("won", "b", 10_000, status="won", expected_close_day=day("2024-07-02")),  # not open
    ]
    assert weighted(book, CONFIG, JULY) == 2000 + 200 + 3500
    # weighted adds up over any breakdown
    for dim in ("pipeline", "owner", "team", "region"):
        assert sum(weighted(part, CONFIG, JULY) for part in split(book, dim).values()) == 5700


def test_expected_by_hand_with_the_hand_chain() -> None:
    # P(win | a) = 15/44, P(win | b) = 25/44; days to win a 175/11 = 15.9, b 131/11 = 11.9
    # now = 19 July 00:00; July ends in 13 days
    chains = learn(hand_chain_deals(), CONFIG, NOW, window_days=365, min_exits=1)
    book = [
        row("x", "a", 10_000),  # closes won at now + 15.9 days = 3 Aug: outside
        row("y", "b", 20_000),  # now + 11.9 days = 30 July: 20000 x 25/44 = 11363.6 -> 11364
        # its own date decides (25 July); its own probability is ignored: 30000 x 15/44
        # = 10227.3 -> 10227
        row("z", "a", 30_000, expected_close_day=day("2024-07-25"), probability=0.9),
        row("v", "b", 4_400, expected_close_day=day("2024-06-30")),  # overdue -> today: 2500
        row("u", "b", 9_999, expected_close_day=day("2024-08-02")),  # August: 0
        row("w", "won", 5_000, status="won", closed_at=NOW - 3 * DAY_MS),  # won 16 July
        row("w0", "won", 7_000, status="won", closed_at=NOW - 30 * DAY_MS),  # won in June
    ]
    result = expected(book, chains, JULY, NOW, UTC_TZ)
    assert (result.open_cents, result.won_cents, result.open_deals) == (11364 + 10227 + 2500, 5000, 3)
    assert result.new_cents == sum(n.expected_cents for n in new_deals(book, chains, JULY, NOW, UTC_TZ))
    assert result.total_cents == result.open_cents + result.won_cents + result.new_cents
    # empirical timing: y (b, no date): times to win from b are 10 x5, 24 x2; July's rest
    # is [0, 13) days from now: 5/7 of them -> 20000 x 25/44 x 5/7 = 8116.9 -> 8117; x (a):
    # 14 x4, 28 x2 -> none; z, v and u keep their dates
    emp = expected(book, chains, JULY, NOW, UTC_TZ, timing="empirical")
    assert emp.open_cents == 8117 + 0 + 10227 + 2500
    # open and won components add up over a breakdown
    parts = split([*book, row("q", "b", 20000, owner="u-2")], "owner")
    whole = expected([*book, row("q", "b", 20000, owner="u-2")], chains, JULY, NOW, UTC_TZ)
    assert sum(expected(p, chains, JULY, NOW, UTC_TZ).open_cents for p in parts.values()) == whole.open_cents
    assert whole.open_cents == 24091 + 11364


def test_new_deals_by_hand() -> None:
    # window: the 100 days before now (19 July); 20 deals created in it, all in stage a:
    # 16 still open, 4 won after 5, 10, 20 and 40 days with 10, 20, 30, 60 EUR.
    # min_exits 100: every stage falls back, P(win | a) = 0.2 (configured) = p0
    start = NOW - 90 * DAY_MS
    deals = [deal(f"o{i}", [(0, "a")], start=start + i * DAY_MS) for i in range(16)]
    for i, (cycle, amount) in enumerate([(5, "10"), (10, "20"), (20, "30"), (40, "60")]):
        deals.append(deal(f"w{i}", [(0, "a"), (cycle, "won")], amount=amount, start=start))
    chains = learn(deals, CONFIG, NOW, window_days=100, min_exits=100)
    (new,) = new_deals(rows(deals, RATES), chains, JULY, NOW, UTC_TZ)
    # creation days 20..31 July (12), each at mid-day: days left until 1 Aug 00:00 are
    # 11.5, 10.5, ..., 0.5.  Share of cycles (5, 10, 20, 40) shorter than that: 0.5 for
    # 11.5 and 10.5; 0.25 for 9.5 .. 5.5 (5 days); 0 below.  Sum = 2 x .5 + 5 x .25 = 2.25
    # rate 20 / 100 = 0.2 a day; L = 0.2 x 0.2 x 2.25 = 0.09 wins; mean won 3000 cents
    assert (new.created_per_day, new.p_win_at_creation, new.days_left) == (0.2, pytest.approx(0.2), 12)
    assert new.expected_wins == pytest.approx(0.09)
    assert new.mean_won_cents == 3000 and new.expected_cents == 270
    # a period that has ended gets no new deals; one that has not begun counts all its days
    assert new_deals(rows(deals, RATES), chains, month_period(2024, 6), NOW, UTC_TZ)[0].days_left == 0
    assert new_deals(rows(deals, RATES), chains, month_period(2024, 9), NOW, UTC_TZ)[0].days_left == 30


def test_won_in_period_counts_by_close_day_in_the_time_zone() -> None:
    # closed 2024-07-31 23:30 UTC: July in UTC, 1 August in Berlin (UTC+2)
    late = row(
        "w",
        "won",
        100,
        status="won",
        closed_at=int(datetime(2024, 7, 31, 23, 30, tzinfo=UTC).timestamp() * 1000),
    )
    assert won_in_period([late], JULY, UTC_TZ) == 100
    assert won_in_period([late], JULY, ZoneInfo("Europe/Berlin")) == 0


# --------------------------------------------------------------------------- Monte Carlo


def binomial_cdf(n: int, p: float) -> list[float]:
    """P(X <= k) for k = 0..n, X ~ Binomial(n, p), exactly with fractions."""
    pf = Fraction(p).limit_denominator(1000)
    cdf, acc = [], Fraction(0)
    for k in range(n + 1):
        acc += math.comb(n, k) * pf**k * (1 - pf) ** (n - k)
        cdf.append(float(acc))
    return cdf


def test_monte_carlo_quantiles_and_mean_within_tolerances_from_the_variance() -> None:
    # 400 deals of 10.00 (1000 cents), each winning with 0.3: the won value is 1000 x X,
    # X ~ Binomial(400, .3), mean 120 deals = 120000 cents, sd sqrt(400 x .3 x .7) = 9.17
    # deals = 9165 cents.
    n, p, trials = 400, 0.3, 20_000
    mc = monte_carlo([p] * n, [1000] * n, trials=trials, seed=7, already_won_cents=55)
    # Mean: the trial mean has sd 9165 / sqrt(20000) = 64.8 cents; allow 4 sd (259).
    sd = 1000 * math.sqrt(n * p * (1 - p))
    assert abs(mc.mean_cents - 55 - 120_000) <= 4 * sd / math.sqrt(trials)
    # Quantiles: the q-quantile is the order statistic X_(m), m = ceil(q T); X_(m) <= x
    # exactly when the empirical CDF F_T(x) >= m/T.  F_T(x) has sd sqrt(F(1-F)/T) around
    # the exact F(x), so with delta = 4 sqrt(q(1-q)/T) (0.0085 at q = .1) the sampled
    # quantile k satisfies F(k - 1) < q + delta and F(k) >= q - delta.
    cdf = binomial_cdf(n, p)
    for q, got in zip((0.1, 0.5, 0.9), (mc.p10_cents, mc.p50_cents, mc.p90_cents), strict=True):
        k, rest = divmod(got - 55, 1000)
        assert rest == 0  # a real trial's value, already won added
        delta = 4 * math.sqrt(q * (1 - q) / trials)
        assert cdf[k - 1] < q + delta and cdf[k] >= q - delta, (q, k, cdf[k - 1], cdf[k])
    assert mc.already_won_cents == 55 and mc.new_mean_cents == 0


def test_monte_carlo_with_close_shares_and_new_deals_has_the_expected_mean() -> None:
    # open: amounts a_i, win p_i x s_i; certain and impossible deals; new deals: Poisson(3)
    # wins, amounts drawn from (1000, 5000).
    # mean = sum a_i p_i s_i + 3 x 3000;  variance = sum a_i^2 w_i (1 - w_i) + 3 x E[A^2]
    # (a compound Poisson's variance is lambda E[A^2]; E[A^2] = (1000^2 + 5000^2) / 2)
    rng = np.random.default_rng(3)
    a = rng.integers(1_000, 100_000, 300)
    p = rng.random(300)
    s = rng.choice([0.0, 0.5, 1.0], 300)
    p[:5], s[:5] = 1.0, 1.0  # certain
    src = NewDeals("sales", 1.0, 0.3, 3000.0, 10, 3.0, np.array([1000, 5000], dtype=np.int64))
    trials = 10_000
    mc = monte_carlo(p, a, s, new=[src], trials=trials, seed=1)
    w = p * s
    mean = float((a * w).sum()) + 3 * 3000
    sd = math.sqrt(float((a.astype(float) ** 2 * w * (1 - w)).sum()) + 3 * (1000**2 + 5000**2) / 2)
    assert abs(mc.mean_cents - mean) <= 4 * sd / math.sqrt(trials)
    assert abs(mc.new_mean_cents - 9000) <= 4 * math.sqrt(3 * 13e6) / math.sqrt(trials)
    assert mc.open_mean_cents + mc.new_mean_cents == pytest.approx(mc.mean_cents, abs=1)
    assert mc.p10_cents <= mc.p50_cents <= mc.p90_cents
    # P10..P90 spans about 2 x 1.2816 sd (near normal: 300 deals)
    assert (mc.p90_cents - mc.p10_cents) == pytest.approx(2 * 1.2816 * sd, rel=0.1)
    # certain deals are in every trial: P10 is at least their sum
    assert mc.p10_cents >= int(a[:5].sum())


def test_monte_carlo_is_deterministic_for_a_seed() -> None:
    args = ([0.2, 0.5, 0.9] * 50, list(range(1000, 151_000, 1000)))
    assert monte_carlo(*args, seed=42) == monte_carlo(*args, seed=42)
    assert monte_carlo(*args, seed=42) != monte_carlo(*args, seed=43)


@settings(max_examples=25, deadline=None)
@given(
    deals=st.lists(
        st.tuples(st.floats(0, 1), st.floats(0, 1), st.integers(0, 10**9)), min_size=0, max_size=25
    ),
    new_wins=st.floats(0, 5),
    chunk=st.integers(7, 10_000),
    seed=st.integers(0, 2**32),
)
def test_chunked_and_unchunked_results_agree(
    deals: list[tuple[float, float, int]], new_wins: float, chunk: int, seed: int
) -> None:
    p, s, a = (list(x) for x in zip(*deals, strict=True)) if deals else ([], [], [])
    src = NewDeals("sales", 1.0, 0.5, 2.0, 5, new_wins, np.array([1, 2, 3, 500], dtype=np.int64))
    whole = monte_carlo(p, a, s, new=[src, src], trials=MIN_TRIALS, seed=seed, chunk_trials=MIN_TRIALS)
    assert monte_carlo(p, a, s, new=[src, src], trials=MIN_TRIALS, seed=seed, chunk_trials=chunk) == whole


def test_monte_carlo_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="10000"):
        monte_carlo([0.5], [100], trials=9_999)
    with pytest.raises(ValueError, match=r"0\.\.1"):
        monte_carlo([1.5], [100])
    with pytest.raises(ValueError, match="one length"):
        monte_carlo([0.5, 0.5], [100])
    with pytest.raises(ValueError, match="2\\^53"):
        monte_carlo([0.5, 0.5], [2**52, 2**52])


def test_simulate_agrees_with_expected_and_breaks_down_by_owner() -> None:
    # the Monte Carlo's mean is the expected value's (same P(win), shares, new deals and
    # already won), within 4 sd of the trial mean
    chains = learn(hand_chain_deals(), CONFIG, NOW, window_days=365, min_exits=1)
    book = rows(hand_chain_deals(), RATES) + [
        row(f"o{i}", "ab"[i % 2], 10_000 + 100 * i, owner=f"u-{i % 3}") for i in range(60)
    ]
    exp = expected(book, chains, JULY, NOW, UTC_TZ)
    mc = simulate(book, chains, JULY, NOW, UTC_TZ, seed=5)
    ob = open_book(book, chains, JULY, NOW, UTC_TZ)
    w = ob.p_win * ob.close_share
    sd = math.sqrt(float((ob.amount_cents.astype(float) ** 2 * w * (1 - w)).sum()))
    assert abs(mc.mean_cents - exp.total_cents) <= 4 * sd / math.sqrt(MIN_TRIALS) + len(book)  # + rounding
    by_owner = {
        o: simulate(part, chains, JULY, NOW, UTC_TZ, seed=5) for o, part in split(book, "owner").items()
    }
    assert set(by_owner) == {"u-0", "u-1", "u-2", "unknown"}
    assert sum(m.already_won_cents for m in by_owner.values()) == mc.already_won_cents


def test_the_forecast_bench_prints_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.bench import forecast_bench

    assert forecast_bench.main(["--deals", "1000", "--chunk-trials", "300"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("forecast monte carlo: deals=1000 trials=10000 seconds=") and "peak_mib=" in line
