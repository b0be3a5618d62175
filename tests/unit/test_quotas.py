"""Quotas and territories: config validation, attainment, gap, coverage and the spread of
open pipeline over a territory's reps, worked by hand."""

from __future__ import annotations

import math
import random
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.deals import Deal, fold
from streams.events import DealEvent
from streams.periods import Period, parse_period
from streams.pipelines import ConfigError, load_pipelines, load_rates
from streams.quotas import (
    EXAMPLE_QUOTAS_FILE,
    QuotaConfig,
    Territory,
    coverage,
    gap,
    load_quotas,
    spread,
    standings,
    territory_spreads,
)

CONFIG = load_pipelines()
RATES = load_rates()  # USD reporting, EUR = 1.08, no CHF
TZ = ZoneInfo("UTC")


def t(month: int, day: int, year: int = 2024) -> int:
    """Epoch ms of <year>-<month>-<day> 12:00 UTC."""
    return int(datetime(year, month, day, 12, tzinfo=UTC).timestamp() * 1000)


def deal(
    deal_id: str,
    amount: str,
    *,
    won: int | None = None,
    lost: int | None = None,
    due: date | None = None,
    currency: str = "USD",
    owner: str | None = "o1",
    team: str | None = "ent",
    region: str | None = "emea",
) -> Deal:
    """A deal created on 2023-12-01, then won or lost at the given time, else open."""
    attrs: dict[str, Any] = {"owner_id": owner, "team": team, "region": region, "expected_close_date": due}
    events = [
        DealEvent(
            "1",
            "crm",
            deal_id,
            "CREATED",
            t(12, 1, 2023),
            "enterprise",
            "discovery",
            Decimal(amount),
            currency,
            **attrs,
        )
    ]
    if won is not None:
        events.append(
            DealEvent(
                "2", "crm", deal_id, "WON", won, "enterprise", "won", Decimal(amount), currency, **attrs
            )
        )
    if lost is not None:
        events.append(
            DealEvent(
                "2", "crm", deal_id, "LOST", lost, "enterprise", "lost", Decimal(amount), currency, **attrs
            )
        )
    return fold(events, CONFIG)


QUOTAS_TOML = """
currency = "USD"

[territories.emea]
regions = ["emea"]
[territories.emea-strategic]
regions = ["emea"]
owners = ["o7", "o8"]
[territories.americas]
regions = ["na"]

[quotas.owner.o1]
"2024-Q1" = 100_000
"2024-03" = 40_000
[quotas.team.ent]
"2024-Q1" = 200000.00
[quotas.territory.emea]
"2024-Q1" = "50000"
[quotas.territory.emea-strategic]
"2024-Q1" = 20_000
"""


