"""Quotas and territories: who is on track, and where the open pipeline is unevenly spread.

Configuration (TOML, ``streams/example_quotas.toml``), loaded and validated once at start
by :func:`load_quotas`; every problem is a :class:`~streams.pipelines.ConfigError` naming
the file, the key and what is wrong::

    currency = "USD"                       # must be the reporting currency

    [territories.emea]                     # a region, everyone selling in it
    regions = ["emea"]
    [territories.emea-strategic]           # a carve-out: these owners' deals in emea
    regions = ["emea"]
    owners = ["o7", "o8"]

    [quotas.owner.o1]                      # scope owner | team | territory, then its key
    "2024-Q1" = 250_000                    # period label = quota in the reporting currency
    [quotas.team.enterprise]
    "FY2024" = 4_000_000.00
    [quotas.territory.emea]
    "2024-Q1" = "900000.50"

Periods are the fixed labels of :mod:`streams.periods`: months ``2024-03``, quarters
``2024-Q1``, years ``2024``, fiscal years and quarters ``FY2024``, ``FY2024-Q1`` (with the
configured fiscal-year start month) and day ranges ``2024-03-01..2024-05-15``; trailing
windows (``last-30d``) are refused, a quota needs a period that does not move.
A quota is an amount > 0 with at most two decimals (kept as integer cents).

**Territory of a deal** (its current ``region`` and ``owner_id``): the territory listing
that owner among its ``owners`` with the deal's region among its ``regions``, else the
territory without an owner list having that region, else none.  Two region-only
territories sharing a region, or two owner-listed ones sharing a (region, owner) pair,
are rejected, so every deal has at most one territory.

**Figures** of a scope (owner, team or territory, by the deal's *current* dimensions) in a
period, money in cents of the reporting currency (:class:`~streams.pipelines.Rates`):

* *won*: the deals whose status is won and whose close (``Deal.closed_at``, calendar day
  in ``tz``) lies in the period, at their *current* amount (a correction after close
  counts, as it does for commission);
* *open due*: the open deals whose ``expected_close_date`` lies in the period (a deal
  without one, or whose date is past, is due in no period);
* a deal whose currency has no rate counts 0 cents and one ``unpriced`` deal.

From these, for a quota ``Q`` (:class:`QuotaStanding`):

* ``attainment = won / Q`` (a ratio, 1.0 is 100 %);
* ``gap = max(Q - won, 0)``: the quota still to win, 0 once it is reached;
* ``coverage = open_due / gap``, undefined (None) when the gap is 0.

**Spread** of a territory's open pipeline over its reps (:class:`TerritorySpread`): the
reps are the territory's listed owners (with 0 when they have no open deal) plus the
owners of its open deals; open deals without an owner are ``unassigned`` and in no rep's
share.  With ``x_i`` the open cents of rep ``i``, ``n`` reps, ``S = sum x_i`` and mean
``m = S / n``:

* ``cv`` = population standard deviation / mean = ``sqrt(sum (x_i - m)^2 / n) / m``:
  0 when every rep holds the same, ``sqrt(n - 1)`` when one rep holds everything;
* ``max_share = max x_i / S`` and ``min_share = min x_i / S`` (``1/n`` each when even);
* all three undefined (None) when ``n = 0`` or ``S = 0``.

They do not change with the order of the reps or a common scale of their pipelines.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from streams.periods import Period, PeriodError, day_of, parse_period
from streams.pipelines import ConfigError, Rates, _read_toml

EXAMPLE_QUOTAS_FILE = Path(__file__).with_name("example_quotas.toml")
SCOPES = ("owner", "team", "territory")
UNASSIGNED = None  # owner of an open deal without one, in territory figures

#: A period label -> :class:`Period` resolver; raises ``PeriodError`` on a bad label.
PeriodParser = Callable[[str], Period]

_TRAILING = re.compile(r"^last-")
_UTC = ZoneInfo("UTC")


class DealLike(Protocol):
    """What this module reads of a deal (``streams.deals.Deal``), read-only."""

    @property
    def deal_id(self) -> str: ...
    @property
    def status(self) -> str: ...  # "open" | "won" | "lost" | "deleted"
    @property
    def amount(self) -> Decimal: ...
    @property
    def currency(self) -> str: ...
    @property
    def owner_id(self) -> str | None: ...
    @property
    def team(self) -> str | None: ...
    @property
    def region(self) -> str | None: ...
    @property
    def expected_close_date(self) -> date | None: ...
    @property
    def closed_at(self) -> int | None: ...


# --------------------------------------------------------------------------- config


def fixed_period(label: str, fiscal_start_month: int = 1) -> Period:
    """The default period parser: :func:`streams.periods.parse_period` without trailing
    windows (a quota needs a period that does not move with the clock)."""
    if _TRAILING.match(label):
        raise PeriodError(f"a quota period must be fixed, not a trailing window, got {label!r}")
    return parse_period(label, 0, _UTC, fiscal_start_month)


@dataclass(frozen=True, slots=True)
class Territory:
    """Deals in one of ``regions``; only those of ``owners`` when it lists owners."""

    id: str
    regions: frozenset[str]
    owners: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class Quota:
    scope: str  # owner | team | territory
    key: str
    period: Period
    amount_cents: int


@dataclass(frozen=True)
class QuotaConfig:
    currency: str
    territories: Mapping[str, Territory]
    quotas: tuple[Quota, ...]
    _by_region: dict[str, str] = field(init=False, repr=False, compare=False)
    _by_owner: dict[tuple[str, str], str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_region: dict[str, str] = {}
        by_owner: dict[tuple[str, str], str] = {}
        for t in self.territories.values():
            for region in t.regions:
                if t.owners is None:
                    by_region[region] = t.id
                else:
                    for owner in t.owners:
                        by_owner[(region, owner)] = t.id
        object.__setattr__(self, "_by_region", by_region)
        object.__setattr__(self, "_by_owner", by_owner)

    def territory_of(self, region: str | None, owner_id: str | None) -> str | None:
        """The territory of a deal in ``region`` owned by ``owner_id`` (module doc)."""
        if region is None:
            return None
        if owner_id is not None:
            listed = self._by_owner.get((region, owner_id))
            if listed is not None:
                return listed
        return self._by_region.get(region)

    def quota(self, scope: str, key: str, period_label: str) -> Quota | None:
        for q in self.quotas:
            if (q.scope, q.key, q.period.label) == (scope, key, period_label):
                return q
        return None

    def periods(self) -> tuple[Period, ...]:
        """The distinct periods that have quotas, in order of their first day."""
        seen = {q.period.label: q.period for q in self.quotas}
        return tuple(sorted(seen.values(), key=lambda p: (p.first_day, p.last_day, p.label)))


def money_cents(value: object) -> int:
    """A TOML amount (integer, float or decimal string) as integer cents; ValueError unless
    it is a finite number with at most two decimals."""
    d = decimal_of(value)
    cents = d * 100
    if cents != cents.to_integral_value():
        raise ValueError(f"must have at most two decimals, got {value!r}")
    return int(cents)


def positive_cents(path: Path, where: str, value: object, what: str = "") -> int:
    """:func:`money_cents` of a setting that must be > 0; ConfigError naming it otherwise
    (``what`` prefixes the problem: ``quota must be > 0``)."""
    try:
        cents = money_cents(value)
    except ValueError as exc:
        raise ConfigError(f"{path}: {where}: {what}{exc}") from exc
    if cents <= 0:
        raise ConfigError(f"{path}: {where}: {what}must be > 0, got {value!r}")
    return cents


def decimal_of(value: object) -> Decimal:
    """A TOML number (integer, float or decimal string) as the decimal it is written as
    (``0.08`` is 8/100, not the binary float nearest to it); ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"must be a number, got {value!r}")
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"must be a number, got {value!r}") from None
    if not d.is_finite():
        raise ValueError(f"must be a finite number, got {value!r}")
    return d


