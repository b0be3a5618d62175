"""Compensation: commission earned per owner and period, with visible adjustments.

Plans (TOML, ``streams/example_plans.toml``), loaded and validated once at start by
:func:`load_plans`; every problem is a :class:`~streams.pipelines.ConfigError` naming the
file, the key and what is wrong::

    currency = "USD"              # must be the reporting currency

    [roles]                       # owner -> role
    o1 = "ae"

    [plans.ae-standard]
    role = "ae"                   # the plan of every owner with this role ...
    owners = ["o9"]               # ... and/or of these owners (optional)
    base_rate = 0.08              # rate from 0 % attainment up to the first tier
    tiers = [{ from = 1.0, rate = 0.12 }]               # marginal: 12 % above 100 %
    accelerators = [{ from = 1.5, multiplier = 1.25 }]  # optional
    decelerators = [{ below = 0.5, multiplier = 0.5 }]  # optional
    cap = 60_000                  # optional: at most this much commission per period

An owner's plan is the plan listing them in ``owners``, else the plan of their role in
``[roles]``, else none (no commission).  An owner in two plans' lists, a role with two
plans and a role in ``[roles]`` without a plan are rejected.  Rates are in 0..1,
attainment thresholds > 0 and strictly increasing per list, accelerator multipliers >= 1,
decelerator multipliers in (0, 1], and no decelerator threshold above an accelerator's.

**Rate at an attainment** ``a`` (``a = credited value / quota``): the rate of the tier
with the greatest ``from <= a`` (``base_rate`` below the first tier), times the multiplier
of the accelerator with the greatest ``from <= a`` and of the decelerator with the smallest
``below > a`` (1 where none applies).  The rate is **marginal**: the commission on a
credited value ``V`` with quota ``Q`` is the integral of the rate over ``0..V``, each
slice of value paid at the rate of the attainment it falls at (8 % up to 100 %, 12 %
above: ``V = 1.4 Q`` pays ``0.08 Q + 0.12 x 0.4 Q``).  With a ``cap``, the commission is
``min(that, cap)``.  All of it is exact (rates as the decimals they are written as).

**Credit**: a deal is credited to its *current* owner when its status is won and its
close (``Deal.closed_at``, calendar day in ``tz``) falls in the period, at its current
amount in cents of the reporting currency (:class:`~streams.pipelines.Rates`; a currency
without a rate credits 0 and counts as unpriced).  The deal keeps no owner history, so a
reassignment after close moves the credit, visibly (below).

**Statement lines, rounding.** The credited deals are taken in order of
``(closed_at, deal_id)``, never in input order; deal ``i`` with cumulative credit
``V_i`` earns ``C(V_i) - C(V_(i-1))`` exactly, rounded **half to even to the cent per
line**; with a cap, a line is cut so that the running sum of rounded lines never exceeds
it.  The commission earned to date is the sum of the lines, so it may differ by rounding
from ``C(V)`` rounded once (:func:`commission_at`, used for projections).

**Adjustments, never a silent rewrite.** :func:`statement` is a pure function of the
deal states and the *ledger*: every :class:`StatementLine` already reported for the
owner and period.  Per deal, the target line above is compared with the sum of what the
ledger holds for it; a deal not in the ledger (or whose lines there add up to nothing:
clawed back, then won again) gets a ``credit`` line; a deal whose target differs from
what was reported gets one ``adjustment`` line carrying the differences (credit and
commission, in cents), when it happened and why:

========================  =====================================================  ===============
reason                    the deal, compared with what was reported              ``at``
========================  =====================================================  ===============
``deleted``               deleted, or no longer in the deal states               deletion (else ``as_of``)
``reopened``              open again                                             the reopening
``lost``                  now lost                                               its close
``reassigned``            won by another owner now                               its newest event
``moved_period``          won, but its close is no longer in the period          its close
``unpriced``              its currency lost its rate                             its newest event
``amount_changed``        its credited value changed                             the amount change
``recalculated``          same credit, other commission: earlier deals changed,  ``as_of``
                          moving it along the tiers or the cap
========================  =====================================================  ===============

The reasons are checked in that order.  Appending the new lines to the ledger and
computing again gives no new line; the statement does not depend on the order of the
deals or of the ledger lines.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple, Protocol
from zoneinfo import ZoneInfo

from streams import quotas
from streams.periods import Period, day_of
from streams.pipelines import ConfigError, Rates, _read_toml
from streams.quotas import (
    check_currency,
    check_keys,
    decimal_of,
    in_period_won,
    positive_cents,
    string_list,
)

EXAMPLE_PLANS_FILE = Path(__file__).with_name("example_plans.toml")
CREDIT = "credit"
ADJUSTMENT = "adjustment"
LINE_KINDS = (CREDIT, ADJUSTMENT)
WON_REASON = "won"  # the reason of a credit line
ADJUSTMENT_REASONS = (
    "deleted",
    "reopened",
    "lost",
    "reassigned",
    "moved_period",
    "unpriced",
    "amount_changed",
    "recalculated",
)


class ObservationLike(Protocol):
    @property
    def occurred_at(self) -> int: ...
    @property
    def status(self) -> str: ...
    @property
    def amount(self) -> Decimal: ...
    @property
    def currency(self) -> str: ...


class DealLike(quotas.DealLike, Protocol):
    """What this module reads of a deal (``streams.deals.Deal``), read-only."""

    @property
    def observations(self) -> Sequence[ObservationLike]: ...


# --------------------------------------------------------------------------- plans


@dataclass(frozen=True, slots=True)
class Band:
    """Attainment from ``start`` (inclusive) to ``end`` (None: no end) pays ``rate``."""

    start: Fraction
    end: Fraction | None
    rate: Fraction


@dataclass(frozen=True)
class Plan:
    id: str
    base_rate: Fraction
    tiers: tuple[tuple[Fraction, Fraction], ...] = ()  # (from, rate), increasing
    accelerators: tuple[tuple[Fraction, Fraction], ...] = ()  # (from, multiplier)
    decelerators: tuple[tuple[Fraction, Fraction], ...] = ()  # (below, multiplier)
    cap_cents: int | None = None
    role: str | None = None
    owners: frozenset[str] = frozenset()
    bands: tuple[Band, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "bands", _bands(self))

    def rate_at(self, attainment: Fraction) -> Fraction:
        """The marginal rate paid at ``attainment`` (module doc)."""
        rate = self.base_rate
        for start, r in self.tiers:
            if start <= attainment:
                rate = r
        multiplier = Fraction(1)
        for start, m in self.accelerators:
            if start <= attainment:
                multiplier = m
        for below, m in self.decelerators:
            if attainment < below:  # the smallest threshold above: thresholds increase
                multiplier *= m
                break
        return rate * multiplier


def _bands(plan: Plan) -> tuple[Band, ...]:
    points = sorted(
        {Fraction(0)}
        | {f for f, _ in plan.tiers}
        | {f for f, _ in plan.accelerators}
        | {b for b, _ in plan.decelerators}
    )
    ends: list[Fraction | None] = [*points[1:], None]
    return tuple(Band(start, end, plan.rate_at(start)) for start, end in zip(points, ends, strict=True))


@dataclass(frozen=True)
class PlanConfig:
    currency: str
    plans: Mapping[str, Plan]
    roles: Mapping[str, str]  # owner -> role

    def plan_for(self, owner_id: str) -> Plan | None:
        """The plan listing ``owner_id``, else the plan of their role, else None."""
        for plan in self.plans.values():
            if owner_id in plan.owners:
                return plan
        role = self.roles.get(owner_id)
        if role is None:
            return None
        for plan in self.plans.values():
            if plan.role == role:
                return plan
        return None


_PLAN_KEYS = ("role", "owners", "base_rate", "tiers", "accelerators", "decelerators", "cap")


def load_plans(path: Path | str = EXAMPLE_PLANS_FILE, *, reporting_currency: str | None = None) -> PlanConfig:
    """Read and validate a plans file (module doc); ConfigError on any problem.
    ``reporting_currency`` (the rates file's) is checked against the file's ``currency``."""
    path = Path(path)
    doc = _read_toml(path)
    check_keys(path, "", doc, ("currency", "roles", "plans"))
    currency = check_currency(path, doc, reporting_currency)
    roles = doc.get("roles", {})
    if not isinstance(roles, dict):
        raise ConfigError(f'{path}: roles: must be a table of owner = "role"')
    for owner, role in roles.items():
        if not isinstance(role, str) or not role:
            raise ConfigError(f"{path}: roles.{owner}: must be a role name, got {role!r}")
    raw_plans = doc.get("plans", {})
    if not isinstance(raw_plans, dict) or not raw_plans:
        raise ConfigError(f"{path}: plans: no [plans.<id>] defined")
    plans: dict[str, Plan] = {}
    owner_plan: dict[str, str] = {}
    role_plan: dict[str, str] = {}
    for pid, body in raw_plans.items():
        plan = _plan(path, pid, body)
        for owner in sorted(plan.owners):
            other = owner_plan.setdefault(owner, pid)
            if other != pid:
                raise ConfigError(f"{path}: plans.{pid}.owners: owner {owner!r} is already in plan {other!r}")
        if plan.role is not None:
            other = role_plan.setdefault(plan.role, pid)
            if other != pid:
                raise ConfigError(f"{path}: plans.{pid}.role: role {plan.role!r} already has plan {other!r}")
        plans[pid] = plan
    for owner, role in roles.items():
        if role not in role_plan and owner not in owner_plan:
            raise ConfigError(f"{path}: roles.{owner}: role {role!r} has no plan")
    return PlanConfig(currency=currency, plans=plans, roles=dict(roles))


def _plan(path: Path, pid: str, body: object) -> Plan:
    where = f"plans.{pid}"
    if not isinstance(body, dict):
        raise ConfigError(f"{path}: {where}: must be a table")
    check_keys(path, f"{where}.", body, _PLAN_KEYS)
    role = body.get("role")
    if role is not None and (not isinstance(role, str) or not role):
        raise ConfigError(f"{path}: {where}.role: must be a role name, got {role!r}")
    owners = string_list(path, f"{where}.owners", body["owners"]) if "owners" in body else frozenset()
    if role is None and not owners:
        raise ConfigError(f"{path}: {where}: needs a role or owners (whom the plan applies to)")
    if "base_rate" not in body:
        raise ConfigError(f"{path}: {where}: lacks 'base_rate'")
    base_rate = _ratio(path, f"{where}.base_rate", body["base_rate"], high=Fraction(1))
    tiers = _steps(path, f"{where}.tiers", body.get("tiers", []), "from", "rate")
    accelerators = _steps(path, f"{where}.accelerators", body.get("accelerators", []), "from", "multiplier")
    decelerators = _steps(path, f"{where}.decelerators", body.get("decelerators", []), "below", "multiplier")
    for i, (_, rate) in enumerate(tiers):
        if rate > 1:
            raise ConfigError(f"{path}: {where}.tiers[{i}].rate: must be in 0..1, got {float(rate)}")
    for i, (_, m) in enumerate(accelerators):
        if m < 1:
            raise ConfigError(f"{path}: {where}.accelerators[{i}].multiplier: must be >= 1, got {float(m)}")
    for i, (_, m) in enumerate(decelerators):
        if not 0 < m <= 1:
            raise ConfigError(
                f"{path}: {where}.decelerators[{i}].multiplier: must be in (0, 1], got {float(m)}"
            )
    if accelerators and decelerators and decelerators[-1][0] > accelerators[0][0]:
        raise ConfigError(
            f"{path}: {where}.decelerators: a decelerator below {float(decelerators[-1][0])} overlaps the "
            f"accelerator from {float(accelerators[0][0])}"
        )
    cap = positive_cents(path, f"{where}.cap", body["cap"]) if "cap" in body else None
    return Plan(
        id=pid,
        base_rate=base_rate,
        tiers=tiers,
        accelerators=accelerators,
        decelerators=decelerators,
        cap_cents=cap,
        role=role,
        owners=owners,
    )


def _ratio(path: Path, where: str, value: object, *, high: Fraction | None = None) -> Fraction:
    try:
        f = Fraction(decimal_of(value))
    except ValueError as exc:
        raise ConfigError(f"{path}: {where}: {exc}") from exc
    if f < 0 or (high is not None and f > high):
        bounds = f"0..{high}" if high is not None else ">= 0"
        raise ConfigError(f"{path}: {where}: must be in {bounds}, got {value!r}")
    return f


def _steps(path: Path, where: str, raw: object, at: str, value: str) -> tuple[tuple[Fraction, Fraction], ...]:
    if not isinstance(raw, list):
        raise ConfigError(f"{path}: {where}: must be a list of {{ {at} = ..., {value} = ... }}")
    out: list[tuple[Fraction, Fraction]] = []
    for i, step in enumerate(raw):
        here = f"{where}[{i}]"
        if not isinstance(step, dict):
            raise ConfigError(f"{path}: {here}: must be a table {{ {at} = ..., {value} = ... }}")
        check_keys(path, f"{here}.", step, (at, value))
        for key in (at, value):
            if key not in step:
                raise ConfigError(f"{path}: {here}: lacks {key!r}")
        threshold = _ratio(path, f"{here}.{at}", step[at])
        if threshold <= 0:
            raise ConfigError(f"{path}: {here}.{at}: attainment must be > 0, got {step[at]!r}")
        if out and threshold <= out[-1][0]:
            raise ConfigError(
                f"{path}: {here}.{at}: thresholds must increase, {step[at]!r} follows {float(out[-1][0])}"
            )
        out.append((threshold, _ratio(path, f"{here}.{value}", step[value])))
    return tuple(out)


# --------------------------------------------------------------------------- commission


def exact_commission(plan: Plan, quota_cents: int, value_cents: int) -> Fraction:
    """Commission in cents (exact) on a credited value with the given quota, capped."""
    total = _uncapped(plan, quota_cents, value_cents)
    return total if plan.cap_cents is None else min(total, Fraction(plan.cap_cents))


def _uncapped(plan: Plan, quota_cents: int, value_cents: int) -> Fraction:
    """The integral of the marginal rate over 0..value (module doc)."""
    if quota_cents <= 0:
        raise ValueError(f"a quota must be > 0, got {quota_cents}")
    total = Fraction(0)
    for band in plan.bands:
        lo = band.start * quota_cents
        if value_cents <= lo:
            break
        hi = value_cents if band.end is None else min(Fraction(value_cents), band.end * quota_cents)
        total += (hi - lo) * band.rate
    return total


def commission_at(plan: Plan, quota_cents: int, value_cents: int) -> int:
    """Commission in cents on a credited value, rounded half to even once."""
    return round(exact_commission(plan, quota_cents, value_cents))


@dataclass(frozen=True, slots=True)
class Projection:
    value_cents: int
    attainment: float
    commission_cents: int
    earned_cents: int  # already earned (the statement's)
    additional_cents: int  # commission_cents - earned_cents

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


def projected_commission(
    plan: Plan, quota_cents: int, forecast_value_cents: int, earned_cents: int = 0
) -> Projection:
    """Commission of the period if its credited (won) value ends at ``forecast_value_cents``
    (for instance the P50 forecast, what is already won included), and how much that adds
    to ``earned_cents``."""
    commission = commission_at(plan, quota_cents, forecast_value_cents)
    return Projection(
        value_cents=forecast_value_cents,
        attainment=forecast_value_cents / quota_cents,
        commission_cents=commission,
        earned_cents=earned_cents,
        additional_cents=commission - earned_cents,
    )


# --------------------------------------------------------------------------- statements


@dataclass(frozen=True, slots=True)
class StatementLine:
    """One reported line: a deal's first credit, or a later adjustment of it (deltas)."""

    owner_id: str
    period: str
    deal_id: str
    kind: str  # credit | adjustment
    reason: str  # "won" for a credit, one of ADJUSTMENT_REASONS for an adjustment
    at: int  # epoch ms: the close for a credit, when it changed for an adjustment
    credit_cents: int
    commission_cents: int
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (str and int values only)."""
        return {name: getattr(self, name) for name in self.__slots__}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> StatementLine:
        line = cls(
            owner_id=str(raw["owner_id"]),
            period=str(raw["period"]),
            deal_id=str(raw["deal_id"]),
            kind=str(raw["kind"]),
            reason=str(raw["reason"]),
            at=int(raw["at"]),
            credit_cents=int(raw["credit_cents"]),
            commission_cents=int(raw["commission_cents"]),
            detail=str(raw.get("detail", "")),
        )
        if line.kind not in LINE_KINDS:
            raise ValueError(f"statement line kind must be one of {LINE_KINDS}, got {line.kind!r}")
        return line


@dataclass(frozen=True, slots=True)
class Statement:
    owner_id: str
    period: str
    plan_id: str
    quota_cents: int
    credited_cents: int  # current credited value
    credited_deals: int
    unpriced_deals: int
    attainment: float
    earned_cents: int  # commission earned to date: ledger + new lines
    reported_cents: int  # commission the ledger already held
    capped: bool  # the cap cut the commission
    lines: tuple[StatementLine, ...]  # new lines to append to the ledger

    @property
    def adjustments(self) -> tuple[StatementLine, ...]:
        return tuple(line for line in self.lines if line.kind == ADJUSTMENT)

    def to_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in self.__slots__}
        out["lines"] = [line.to_dict() for line in self.lines]
        return out


class _Target(NamedTuple):
    at: int  # closed_at
    credit: int
    commission: int


def _credits(
    plan: Plan,
    quota_cents: int,
    owner_id: str,
    period: Period,
    deals: Mapping[str, DealLike],
    rates: Rates,
    tz: ZoneInfo,
) -> tuple[dict[str, _Target], int, bool]:
    """Target line per credited deal, unpriced deals, whether the cap cut (module doc)."""
    credited: list[tuple[int, str, int]] = []
    unpriced = 0
    for deal in deals.values():
        if deal.owner_id != owner_id or not in_period_won(deal, period, tz):
            continue
        cents = rates.to_reporting_cents(deal.amount, deal.currency)
        if cents is None:
            unpriced += 1
            continue
        assert deal.closed_at is not None  # won
        credited.append((deal.closed_at, deal.deal_id, cents))
    credited.sort()
    targets: dict[str, _Target] = {}
    cumulative = 0
    before = Fraction(0)
    paid = 0
    for closed_at, deal_id, cents in credited:
        cumulative += cents
        upto = exact_commission(plan, quota_cents, cumulative)
        line = round(upto - before)
        if plan.cap_cents is not None:
            line = min(line, plan.cap_cents - paid)
        targets[deal_id] = _Target(closed_at, cents, line)
        before = upto
        paid += line
    capped = plan.cap_cents is not None and _uncapped(plan, quota_cents, cumulative) > plan.cap_cents
    return targets, unpriced, capped


def _run_start(deal: DealLike, same: Any) -> int:
    """Event time of the first observation of the deal's trailing run where ``same(o)``."""
    obs = deal.observations
    i = len(obs) - 1
    while i > 0 and same(obs[i - 1]):
        i -= 1
    return obs[i].occurred_at


def _money(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(cents) // 100:,}.{abs(cents) % 100:02d}"


def _why(
    deal: DealLike | None,
    owner_id: str,
    period: Period,
    rates: Rates,
    tz: ZoneInfo,
    reported_credit: int,
    target_credit: int,
    as_of_ms: int,
) -> tuple[str, int, str]:
    """(reason, at, detail) of an adjustment (module doc, in that order)."""
    if deal is None:
        return "deleted", as_of_ms, "the deal is no longer in the deal states"
    status = deal.status
    if status in ("deleted", "open"):
        at = _run_start(deal, lambda o: o.status == status)
        return ("deleted" if status == "deleted" else "reopened"), at, f"the won deal is {status} now"
    if status == "lost":
        return "lost", deal.closed_at or as_of_ms, "the won deal is lost now"
    newest = deal.observations[-1].occurred_at
    if deal.owner_id != owner_id:
        return "reassigned", newest, f"owner {owner_id} -> {deal.owner_id or 'none'}"
    assert deal.closed_at is not None  # won
    if not period.contains(day_of(deal.closed_at, tz)):
        closed = date.fromordinal(day_of(deal.closed_at, tz)).isoformat()
        return "moved_period", deal.closed_at, f"closed on {closed}, outside {period.label}"
    if rates.to_reporting_cents(deal.amount, deal.currency) is None:
        return "unpriced", newest, f"no rate for {deal.currency}"
    if target_credit != reported_credit:
        amount, currency = deal.amount, deal.currency
        at = _run_start(deal, lambda o: (o.amount, o.currency) == (amount, currency))
        return (
            "amount_changed",
            at,
            f"credit {_money(reported_credit)} -> {_money(target_credit)} ({amount} {currency})",
        )
    return "recalculated", as_of_ms, "earlier deals changed, moving this one along the tiers or the cap"


def statement(
    plan: Plan,
    quota_cents: int,
    owner_id: str,
    period: Period,
    deals: Iterable[DealLike],
    ledger: Iterable[StatementLine],
    rates: Rates,
    tz: ZoneInfo,
    as_of_ms: int,
) -> Statement:
    """The owner's commission statement for ``period`` (module doc): what is earned to
    date and the lines to append to the ledger.

    ``deals`` are the current deal states (any order; those of other owners and periods
    are ignored, except as the reason of an adjustment of a deal the ledger holds);
    ``ledger`` the lines reported so far (others than this owner's and period's are
    ignored); ``as_of_ms`` the time of this computation (pass event time for replays).
    ValueError if a deal id is repeated or the quota is not > 0."""
    if quota_cents <= 0:
        raise ValueError(f"a quota must be > 0, got {quota_cents}")
    by_id: dict[str, DealLike] = {}
    for deal in deals:
        if by_id.setdefault(deal.deal_id, deal) is not deal:
            raise ValueError(f"deal {deal.deal_id!r} given twice")
    targets, unpriced, capped = _credits(plan, quota_cents, owner_id, period, by_id, rates, tz)
    reported: dict[str, tuple[int, int]] = {}
    for line in ledger:
        if line.owner_id == owner_id and line.period == period.label:
            credit, commission = reported.get(line.deal_id, (0, 0))
            reported[line.deal_id] = (credit + line.credit_cents, commission + line.commission_cents)
    lines: list[StatementLine] = []
    for deal_id in targets.keys() | reported.keys():
        target = targets.get(deal_id)
        credit, commission = (target.credit, target.commission) if target else (0, 0)
        was = reported.get(deal_id)
        if was == (credit, commission):
            continue
        if target is not None and was in (None, (0, 0)):
            # first reported, or reported and clawed back to nothing, then won again
            lines.append(
                StatementLine(
                    owner_id, period.label, deal_id, CREDIT, WON_REASON, target.at, credit, commission
                )
            )
            continue
        assert was is not None
        was_credit, was_commission = was
        reason, at, detail = _why(
            by_id.get(deal_id), owner_id, period, rates, tz, was_credit, credit, as_of_ms
        )
        lines.append(
            StatementLine(
                owner_id,
                period.label,
                deal_id,
                ADJUSTMENT,
                reason,
                at,
                credit - was_credit,
                commission - was_commission,
                detail,
            )
        )
    lines.sort(key=lambda line: (line.at, line.deal_id))
    earned = sum(t.commission for t in targets.values())
    credited = sum(t.credit for t in targets.values())
    return Statement(
        owner_id=owner_id,
        period=period.label,
        plan_id=plan.id,
        quota_cents=quota_cents,
        credited_cents=credited,
        credited_deals=len(targets),
        unpriced_deals=unpriced,
        attainment=credited / quota_cents,
        earned_cents=earned,
        reported_cents=sum(c for _, c in reported.values()),
        capped=capped,
        lines=tuple(lines),
    )