def write(tmp_path: Path, text: str, name: str = "quotas.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture
def quotas(tmp_path: Path) -> QuotaConfig:
    return load_quotas(write(tmp_path, QUOTAS_TOML), reporting_currency="USD")


DEALS = [
    deal("a", "30000", won=t(2, 10)),  # o1 emea: won in Feb
    deal("b", "10000", won=t(3, 5), currency="EUR"),  # o1 emea: won in March, 10,800 USD
    deal("c", "50000", due=date(2024, 3, 20), region="na"),  # o1 americas: open, due in March
    deal("d", "70000", due=date(2024, 4, 2), region="na"),  # o1: due in Q2, not Q1
    deal("e", "99000", owner="o2", lost=t(2, 1)),  # lost: counts nowhere
    deal("f", "5000", owner="o2", won=t(12, 30, 2023)),  # won in 2023-Q4
    deal("g", "20000", owner="o7", won=t(1, 15)),  # o7: emea-strategic, not emea
    deal("h", "8000", owner="o2"),  # open, no expected close date: due in no period
    deal("i", "12000", owner="o2", due=date(2024, 2, 1), currency="CHF"),  # no rate: unpriced
    deal("j", "15000", owner="o2", due=date(2024, 1, 31)),  # open, due in January
]


def by_key(rows: list[Any]) -> dict[tuple[str, str, str], Any]:
    return {(r.scope, r.key, r.period): r for r in rows}


def test_attainment_gap_and_coverage_per_owner_team_and_territory(quotas: QuotaConfig) -> None:
    rows = by_key(standings(quotas, DEALS, RATES, TZ))
    # o1 in Q1: won a 30,000 + b 10,000 EUR x 1.08 = 10,800 -> 40,800 of 100,000: 0.408;
    # gap 100,000 - 40,800 = 59,200; due c 50,000 (d is due in April) -> 50,000 / 59,200
    o1 = rows[("owner", "o1", "2024-Q1")]
    assert (o1.won_cents, o1.won_deals, o1.open_due_cents, o1.open_due_deals) == (4_080_000, 2, 5_000_000, 1)
    assert (o1.attainment, o1.gap_cents) == (0.408, 5_920_000)
    assert o1.coverage == pytest.approx(50_000 / 59_200)
    # o1 in March: only b was won (a closed in February) -> 10,800 / 40,000 = 0.27;
    # gap 29,200; due c 50,000 -> 50,000 / 29,200
    march = rows[("owner", "o1", "2024-03")]
    assert (march.won_cents, march.attainment, march.gap_cents) == (1_080_000, 0.27, 2_920_000)
    assert march.coverage == pytest.approx(50_000 / 29_200)
    # team ent in Q1: won a, b, g = 30,000 + 10,800 + 20,000 = 60,800 (f is 2023, e lost);
    # due c 50,000 + j 15,000 = 65,000; i has no CHF rate: 0 cents, 1 unpriced
    team = rows[("team", "ent", "2024-Q1")]
    assert (team.won_cents, team.open_due_cents, team.unpriced_deals) == (6_080_000, 6_500_000, 1)
    assert (team.attainment, team.gap_cents) == (0.304, 13_920_000)
    assert team.coverage == pytest.approx(65_000 / 139_200)
    # territory emea: a, b (o1 is in no carve-out), not g (o7 -> emea-strategic) ->
    # 40,800 of 50,000 = 0.816; gap 9,200; due j 15,000 -> 15,000 / 9,200; i unpriced
    emea = rows[("territory", "emea", "2024-Q1")]
    assert (emea.won_cents, emea.open_due_cents, emea.unpriced_deals) == (4_080_000, 1_500_000, 1)
    assert (emea.attainment, emea.gap_cents) == (0.816, 920_000)
    assert emea.coverage == pytest.approx(15_000 / 9_200)
    # emea-strategic: g 20,000 of 20,000 -> attainment 1.0, nothing left: gap 0, no coverage
    strategic = rows[("territory", "emea-strategic", "2024-Q1")]
    assert (strategic.attainment, strategic.gap_cents, strategic.coverage) == (1.0, 0, None)


def test_standings_of_one_period_and_of_a_quota_without_deals(quotas: QuotaConfig) -> None:
    rows = standings(quotas, [], RATES, TZ, period_label="2024-03")
    # only o1's March quota; nothing won: attainment 0, gap = quota, coverage 0 / 40,000
    assert [(r.key, r.attainment, r.gap_cents, r.coverage) for r in rows] == [("o1", 0.0, 4_000_000, 0.0)]
    assert rows[0].to_dict()["quota_cents"] == 4_000_000


def test_formulas() -> None:
    # gap never negative; coverage undefined once the quota is reached
    assert (gap(100, 30), gap(100, 130)) == (70, 0)
    assert (coverage(140, 100, 30), coverage(140, 100, 100)) == (2.0, None)


def test_territory_of_prefers_the_owner_carve_out(quotas: QuotaConfig) -> None:
    assert quotas.territory_of("emea", "o7") == "emea-strategic"
    assert quotas.territory_of("emea", "o1") == "emea"
    assert quotas.territory_of("emea", None) == "emea"
    assert quotas.territory_of("apac", "o1") is None
    assert quotas.territory_of(None, "o7") is None


def test_spread_by_hand() -> None:
    # 10, 20, 30: mean 20, squared deviations 100 + 0 + 100 -> variance 200/3,
    # sd sqrt(200/3) = 8.165; cv = 8.165 / 20 = sqrt(1/6) = 0.408; shares 30/60, 10/60
    s = spread([10, 20, 30])
    assert s.cv == pytest.approx(math.sqrt(1 / 6))
    assert (s.max_share, s.min_share) == (0.5, pytest.approx(1 / 6))
    # one rep holds everything among 4: cv = sqrt(n - 1) = sqrt(3); shares 1 and 0
    s = spread([0, 0, 7, 0])
    assert (s.cv, s.max_share, s.min_share) == (pytest.approx(math.sqrt(3)), 1.0, 0.0)
    # even: cv 0, each 1/n
    assert spread([5, 5]) == spread([1, 1])
    assert (spread([5, 5]).cv, spread([5, 5]).max_share) == (0.0, 0.5)
    # undefined without reps or without pipeline
    assert spread([]).cv is None and spread([0, 0]).max_share is None


def test_territory_spreads(quotas: QuotaConfig) -> None:
    deals = [
        *DEALS,
        deal("k", "23000", owner="o3"),  # emea, open, no due date
        deal("l", "5000", owner=None),  # emea, open, nobody's: unassigned
        deal("m", "30000", owner="o7"),  # emea-strategic (o8 listed, has nothing)
        deal("n", "10000", owner="o7", due=date(2024, 2, 10)),
    ]
    spreads = {s.territory: s for s in territory_spreads(quotas, deals, RATES)}
    # emea: o2 has h 8,000 + j 15,000 + i (CHF, unpriced: 0) = 23,000 in 3 deals, o3 has
    # k 23,000; l 5,000 unassigned -> total 51,000; two equal reps: cv 0, shares 1/2
    emea = spreads["emea"]
    assert [(r.owner_id, r.open_cents, r.open_deals) for r in emea.reps] == [
        ("o2", 2_300_000, 3),
        ("o3", 2_300_000, 1),
    ]
    assert (emea.open_cents, emea.open_deals, emea.unassigned_cents, emea.unpriced_deals) == (
        5_100_000,
        5,
        500_000,
        1,
    )
    assert (emea.cv, emea.max_share, emea.min_share) == (0.0, 0.5, 0.5)
    # emea-strategic: o7 40,000, o8 listed with 0 -> cv = sqrt(2 - 1) = 1, shares 1 and 0
    strategic = spreads["emea-strategic"]
    assert [(r.owner_id, r.open_cents) for r in strategic.reps] == [("o7", 4_000_000), ("o8", 0)]
    assert (strategic.cv, strategic.max_share, strategic.min_share) == (1.0, 1.0, 0.0)
    # americas: c and d of o1 -> one rep, 120,000: cv 0, share 1
    americas = spreads["americas"]
    assert (americas.open_cents, americas.cv, americas.max_share) == (12_000_000, 0.0, 1.0)
    # only what is due in February: emea has i (unpriced) only, strategic n 10,000 of o7
    feb = parse_period("2024-02", 0, TZ)
    due = {s.territory: s for s in territory_spreads(quotas, deals, RATES, period=feb)}
    assert (due["emea"].open_cents, due["emea"].unpriced_deals, due["emea"].cv) == (0, 1, None)
    assert [(r.owner_id, r.open_cents) for r in due["emea-strategic"].reps] == [("o7", 1_000_000), ("o8", 0)]
    assert due["americas"].reps == () and due["americas"].to_dict()["reps"] == []


@given(
    st.lists(st.integers(0, 10**9), min_size=1, max_size=12),
    st.integers(1, 1000),
    st.randoms(use_true_random=False),
)
def test_spread_ignores_rep_order_and_a_common_scale(values: list[int], k: int, rnd: random.Random) -> None:
    s = spread(values)
    shuffled = values[:]
    rnd.shuffle(shuffled)
    assert spread(shuffled) == s
    scaled = spread([k * v for v in values])
    if s.cv is None:
        assert scaled.cv is None
        return
    assert scaled.cv == pytest.approx(s.cv, abs=1e-12)
    assert scaled.max_share == pytest.approx(s.max_share) and scaled.min_share == pytest.approx(s.min_share)
    n = len(values)
    assert s.min_share is not None and s.max_share is not None
    assert s.min_share <= 1 / n + 1e-12 <= s.max_share + 2e-12
    assert 0.0 <= s.cv <= math.sqrt(n - 1) + 1e-9


@settings(max_examples=30, deadline=None)
@given(st.randoms(use_true_random=False))
def test_standings_do_not_depend_on_deal_order(rnd: random.Random) -> None:
    config = load_quotas(EXAMPLE_QUOTAS_FILE)  # the shipped example
    shuffled = DEALS[:]
    rnd.shuffle(shuffled)
    assert standings(config, shuffled, RATES, TZ) == standings(config, DEALS, RATES, TZ)
    assert territory_spreads(config, shuffled, RATES) == territory_spreads(config, DEALS, RATES)


def test_the_example_file_loads() -> None:
    config = load_quotas(EXAMPLE_QUOTAS_FILE, reporting_currency="USD")
    assert config.territories["emea-strategic"] == Territory(
        "emea-strategic", frozenset({"emea"}), frozenset({"o7", "o8"})
    )
    assert config.quota("territory", "emea", "2024-Q1").amount_cents == 90_000_050  # type: ignore[union-attr]
    assert config.quota("owner", "o1", "2031-Q1") is None
    assert [p.label for p in config.periods()] == ["2024-Q1", "FY2024", "2024-03", "2024-Q2"]


def test_fiscal_labels_follow_the_fiscal_year_start(tmp_path: Path) -> None:
    path = write(tmp_path, 'currency = "USD"\n[quotas.team.t]\n"FY2024-Q1" = 1\n"2024" = 2\n')
    # a fiscal year starting in October is named by the year it ends in: FY2024-Q1 is
    # 2023-10-01..2023-12-31; a calendar year stays a calendar year
    fiscal, year = load_quotas(path, fiscal_start_month=10).quotas
    assert (fiscal.period.first_day, fiscal.period.last_day) == (
        date(2023, 10, 1).toordinal(),
        date(2023, 12, 31).toordinal(),
    )
    assert (year.period.first_day, year.period.last_day) == (
        date(2024, 1, 1).toordinal(),
        date(2024, 12, 31).toordinal(),
    )
    ent = write(tmp_path, 'currency = "USD"\n[quotas.team.ent]\n"FY2024-Q1" = 1\n', "ent.toml")
    # ent in October..December 2023: only f (won 30 December 2023, 5,000); with fiscal
    # years starting in January, FY2024-Q1 is January..March 2024: a + b + g = 60,800
    october = standings(load_quotas(ent, fiscal_start_month=10), DEALS, RATES, TZ)
    january = standings(load_quotas(ent), DEALS, RATES, TZ)
    assert (october[0].won_cents, january[0].won_cents) == (500_000, 6_080_000)


def spring(label: str) -> Period:
    """A parser that knows one label of its own besides the standard ones."""
    if label in ("spring-2024", "2024-spring"):
        first = date(2024, 3, 1).toordinal()
        return Period("spring-2024", first, first + 91)
    return parse_period(label, 0, TZ)


def test_a_parser_passed_in_resolves_other_labels(tmp_path: Path) -> None:
    path = write(tmp_path, 'currency = "USD"\n[quotas.owner.o1]\n"spring-2024" = 10\n"2024-01" = 5\n')
    config = load_quotas(path, parse=spring)
    assert [(q.period.label, q.amount_cents) for q in config.quotas] == [
        ("spring-2024", 1000),
        ("2024-01", 500),
    ]
    with pytest.raises(ConfigError, match=r"quotas\.owner\.o1\.spring-2024: period must be"):
        load_quotas(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[quotas.owner.o1]\n'2024-Q1' = 1\n", "currency: required"),
        ('currency = "EUR"\n', "currency: amounts are in EUR but the reporting currency is USD"),
        (
            'currency = "USD"\n[quota.owner.o1]\n"2024-Q1" = 1\n',
            "quota: unknown key (expected one of currency",
        ),
        ('currency = "USD"\n[quotas.region.emea]\n"2024-Q1" = 1\n', "quotas.region: unknown key"),
        (
            'currency = "USD"\n[quotas.owner.o1]\n"2024-13" = 1\n',
            "quotas.owner.o1.2024-13: period must be YYYY-MM",
        ),
        (
            'currency = "USD"\n[quotas.owner.o1]\n"last-30d" = 1\n',
            "quotas.owner.o1.last-30d: a quota period must be fixed",
        ),
        (
            'currency = "USD"\n[quotas.owner.o1]\n"2024-Q1" = 0\n',
            "quotas.owner.o1.2024-Q1: quota must be > 0, got 0",
        ),
        ('currency = "USD"\n[quotas.owner.o1]\n"2024-Q1" = -5\n', "quota must be > 0"),
        ('currency = "USD"\n[quotas.owner.o1]\n"2024-Q1" = 1.005\n', "quota must have at most two decimals"),
        ('currency = "USD"\n[quotas.owner.o1]\n"2024-Q1" = "lots"\n', "quota must be a number, got 'lots'"),
        ('currency = "USD"\n[quotas.owner.o1]\n"2024-Q1" = true\n', "quota must be a number, got True"),
        ('currency = "USD"\n[quotas.owner.o1]\n"2024-Q1" = nan\n', "quota must be a finite number"),
        ('currency = "USD"\n[quotas.owner]\no1 = 5\n', "quotas.owner.o1: must be a table"),
        ('currency = "USD"\n[quotas.territory.apac]\n"2024-Q1" = 1\n', "territory 'apac' is not defined"),
        (
            'currency = "USD"\n[territories.a]\nregions = ["emea"]\n'
            '[territories.b]\nregions = ["na", "emea"]\n',
            "territories.b.regions: region 'emea' already belongs to territory 'a'",
        ),
        (
            'currency = "USD"\n[territories.a]\nregions = ["emea"]\nowners = ["o7"]\n'
            '[territories.b]\nregions = ["emea"]\nowners = ["o8", "o7"]\n',
            "territories.b.owners: owner 'o7' in region 'emea' already belongs to territory 'a'",
        ),
        ('currency = "USD"\n[territories.a]\nowners = ["o7"]\n', "territories.a: lacks 'regions'"),
        (
            'currency = "USD"\n[territories.a]\nregions = []\n',
            "territories.a.regions: must be a non-empty list",
        ),
        (
            'currency = "USD"\n[territories.a]\nregions = ["x", "x"]\n',
            "territories.a.regions: lists a name twice",
        ),
        ('currency = "USD"\n[territories.a]\nregion = ["x"]\n', "territories.a.region: unknown key"),
        ("currency = ", "not valid TOML"),
    ],
)
def test_validation_errors_name_file_key_and_problem(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_quotas(path, reporting_currency="USD")
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)


def test_a_period_spelled_twice_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, 'currency = "USD"\n[quotas.team.t]\n"spring-2024" = 1\n"2024-spring" = 2\n')
    with pytest.raises(ConfigError, match=r"quotas\.team\.t: period spring-2024 given twice"):
        load_quotas(path, parse=spring)


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_quotas(tmp_path / "nope.toml")