def check_keys(path: Path, where: str, table: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """ConfigError naming the first key of ``table`` not in ``allowed`` (a typo)."""
    allowed = tuple(allowed)
    for key in table:
        if key not in allowed:
            raise ConfigError(f"{path}: {where}{key}: unknown key (expected one of {', '.join(allowed)})")


def string_list(path: Path, where: str, value: object) -> frozenset[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{path}: {where}: must be a non-empty list of non-empty strings, got {value!r}")
    if len(set(value)) != len(value):
        raise ConfigError(f"{path}: {where}: lists a name twice")
    return frozenset(value)


def check_currency(path: Path, doc: Mapping[str, Any], reporting_currency: str | None) -> str:
    currency = doc.get("currency")
    if not isinstance(currency, str) or not currency:
        raise ConfigError(f'{path}: currency: required, the reporting currency of its amounts (e.g. "USD")')
    if reporting_currency is not None and currency != reporting_currency:
        raise ConfigError(
            f"{path}: currency: amounts are in {currency} but the reporting currency is {reporting_currency}"
        )
    return currency


def load_quotas(
    path: Path | str = EXAMPLE_QUOTAS_FILE,
    *,
    fiscal_start_month: int = 1,
    parse: PeriodParser | None = None,
    reporting_currency: str | None = None,
) -> QuotaConfig:
    """Read and validate a quotas file (module doc); ConfigError on any problem.

    Period labels are resolved by ``parse`` if given, else by :func:`fixed_period` with
    ``fiscal_start_month`` (``SALESOPS_FISCAL_YEAR_START_MONTH``: what ``FY2024`` means);
    ``reporting_currency`` (the rates file's) is checked against the file's ``currency``
    when given."""
    path = Path(path)
    resolve = parse if parse is not None else partial(fixed_period, fiscal_start_month=fiscal_start_month)

    doc = _read_toml(path)
    check_keys(path, "", doc, ("currency", "territories", "quotas"))
    currency = check_currency(path, doc, reporting_currency)
    territories = _territories(path, doc.get("territories", {}))
    quotas_doc = doc.get("quotas", {})
    if not isinstance(quotas_doc, dict):
        raise ConfigError(f"{path}: quotas: must be a table of [quotas.<scope>.<name>] tables")
    check_keys(path, "quotas.", quotas_doc, SCOPES)
    quotas: list[Quota] = []
    for scope in SCOPES:
        keys = quotas_doc.get(scope, {})
        if not isinstance(keys, dict):
            raise ConfigError(f"{path}: quotas.{scope}: must be a table of [quotas.{scope}.<name>] tables")
        for key, by_period in keys.items():
            where = f"quotas.{scope}.{key}"
            if not isinstance(by_period, dict) or not by_period:
                raise ConfigError(f'{path}: {where}: must be a table of "<period>" = <amount>')
            if scope == "territory" and key not in territories:
                raise ConfigError(f"{path}: {where}: territory {key!r} is not defined under [territories]")
            for label, amount in by_period.items():
                here = f"{where}.{label}"
                try:
                    period = resolve(label)
                except PeriodError as exc:
                    raise ConfigError(f"{path}: {here}: {exc}") from exc
                cents = positive_cents(path, here, amount, "quota ")
                quotas.append(Quota(scope, key, period, cents))
    seen: dict[tuple[str, str, str], str] = {}
    for q in quotas:
        ident = (q.scope, q.key, q.period.label)
        if ident in seen:  # two labels of one period, e.g. spelled differently
            raise ConfigError(f"{path}: quotas.{q.scope}.{q.key}: period {q.period.label} given twice")
        seen[ident] = q.period.label
    return QuotaConfig(currency=currency, territories=territories, quotas=tuple(quotas))


def _territories(path: Path, raw: object) -> dict[str, Territory]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: territories: must be a table of [territories.<id>] tables")
    out: dict[str, Territory] = {}
    claimed_region: dict[str, str] = {}
    claimed_pair: dict[tuple[str, str], str] = {}
    for tid, body in raw.items():
        where = f"territories.{tid}"
        if not isinstance(body, dict):
            raise ConfigError(f"{path}: {where}: must be a table with regions (and optionally owners)")
        check_keys(path, f"{where}.", body, ("regions", "owners"))
        if "regions" not in body:
            raise ConfigError(f"{path}: {where}: lacks 'regions'")
        regions = string_list(path, f"{where}.regions", body["regions"])
        owners = string_list(path, f"{where}.owners", body["owners"]) if "owners" in body else None
        for region in sorted(regions):
            if owners is None:
                other = claimed_region.setdefault(region, tid)
                if other != tid:
                    raise ConfigError(
                        f"{path}: {where}.regions: region {region!r} already belongs to territory {other!r}"
                    )
                continue
            for owner in sorted(owners):
                other = claimed_pair.setdefault((region, owner), tid)
                if other != tid:
                    raise ConfigError(
                        f"{path}: {where}.owners: owner {owner!r} in region {region!r} already belongs "
                        f"to territory {other!r}"
                    )
        out[tid] = Territory(tid, regions, owners)
    return out


# --------------------------------------------------------------------------- figures


def attainment(won_cents: int, quota_cents: int) -> float:
    """``won / quota``; the quota must be > 0."""
    return won_cents / quota_cents


def gap(quota_cents: int, won_cents: int) -> int:
    """The quota still to win: ``max(quota - won, 0)``."""
    return max(quota_cents - won_cents, 0)


def coverage(open_due_cents: int, quota_cents: int, won_cents: int) -> float | None:
    """``open due / (quota - won)``; None once the quota is reached (nothing to cover)."""
    remaining = gap(quota_cents, won_cents)
    return open_due_cents / remaining if remaining else None


@dataclass(slots=True)
class Figures:
    """What a scope's deals add up to in one period (cents of the reporting currency)."""

    won_cents: int = 0
    won_deals: int = 0
    open_due_cents: int = 0
    open_due_deals: int = 0
    unpriced_deals: int = 0


@dataclass(frozen=True, slots=True)
class QuotaStanding:
    scope: str
    key: str
    period: str
    quota_cents: int
    won_cents: int
    won_deals: int
    open_due_cents: int
    open_due_deals: int
    unpriced_deals: int
    attainment: float
    gap_cents: int
    coverage: float | None

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


def _keys(config: QuotaConfig, deal: DealLike) -> tuple[tuple[str, str], ...]:
    keys: list[tuple[str, str]] = []
    if deal.owner_id is not None:
        keys.append(("owner", deal.owner_id))
    if deal.team is not None:
        keys.append(("team", deal.team))
    territory = config.territory_of(deal.region, deal.owner_id)
    if territory is not None:
        keys.append(("territory", territory))
    return tuple(keys)


def in_period_won(deal: DealLike, period: Period, tz: ZoneInfo) -> bool:
    """The deal is won and its close falls on a day of ``period``."""
    closed = deal.closed_at
    return deal.status == "won" and closed is not None and period.contains(day_of(closed, tz))


def due_in(deal: DealLike, period: Period) -> bool:
    """The deal is open and expected to close on a day of ``period``."""
    d = deal.expected_close_date
    return deal.status == "open" and d is not None and period.contains(d.toordinal())


def period_figures(
    config: QuotaConfig, deals: Iterable[DealLike], periods: Iterable[Period], rates: Rates, tz: ZoneInfo
) -> dict[str, dict[tuple[str, str], Figures]]:
    """Per period label, the figures per (scope, key) of ``deals`` (module doc); only
    scopes with a deal in them appear.  One pass: each deal's day, value and scopes are
    found once, however many periods there are."""
    periods = tuple(periods)
    out: dict[str, dict[tuple[str, str], Figures]] = {p.label: {} for p in periods}
    for deal in deals:
        if deal.status == "won":
            closed = deal.closed_at
            day = None if closed is None else day_of(closed, tz)
        elif deal.status == "open" and deal.expected_close_date is not None:
            day = deal.expected_close_date.toordinal()
        else:
            continue
        inside = [p.label for p in periods if day is not None and p.contains(day)]
        if not inside:
            continue
        won = deal.status == "won"
        cents = rates.to_reporting_cents(deal.amount, deal.currency)
        keys = _keys(config, deal)
        for label in inside:
            by_key = out[label]
            for key in keys:
                f = by_key.get(key)
                if f is None:
                    f = by_key[key] = Figures()
                if cents is None:
                    f.unpriced_deals += 1
                elif won:
                    f.won_cents += cents
                    f.won_deals += 1
                else:
                    f.open_due_cents += cents
                    f.open_due_deals += 1
    return out


def standings(
    config: QuotaConfig,
    deals: Iterable[DealLike],
    rates: Rates,
    tz: ZoneInfo,
    period_label: str | None = None,
) -> list[QuotaStanding]:
    """Attainment, gap and coverage of every quota (of ``period_label`` only, when given),
    in the file's order of scopes (owner, team, territory) and keys."""
    periods = [p for p in config.periods() if period_label is None or p.label == period_label]
    figures_by_period = period_figures(config, deals, periods, rates, tz)
    out: list[QuotaStanding] = []
    for q in config.quotas:
        by_key = figures_by_period.get(q.period.label)
        if by_key is None:
            continue
        f = by_key.get((q.scope, q.key)) or Figures()
        out.append(
            QuotaStanding(
                scope=q.scope,
                key=q.key,
                period=q.period.label,
                quota_cents=q.amount_cents,
                won_cents=f.won_cents,
                won_deals=f.won_deals,
                open_due_cents=f.open_due_cents,
                open_due_deals=f.open_due_deals,
                unpriced_deals=f.unpriced_deals,
                attainment=attainment(f.won_cents, q.amount_cents),
                gap_cents=gap(q.amount_cents, f.won_cents),
                coverage=coverage(f.open_due_cents, q.amount_cents, f.won_cents),
            )
        )
    return out


# --------------------------------------------------------------------------- spread


@dataclass(frozen=True, slots=True)
class Spread:
    """How unevenly amounts are spread over reps (module doc); None when undefined."""

    cv: float | None
    max_share: float | None
    min_share: float | None


def spread(values: Iterable[int]) -> Spread:
    """Coefficient of variation and max/min share of ``values`` (module doc), computed
    exactly on integers up to the final square root."""
    xs = list(values)
    n, total = len(xs), sum(xs)
    if n == 0 or total == 0:
        return Spread(None, None, None)
    # cv^2 = n * sum (x - S/n)^2 / S^2 = (n * sum x^2 - S^2) / S^2, exact in integers
    variance_ratio = Fraction(n * sum(x * x for x in xs) - total * total, total * total)
    return Spread(math.sqrt(variance_ratio), max(xs) / total, min(xs) / total)


@dataclass(frozen=True, slots=True)
class RepPipeline:
    owner_id: str
    open_cents: int
    open_deals: int


@dataclass(frozen=True, slots=True)
class TerritorySpread:
    territory: str
    open_cents: int  # every open deal of the territory, unassigned ones included
    open_deals: int
    reps: tuple[RepPipeline, ...]  # by owner id
    unassigned_cents: int
    unassigned_deals: int
    unpriced_deals: int
    cv: float | None
    max_share: float | None
    min_share: float | None

    def to_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in self.__slots__}
        out["reps"] = [
            {"owner_id": r.owner_id, "open_cents": r.open_cents, "open_deals": r.open_deals}
            for r in self.reps
        ]
        return out


def territory_spreads(
    config: QuotaConfig, deals: Iterable[DealLike], rates: Rates, period: Period | None = None
) -> list[TerritorySpread]:
    """Per territory (in the file's order), its open pipeline per rep and how unevenly it
    is spread (module doc).  With ``period``, only the open deals due in it count."""
    cents: dict[str, dict[str | None, list[int]]] = {
        t.id: {o: [0, 0] for o in sorted(t.owners or ())} for t in config.territories.values()
    }
    unpriced = dict.fromkeys(config.territories, 0)
    for deal in deals:
        if deal.status != "open" or (period is not None and not due_in(deal, period)):
            continue
        tid = config.territory_of(deal.region, deal.owner_id)
        if tid is None:
            continue
        value = rates.to_reporting_cents(deal.amount, deal.currency)
        row = cents[tid].setdefault(deal.owner_id, [0, 0])
        if value is None:
            unpriced[tid] += 1
            value = 0
        row[0] += value
        row[1] += 1
    out: list[TerritorySpread] = []
    for tid, rows in cents.items():
        unassigned = rows.pop(UNASSIGNED, [0, 0])
        reps = tuple(RepPipeline(o, v, n) for o, (v, n) in sorted(rows.items()) if o is not None)
        s = spread(r.open_cents for r in reps)
        out.append(
            TerritorySpread(
                territory=tid,
                open_cents=sum(r.open_cents for r in reps) + unassigned[0],
                open_deals=sum(r.open_deals for r in reps) + unassigned[1],
                reps=reps,
                unassigned_cents=unassigned[0],
                unassigned_deals=unassigned[1],
                unpriced_deals=unpriced[tid],
                cv=s.cv,
                max_share=s.max_share,
                min_share=s.min_share,
            )
        )
    return out
