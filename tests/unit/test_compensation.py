"""Compensation: marginal tiers, cap, accelerator, decelerator, rounding, and adjustments
(clawback, amount change, delete, reassignment, a close moved out of the period) worked
by hand; plan validation; order independence and idempotence of statements."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.compensation import (
    ADJUSTMENT,
    CREDIT,
    EXAMPLE_PLANS_FILE,
    Plan,
    Statement,
    StatementLine,
    commission_at,
    load_plans,
    projected_commission,
    statement,
)
from streams.deals import Deal, fold
from streams.events import DealEvent
from streams.periods import parse_period
from streams.pipelines import ConfigError, load_pipelines, load_rates
from streams.quotas import load_quotas

CONFIG = load_pipelines()
RATES = load_rates()  # USD reporting, EUR = 1.08
TZ = ZoneInfo("UTC")
Q1 = parse_period("2024-Q1", 0, TZ)
Q2 = parse_period("2024-Q2", 0, TZ)
QUOTA = 10_000_000  # 100,000.00
AS_OF = 1_800_000_000_000


def t(month: int, day: int) -> int:
    """Epoch ms of 2024-<month>-<day> 12:00 UTC."""
    return int(datetime(2024, month, day, 12, tzinfo=UTC).timestamp() * 1000)


def ev(
    deal_id: str, n: int, at: int, stage: str, amount: str, owner: str = "o1", kind: str = "UPDATED"
) -> DealEvent:
    return DealEvent(
        str(n), "crm", deal_id, kind, at, "enterprise", stage, Decimal(amount), "USD", owner_id=owner
    )


def won(deal_id: str, amount: str, month: int, day: int, *later: DealEvent, owner: str = "o1") -> Deal:
    """Created on 2024-01-01 in discovery, won on <month>-<day>, then ``later``."""
    return fold(
        [
            ev(deal_id, 0, t(1, 1), "discovery", amount, owner, "CREATED"),
            ev(deal_id, 1, t(month, day), "won", amount, owner),
            *later,
        ],
        CONFIG,
    )


def plan(**kw: Any) -> Plan:
    """8 % up to 100 % attainment, 12 % above (marginal), unless told otherwise."""
    args: dict[str, Any] = {
        "id": "p",
        "base_rate": Fraction(8, 100),
        "tiers": ((Fraction(1), Fraction(12, 100)),),
    }
    args.update(kw)
    return Plan(**args)


def run(
    p: Plan, deals: list[Deal], ledger: list[StatementLine] = (), owner: str = "o1", period=Q1
) -> Statement:  # type: ignore[assignment]
    return statement(p, QUOTA, owner, period, deals, ledger, RATES, TZ, AS_OF)


def summary(s: Statement) -> list[tuple[str, str, str, int, int]]:
    return [
        (line.deal_id, line.kind, line.reason, line.credit_cents, line.commission_cents) for line in s.lines
    ]


# Quota 100,000.00; A 60,000 (1 March), B 50,000 (5 March), C 30,000 (9 March), all o1.
A, B, C = won("A", "60000", 3, 1), won("B", "50000", 3, 5), won("C", "30000", 3, 9)


def test_marginal_tiers_across_the_boundary() -> None:
    s = run(plan(), [C, A, B])
    # A: 0 -> 60,000, all at 8 %                                   -> 4,800.00
    # B: 60,000 -> 110,000: 40,000 x 8 % + 10,000 x 12 % = 3,200 + 1,200 -> 4,400.00
    # C: 110,000 -> 140,000, all above quota: 30,000 x 12 %        -> 3,600.00
    assert summary(s) == [
        ("A", CREDIT, "won", 6_000_000, 480_000),
        ("B", CREDIT, "won", 5_000_000, 440_000),
        ("C", CREDIT, "won", 3_000_000, 360_000),
    ]
    assert [line.at for line in s.lines] == [t(3, 1), t(3, 5), t(3, 9)]  # credit at the close
    assert (s.earned_cents, s.credited_cents, s.credited_deals, s.attainment, s.capped) == (
        1_280_000,
        14_000_000,
        3,
        1.4,
        False,
    )
    # one figure for the whole value agrees: 8,000 + 40,000 x 12 % = 12,800.00
    assert commission_at(plan(), QUOTA, 14_000_000) == 1_280_000


def test_a_cap_cuts_the_line_that_reaches_it() -> None:
    s = run(plan(cap_cents=1_000_000), [A, B, C])
    # cap 10,000.00: A 4,800 + B 4,400 = 9,200, so C gets the remaining 800.00 (not 3,600)
    assert [line.commission_cents for line in s.lines] == [480_000, 440_000, 80_000]
    assert (s.earned_cents, s.capped) == (1_000_000, True)


def test_an_accelerator_multiplies_the_rate_above_its_threshold() -> None:
    s = run(plan(accelerators=((Fraction(12, 10), Fraction(3, 2)),)), [A, B, C])
    # x1.5 above 120 %: C 110,000 -> 120,000 at 12 % = 1,200, 120,000 -> 140,000 at 18 % = 3,600
    assert [line.commission_cents for line in s.lines] == [480_000, 440_000, 480_000]


def test_a_decelerator_reduces_the_rate_below_its_threshold() -> None:
    s = run(plan(decelerators=((Fraction(1, 2), Fraction(1, 2)),)), [A, B, C])
    # half rate below 50 %: A 0 -> 50,000 at 4 % = 2,000, 50,000 -> 60,000 at 8 % = 800
    assert [line.commission_cents for line in s.lines] == [280_000, 440_000, 360_000]


def test_lines_round_half_to_even() -> None:
    ten = plan(base_rate=Fraction(1, 10), tiers=())
    d1, d2 = won("d1", "0.25", 1, 10), won("d2", "0.35", 1, 11)
    # 10 % of 25 cents = 2.5 -> 2 (even); of 35 cents = 3.5 -> 4 (even)
    assert [line.commission_cents for line in run(ten, [d1, d2]).lines] == [2, 4]


def test_rounded_lines_never_pass_the_cap() -> None:
    capped = plan(base_rate=Fraction(1, 10), tiers=(), cap_cents=4)
    deals = [won(f"d{i}", "0.15", 1, 10 + i) for i in range(3)]
    # exact 1.5, 1.5, then min(4.5, cap 4) - 3 = 1: rounded 2, 2, and 1 would make 5 > 4,
    # so the third line is cut to 0
    s = run(capped, deals)
    assert [line.commission_cents for line in s.lines] == [2, 2, 0]
    assert s.earned_cents == 4


def reported(p: Plan, deals: list[Deal]) -> list[StatementLine]:
    return list(run(p, deals).lines)


def test_clawback_after_a_reopened_deal() -> None:
    ledger = reported(plan(), [A, B, C])  # 4,800 + 4,400 + 3,600 were reported
    reopened = won("A", "60000", 3, 1, ev("A", 2, t(3, 20), "negotiation", "60000"))
    s = run(plan(), [reopened, B, C], ledger)
    # A is open again: -4,800 on 20 March. B and C move down the tiers:
    # B 0 -> 50,000 at 8 % = 4,000 (was 4,400): -400; C 50,000 -> 80,000 at 8 % = 2,400
    # (was 3,600): -1,200; both "recalculated" at the time of this statement
    assert summary(s) == [
        ("A", ADJUSTMENT, "reopened", -6_000_000, -480_000),
        ("B", ADJUSTMENT, "recalculated", 0, -40_000),
        ("C", ADJUSTMENT, "recalculated", 0, -120_000),
    ]
    assert [line.at for line in s.lines] == [t(3, 20), AS_OF, AS_OF]
    assert (s.earned_cents, s.reported_cents) == (640_000, 1_280_000)
    # the ledger plus the new lines adds up to what is earned, and nothing is left to adjust
    ledger += s.lines
    assert sum(line.commission_cents for line in ledger) == 640_000
    assert run(plan(), [reopened, B, C], ledger).lines == ()
    # won again in March: a credit line again (the ledger held nothing for A any more);
    # A now closes on 25 March, after B and C: 80,000 -> 140,000 = 20,000 x 8 % + 40,000 x 12 %
    rewon = won(
        "A", "60000", 3, 1, ev("A", 2, t(3, 20), "negotiation", "60000"), ev("A", 3, t(3, 25), "won", "60000")
    )
    again = run(plan(), [rewon, B, C], ledger)
    assert summary(again) == [("A", CREDIT, "won", 6_000_000, 640_000)]
    assert again.lines[0].at == t(3, 25)


def test_an_amount_change_after_close() -> None:
    ledger = reported(plan(), [A, B, C])
    smaller = won("B", "50000", 3, 5, ev("B", 2, t(3, 15), "won", "40000"))
    s = run(plan(), [A, smaller, C], ledger)
    # B 50,000 -> 40,000 on 15 March: 60,000 -> 100,000 at 8 % = 3,200 (was 4,400): -1,200.
    # C still covers 100,000 -> 130,000 at 12 % = 3,600: unchanged, no line
    assert summary(s) == [("B", ADJUSTMENT, "amount_changed", -1_000_000, -120_000)]
    line = s.lines[0]
    assert (line.at, line.detail) == (t(3, 15), "credit 50,000.00 -> 40,000.00 (40000.00 USD)")
    assert s.earned_cents == 480_000 + 320_000 + 360_000


def test_a_deleted_won_deal_and_one_gone_from_the_states() -> None:
    ledger = reported(plan(), [A, B, C])
    deleted = won("C", "30000", 3, 9, ev("C", 2, t(3, 28), "won", "30000", kind="DELETED"))
    s = run(plan(), [A, B, deleted], ledger)
    # C is last, so only its own 3,600 is clawed back, at the deletion
    assert summary(s) == [("C", ADJUSTMENT, "deleted", -3_000_000, -360_000)]
    assert s.lines[0].at == t(3, 28)
    # a deal no longer in the states at all: clawed back at the statement's time
    s = run(plan(), [A, B], ledger)
    assert summary(s) == [("C", ADJUSTMENT, "deleted", -3_000_000, -360_000)]
    assert s.lines[0].at == AS_OF


def test_a_lost_deal_and_a_reassignment() -> None:
    ledger = reported(plan(), [A, B, C])
    lost = won("C", "30000", 3, 9, ev("C", 2, t(3, 12), "lost", "30000", kind="LOST"))
    moved = won("B", "50000", 3, 5, owner="o2")
    s = run(plan(), [A, moved, lost], ledger)
    # B now belongs to o2 (-4,400 for o1), C is lost (-3,600): A alone stays, 4,800
    assert summary(s) == [
        ("B", ADJUSTMENT, "reassigned", -5_000_000, -440_000),
        ("C", ADJUSTMENT, "lost", -3_000_000, -360_000),
    ]
    assert s.lines[0].detail == "owner o1 -> o2" and s.earned_cents == 480_000
    # o2's own statement credits B: 50,000 x 8 % = 4,000
    assert summary(run(plan(), [A, moved, lost], ledger, owner="o2")) == [
        ("B", CREDIT, "won", 5_000_000, 400_000)
    ]


def test_a_close_moved_to_the_next_period() -> None:
    ledger = reported(plan(), [A, B, C])
    later = won(
        "A", "60000", 3, 1, ev("A", 2, t(3, 30), "negotiation", "60000"), ev("A", 3, t(4, 2), "won", "60000")
    )
    # A reopened at the end of March and won again on 2 April: out of Q1 (and its tiers)
    s = run(plan(), [later, B, C], ledger)
    assert [(x.deal_id, x.reason, x.at) for x in s.lines] == [
        ("A", "moved_period", t(4, 2)),
        ("B", "recalculated", AS_OF),
        ("C", "recalculated", AS_OF),
    ]
    assert s.lines[0].detail == "closed on 2024-04-02, outside 2024-Q1"
    assert summary(run(plan(), [later, B, C], ledger, period=Q2)) == [
        ("A", CREDIT, "won", 6_000_000, 480_000)
    ]


def test_projected_commission_at_a_forecast() -> None:
    s = run(plan(), [A, B])  # 110,000 won: 8,000 + 1,200 = 9,200.00 earned
    p = projected_commission(plan(), QUOTA, 15_000_000, s.earned_cents)
    # at a P50 of 150,000: 8,000 + 50,000 x 12 % = 14,000.00, 4,800.00 more than earned
    assert (p.commission_cents, p.additional_cents, p.attainment) == (1_400_000, 480_000, 1.5)
    assert p.to_dict()["earned_cents"] == 920_000


def test_other_owners_and_periods_in_the_ledger_are_ignored() -> None:
    foreign = StatementLine("o2", "2024-Q1", "A", CREDIT, "won", 0, 1, 1)
    older = StatementLine("o1", "2023-Q4", "A", CREDIT, "won", 0, 1, 1)
    assert summary(run(plan(), [A], [foreign, older])) == [("A", CREDIT, "won", 6_000_000, 480_000)]


def test_lines_round_trip_through_dicts() -> None:
    line = run(plan(), [A]).lines[0]
    assert StatementLine.from_dict(line.to_dict()) == line
    with pytest.raises(ValueError, match="kind"):
        StatementLine.from_dict(line.to_dict() | {"kind": "bonus"})


def test_a_repeated_deal_or_a_zero_quota_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="given twice"):
        run(plan(), [A, won("A", "1", 3, 2)])
    with pytest.raises(ValueError, match="quota must be > 0"):
        statement(plan(), 0, "o1", Q1, [A], [], RATES, TZ, AS_OF)


# --------------------------------------------------------------------------- plans file


def test_the_example_plans_load_and_resolve_owners() -> None:
    config = load_plans(EXAMPLE_PLANS_FILE, reporting_currency="USD")
    ae = config.plans["ae-standard"]
    # bands: 4 % below 50 % (decelerator), 8 % to 100 %, 12 % to 150 %, 15 % above (x1.25)
    assert [(b.start, b.rate) for b in ae.bands] == [
        (Fraction(0), Fraction(4, 100)),
        (Fraction(1, 2), Fraction(8, 100)),
        (Fraction(1), Fraction(12, 100)),
        (Fraction(3, 2), Fraction(15, 100)),
    ]
    assert ae.cap_cents == 6_000_000
    assert config.plan_for("o1") is ae and config.plan_for("o9").id == "founder-deals"  # type: ignore[union-attr]
    assert config.plan_for("nobody") is None
    # 200 % of 100,000: 2,000 + 4,000 + 6,000 + 50,000 x 15 % = 19,500.00
    assert commission_at(ae, QUOTA, 20_000_000) == 1_950_000


def test_owners_listed_in_a_plan_win_over_their_role(tmp_path: Path) -> None:
    path = tmp_path / "plans.toml"
    path.write_text(
        'currency = "USD"\n[roles]\no1 = "ae"\n'
        '[plans.ae]\nrole = "ae"\nbase_rate = 0.1\n[plans.special]\nowners = ["o1"]\nbase_rate = 0.2\n'
    )
    assert load_plans(path).plan_for("o1").id == "special"  # type: ignore[union-attr]


X = '[plans.x]\nrole = "ae"\n'
P = 'currency = "USD"\n' + X


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[plans.x]\nrole = "ae"\nbase_rate = 0.1\n', "currency: required"),
        ('currency = "EUR"\n', "currency: amounts are in EUR but the reporting currency is USD"),
        ('currency = "USD"\n', "plans: no [plans.<id>] defined"),
        ('currency = "USD"\n[plan.x]\n', "plan: unknown key"),
        (P, "plans.x: lacks 'base_rate'"),
        (P + "base_rate = 1.5\n", "plans.x.base_rate: must be in 0..1, got 1.5"),
        (P + "base_rate = -0.1\n", "plans.x.base_rate: must be in 0..1"),
        (P + 'base_rate = "x"\n', "plans.x.base_rate: must be a number, got 'x'"),
        (P + "base_rate = 0.1\nrates = 1\n", "plans.x.rates: unknown key"),
        ('currency = "USD"\n[plans.x]\nbase_rate = 0.1\n', "plans.x: needs a role or owners"),
        (P + "base_rate = 0.1\ntiers = 3\n", "plans.x.tiers: must be a list"),
        (P + "base_rate = 0.1\ntiers = [{ from = 1.0 }]\n", "plans.x.tiers[0]: lacks 'rate'"),
        (
            P + "base_rate = 0.1\ntiers = [{ from = 1.0, rate = 2 }]\n",
            "plans.x.tiers[0].rate: must be in 0..1, got 2",
        ),
        (
            P + "base_rate = 0.1\ntiers = [{ from = 0, rate = 0.2 }]\n",
            "plans.x.tiers[0].from: attainment must be > 0",
        ),
        (
            P + "base_rate = 0.1\ntiers = [{ from = 1.0, rate = 0.2 }, { from = 0.5, rate = 0.3 }]\n",
            "plans.x.tiers[1].from: thresholds must increase, 0.5 follows 1.0",
        ),
        (P + "base_rate = 0.1\ntiers = [{ at = 1.0, rate = 0.2 }]\n", "plans.x.tiers[0].at: unknown key"),
        (
            P + "base_rate = 0.1\naccelerators = [{ from = 1.5, multiplier = 0.9 }]\n",
            "plans.x.accelerators[0].multiplier: must be >= 1, got 0.9",
        ),
        (
            P + "base_rate = 0.1\ndecelerators = [{ below = 0.5, multiplier = 1.2 }]\n",
            "plans.x.decelerators[0].multiplier: must be in (0, 1], got 1.2",
        ),
        (
            P + "base_rate = 0.1\naccelerators = [{ from = 0.9, multiplier = 2 }]\n"
            "decelerators = [{ below = 1.0, multiplier = 0.5 }]\n",
            "plans.x.decelerators: a decelerator below 1.0 overlaps the accelerator from 0.9",
        ),
        (P + "base_rate = 0.1\ncap = 0\n", "plans.x.cap: must be > 0, got 0"),
        (P + "base_rate = 0.1\ncap = 10.001\n", "plans.x.cap: must have at most two decimals"),
        (
            P + 'base_rate = 0.1\n[plans.y]\nrole = "ae"\nbase_rate = 0.2\n',
            "plans.y.role: role 'ae' already has plan 'x'",
        ),
        (
            'currency = "USD"\n[plans.x]\nowners = ["o1"]\nbase_rate = 0.1\n'
            '[plans.y]\nowners = ["o2", "o1"]\nbase_rate = 0.1\n',
            "plans.y.owners: owner 'o1' is already in plan 'x'",
        ),
        (
            'currency = "USD"\n[roles]\no1 = "sdr"\n' + X + "base_rate = 0.1\n",
            "roles.o1: role 'sdr' has no plan",
        ),
        ('currency = "USD"\n[roles]\no1 = 3\n' + X + "base_rate = 0.1\n", "roles.o1: must be a role name"),
    ],
)
def test_plan_validation_errors_name_file_key_and_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "plans.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_plans(path, reporting_currency="USD")
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)


# --------------------------------------------------------------------------- properties

# A random deal of o1 or o2: won on a day of Q1 (or just outside it) at some amount, and
# possibly changed afterwards (amount, reopened, deleted, lost, reassigned).
CHANGES = ("none", "amount", "reopen", "delete", "lose", "reassign")


@st.composite
def histories(draw: st.DrawFn) -> tuple[Deal, Deal]:
    """(state when first reported, state now) of one deal."""
    deal_id = draw(st.text("abcdef", min_size=1, max_size=3))
    owner = draw(st.sampled_from(["o1", "o2"]))
    cents = draw(st.integers(1, 8_000_000))
    amount = f"{cents // 100}.{cents % 100:02d}"
    month, day = draw(st.sampled_from([(1, 5), (2, 1), (2, 1), (3, 31), (4, 1)]))
    first = won(deal_id, amount, month, day, owner=owner)
    change = draw(st.sampled_from(CHANGES))
    at = t(4, 20)
    later = {
        "none": [],
        "amount": [ev(deal_id, 2, at, "won", str(Decimal(draw(st.integers(0, 8_000_000))) / 100), owner)],
        "reopen": [ev(deal_id, 2, at, "solution", "1", owner)],
        "delete": [ev(deal_id, 2, at, "won", "1", owner, "DELETED")],
        "lose": [ev(deal_id, 2, at, "lost", "1", owner, "LOST")],
        "reassign": [ev(deal_id, 2, at, "won", amount, "o2" if owner == "o1" else "o1")],
    }[change]
    return first, won(deal_id, amount, month, day, *later, owner=owner)


PLANS = [
    plan(),
    plan(
        cap_cents=700_000,
        accelerators=((Fraction(3, 2), Fraction(5, 4)),),
        decelerators=((Fraction(1, 2), Fraction(1, 2)),),
    ),
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(histories(), max_size=8, unique_by=lambda h: h[0].deal_id),
    st.sampled_from(PLANS),
    st.sampled_from(["o1", "o2"]),
    st.randoms(use_true_random=False),
)
def test_statements_ignore_order_and_recomputing_adds_nothing(
    deals: list[tuple[Deal, Deal]], p: Plan, owner: str, rnd: random.Random
) -> None:
    before = [d for d, _ in deals]
    now = [d for _, d in deals]
    ledger = list(run(p, before, owner=owner).lines)
    s = run(p, now, ledger, owner=owner)
    # any order of the deals and of the ledger gives the same statement
    shuffled, shuffled_ledger = now[:], ledger[:]
    rnd.shuffle(shuffled)
    rnd.shuffle(shuffled_ledger)
    assert run(p, shuffled, shuffled_ledger, owner=owner) == s
    # the ledger with the new lines holds exactly what is earned, per deal too, and a
    # second computation has nothing to add
    after = ledger + list(s.lines)
    assert sum(line.commission_cents for line in after) == s.earned_cents
    assert sum(line.credit_cents for line in after) == s.credited_cents
    assert run(p, now, after, owner=owner).lines == ()
    # from an empty ledger, the same deals are all credits with the same total
    fresh = run(p, now, owner=owner)
    assert {line.kind for line in fresh.lines} <= {CREDIT} and fresh.earned_cents == s.earned_cents
    if p.cap_cents is not None:
        assert s.earned_cents <= p.cap_cents


def test_the_readme_examples_load(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Quotas, territories and compensation plans", 1)[1].split("\n## ", 1)[0]
    quotas_text, plans_text = (block.split("\n```", 1)[0] for block in section.split("```toml\n")[1:])
    (tmp_path / "quotas.toml").write_text(quotas_text)
    (tmp_path / "plans.toml").write_text(plans_text)
    quotas = load_quotas(tmp_path / "quotas.toml", reporting_currency="USD")
    assert quotas.territory_of("emea", "o8") == "emea-strategic"
    plans = load_plans(tmp_path / "plans.toml", reporting_currency="USD")
    assert plans.plan_for("o1").cap_cents == 6_000_000  # type: ignore[union-attr]
