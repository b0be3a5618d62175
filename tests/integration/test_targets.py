"""Forecast, quotas and commission end to end: a simulated CRM feed, shuffled and with
extra duplicates, imported with a quotas and a plans file -> worker -> /api/attainment,
/api/commission and /api/forecast.  Attainment, coverage and commission are compared with
a recomputation written here from the raw rows and the README's definitions (not with
``streams``); a change to a won deal after its statement then shows as an adjustment."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from datetime import UTC, date, datetime
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from schemas.codec import Codec
from tests.integration.conftest import (
    Names,
    consume_until_quiet,
    create_topic,
    encoded_deal,
    poll,
    produce,
    run_cli,
)
from tests.integration.reference import DealReference, day, read_jsonl

QUOTA_OWNER = 150_000_00  # cents, every owner, the current quarter
QUOTA_OWNER_MONTH = 40_000_00
QUOTA_TEAM = 600_000_00
BASE_RATE, TIER_FROM, TIER_RATE = Fraction(8, 100), Fraction(1), Fraction(12, 100)


def periods_now() -> tuple[str, tuple[int, int], str, tuple[int, int]]:
    """(quarter label, its days, month label, its days) of today (UTC, the worker's zone)."""
    today = datetime.now(UTC).date()
    q = (today.month - 1) // 3
    q_first = date(today.year, 3 * q + 1, 1)
    q_next = date(today.year + (q == 3), (3 * q + 3) % 12 + 1, 1)
    m_first = today.replace(day=1)
    m_next = date(today.year + (today.month == 12), today.month % 12 + 1, 1)
    return (
        f"{today.year}-Q{q + 1}",
        (q_first.toordinal(), q_next.toordinal() - 1),
        f"{today.year}-{today.month:02d}",
        (m_first.toordinal(), m_next.toordinal() - 1),
    )


def write_files(tmp_path: Path, owners: list[str], teams: list[str]) -> tuple[Path, Path]:
    quarter, _, month, _ = periods_now()
    quotas = ['currency = "USD"', "", "[territories.emea]", 'regions = ["EMEA"]', ""]
    for o in owners:
        quotas += [
            f"[quotas.owner.{o}]",
            f'"{quarter}" = {QUOTA_OWNER / 100:.2f}',
            f'"{month}" = {QUOTA_OWNER_MONTH / 100:.2f}',
        ]
    for t in teams:
        quotas += [f"[quotas.team.{t}]", f'"{quarter}" = {QUOTA_TEAM // 100}']
    quotas += ["[quotas.territory.emea]", f'"{quarter}" = 900000']
    plans = ['currency = "USD"', "", "[roles]"] + [f'{o} = "ae"' for o in owners]
    plans += ["", "[plans.ae]", 'role = "ae"', "base_rate = 0.08", "tiers = [{ from = 1.0, rate = 0.12 }]"]
    qf, pf = tmp_path / "quotas.toml", tmp_path / "plans.toml"
    qf.write_text("\n".join(quotas) + "\n")
    pf.write_text("\n".join(plans) + "\n")
    return qf, pf


class Expected:
    """Attainment, coverage and commission recomputed from the raw events."""

    def __init__(self, ref: DealReference) -> None:
        self.ref = ref
        self.deals: dict[str, dict[str, Any]] = {}
        for deal_id, evs in ref.deals.items():
            last = evs[-1]
            status = ref.status(last)
            closed = None
            if status == "won":
                i = len(evs) - 1
                while i > 0 and ref.status(evs[i - 1]) == "won":
                    i -= 1
                closed = int(evs[i]["occurred_at"])
            self.deals[deal_id] = {
                "status": status,
                "cents": ref.cents(last),  # current amount
                "owner": last.get("owner_id"),
                "team": last.get("team"),
                "region": last.get("region"),
                "due": None
                if not last.get("expected_close_date")
                else date.fromisoformat(last["expected_close_date"]).toordinal(),
                "closed_at": closed,
            }

    def scope_of(self, d: dict[str, Any], scope: str) -> str | None:
        if scope == "territory":
            return "emea" if d["region"] == "EMEA" else None
        return d[scope]

    def standing(self, scope: str, key: str, days: tuple[int, int], quota: int) -> dict[str, Any]:
        won = open_due = 0
        for d in self.deals.values():
            if self.scope_of(d, scope) != key:
                continue
            if d["status"] == "won" and days[0] <= day(d["closed_at"]) <= days[1]:
                won += d["cents"]
            elif d["status"] == "open" and d["due"] is not None and days[0] <= d["due"] <= days[1]:
                open_due += d["cents"]
        gap = max(quota - won, 0)
        return {
            "won_cents": won,
            "open_due_cents": open_due,
            "gap_cents": gap,
            "attainment": won / quota,
            "coverage": open_due / gap if gap else None,
        }

    def commission(self, owner: str, days: tuple[int, int], quota: int) -> tuple[int, dict[str, int]]:
        """Earned cents and each deal's line: marginal 8 % to 100 %, 12 % above, per deal
        in close order, each line rounded half to even."""
        credited = sorted(
            (d["closed_at"], deal_id, d["cents"])
            for deal_id, d in self.deals.items()
            if d["owner"] == owner and d["status"] == "won" and days[0] <= day(d["closed_at"]) <= days[1]
        )

        def paid(value: int) -> Fraction:
            below = min(Fraction(value), TIER_FROM * quota)
            return below * BASE_RATE + max(Fraction(value) - TIER_FROM * quota, Fraction(0)) * TIER_RATE

        lines, cumulative = {}, 0
        for _at, deal_id, cents in credited:
            lines[deal_id] = round(paid(cumulative + cents) - paid(cumulative))
            cumulative += cents
        return sum(lines.values()), lines


@pytest.fixture
def imported(tmp_path: Path, names: Names) -> tuple[Names, Path, DealReference]:
    out = tmp_path / "sim"
    gen = run_cli(
        "simulate", "--seed", "11", "--deals", "400", "--survey-waves", "0", "--output-dir", str(out)
    )
    assert gen.returncode == 0, gen.stderr
    lines = (out / "deals.jsonl").read_text().splitlines()
    rng = random.Random(3)
    lines += rng.sample(lines, len(lines) // 10)  # duplicates on top of the simulator's own
    rng.shuffle(lines)
    shuffled = tmp_path / "shuffled.jsonl"
    shuffled.write_text("\n".join(lines) + "\n")
    create_topic(names.deal_events, names.partitions)
    done = run_cli("import", "deals", str(shuffled), "--no-progress", env=names.env())
    assert done.returncode == 0, done.stderr
    return names, shuffled, DealReference(read_jsonl(shuffled))


def test_attainment_coverage_and_commission_match_an_independent_recomputation(
    imported: tuple[Names, Path, DealReference], start_worker, tmp_path: Path, redis_client
) -> None:
    names, shuffled, ref = imported
    expected = Expected(ref)
    owners = sorted({d["owner"] for d in expected.deals.values() if d["owner"]})
    teams = sorted({d["team"] for d in expected.deals.values() if d["team"]})
    quotas_file, plans_file = write_files(tmp_path, owners, teams)
    quarter, q_days, month, m_days = periods_now()
    worker = start_worker(
        names.env(
            SALESOPS_QUOTAS_FILE=quotas_file,
            SALESOPS_PLANS_FILE=plans_file,
            SALESOPS_FORECAST_INTERVAL_S=1,
        )
    )

    def standings() -> dict[tuple[str, str, str], dict[str, Any]] | None:
        body = worker.json("/api/attainment")
        got = {(r["scope"], r["member"], r["period"]): r for r in body["quotas"]}
        want = {("owner", o, quarter) for o in owners}
        return (
            got
            if want <= got.keys()
            and all(
                got[k]["won_cents"] == expected.standing("owner", k[1], q_days, QUOTA_OWNER)["won_cents"]
                for k in want
            )
            else None
        )

    got = poll(standings, 120, interval=1, what="/api/attainment caught up with the import")
    checked = 0
    for (scope, key, period), row in got.items():
        days, quota = (q_days, {"owner": QUOTA_OWNER, "team": QUOTA_TEAM, "territory": 900_000_00}[scope])
        if period == month:
            days, quota = m_days, QUOTA_OWNER_MONTH
        want = expected.standing(scope, key, days, quota)
        assert row["quota_cents"] == quota
        assert (row["won_cents"], row["open_due_cents"], row["gap_cents"]) == (
            want["won_cents"],
            want["open_due_cents"],
            want["gap_cents"],
        ), (scope, key, period)
        assert row["attainment"] == pytest.approx(want["attainment"])
        assert row["coverage"] == (None if want["coverage"] is None else pytest.approx(want["coverage"]))
        assert row["won"] == f"{row['won_cents'] // 100}.{row['won_cents'] % 100:02d}"
        checked += 1
    assert checked == 2 * len(owners) + len(teams) + 1
    assert any(r["won_cents"] for r in got.values()), "the scenario should have won deals this quarter"

    # commission: every owner's statement of the quarter, line by line
    body = worker.json(f"/api/commission?period={quarter}")
    statements = {s["owner_id"]: s for s in body["statements"]}
    assert statements.keys() == set(owners)
    for owner in owners:
        earned, lines = expected.commission(owner, q_days, QUOTA_OWNER)
        s = statements[owner]
        assert s["earned_cents"] == earned, owner
        assert {x["deal_id"]: x["commission_cents"] for x in s["lines"]} == lines, owner
        assert all(x["kind"] == "credit" and x["reason"] == "won" for x in s["lines"])
        assert s["adjustments"] == 0

    # a won deal's amount changes after its statement: an adjustment line, not a rewrite
    owner = max(owners, key=lambda o: len(expected.commission(o, q_days, QUOTA_OWNER)[1]))
    _earned, before = expected.commission(owner, q_days, QUOTA_OWNER)
    deal_id = next(iter(before))
    last = ref.deals[deal_id][-1]
    bumped = {
        **last,
        "event_id": f"{last['event_id']}-fix",
        "event_type": "UPDATED",
        "occurred_at": int(last["occurred_at"]) + 1000,
        "amount": str(int(float(last["amount"])) + 1000),
    }
    fields = {k: v for k, v in bumped.items() if v is not None}
    fields["occurred_at"] = datetime.fromtimestamp(bumped["occurred_at"] / 1000, UTC)
    fields["amount"] = Decimal(bumped["amount"])
    if "expected_close_date" in fields:
        fields["expected_close_date"] = date.fromisoformat(fields["expected_close_date"])
    produce(names.deal_events, [encoded_deal(**fields)])
    after = Expected(DealReference([*read_jsonl(shuffled), bumped]))
    earned_after, lines_after = after.commission(owner, q_days, QUOTA_OWNER)

    def adjusted() -> dict[str, Any] | None:
        s = worker.json(f"/api/commission?owner={owner}&period={quarter}")["statements"][0]
        return s if s["adjustments"] else None

    s = poll(adjusted, 90, interval=1, what="the adjustment line of the changed deal")
    assert s["earned_cents"] == earned_after
    per_deal: dict[str, int] = defaultdict(int)
    for x in s["lines"]:
        per_deal[x["deal_id"]] += x["commission_cents"]
    assert dict(per_deal) == lines_after  # credits + adjustments add up to the new lines
    (adjustment,) = [x for x in s["lines"] if x["deal_id"] == deal_id and x["kind"] == "adjustment"]
    assert adjustment["reason"] == "amount_changed"
    assert adjustment["credit_cents"] == after.deals[deal_id]["cents"] - expected.deals[deal_id]["cents"]
    assert (
        next(x for x in s["lines"] if x["deal_id"] == deal_id and x["kind"] == "credit")["commission_cents"]
        == before[deal_id]
    )

    # forecast sanity: quantiles ordered, components add up, additive breakdowns add up
    fc = worker.json(f"/api/forecast?period={quarter}")
    (total,) = fc["rows"]
    mc, ex = total["monte_carlo"], total["expected"]
    assert mc["p10_cents"] <= mc["p50_cents"] <= mc["p90_cents"]
    assert ex["total_cents"] == ex["open_cents"] + ex["won_cents"] + ex["new_cents"]
    assert mc["already_won_cents"] == ex["won_cents"] and mc["p10_cents"] >= ex["won_cents"]
    by_owner = worker.json(f"/api/forecast?period={quarter}&by=pipeline")["rows"]
    assert sum(r["weighted_cents"] for r in by_owner) == total["weighted_cents"]
    ranged = worker.json(f"/api/forecast?from={date.fromordinal(q_days[0])}&to={date.fromordinal(q_days[1])}")
    assert ranged["rows"][0]["monte_carlo"] == mc and ranged["computed"] == "precomputed"

    # the publisher writes the same statement to Redis and to the commission topic (the ledger)
    def published() -> bool:
        raw = redis_client.hget(f"{names.uid}:view:commission", f"{quarter}:{owner}")
        if raw is None or json.loads(raw)["adjustments"] != s["adjustments"]:
            return False
        codec = Codec.for_record("CommissionAggregate")
        rows = [codec.decode(r.value) for r in consume_until_quiet(names.output("commission"), 1) if r.value]
        mine = [r for r in rows if r["owner_id"] == owner and r["period"] == quarter]
        return bool(mine) and [x["deal_id"] for x in mine[-1]["lines"]] == [x["deal_id"] for x in s["lines"]]

    poll(published, 60, interval=1, what="commission statement in Redis and on the topic")
    assert worker.get("/api/forecast?period=nonsense")[0] == 400
    assert worker.get("/api/attainment?period=1999-01")[0] == 400
    assert json.loads(worker.get("/api/attainment?period=1999-01")[1])["periods"]
    assert worker.stop() == 0
