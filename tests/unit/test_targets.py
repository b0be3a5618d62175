"""Forecast, quotas and commission in the worker, without a broker: the pure assembly
(streams/targets.py) worked by hand, the deals changelog follower's cache
(agents/all_deals.py), the outputs of agents/targets.py (Avro rows, ledger round trip,
gauges), the API's period parameter, backtest cut-offs and ``salesops backtest``."""

from __future__ import annotations

import asyncio
import io
import json
from concurrent.futures.process import BrokenProcessPool
from datetime import UTC, date, datetime
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from prometheus_client import CollectorRegistry

from agents import cli
from agents.all_deals import AllDeals, changelog_topic
from agents.backtest import run_backtest
from agents.records import DealRecord
from agents.settings import Settings
from agents.targets import CODECS, TargetsService, ledger_lines
from agents.web import query_period
from schemas.codec import Codec, load_schema_json
from sinks.metrics import SalesopsMetrics
from streams.backtest import earlier_cases
from streams.compensation import Plan, PlanConfig
from streams.deals import Deal, fold
from streams.events import DealEvent
from streams.periods import PeriodError, day_start_ms, parse_period
from streams.pipelines import load_pipelines, load_rates
from streams.quotas import Quota, QuotaConfig, Territory, fixed_period
from streams.targets import ForecastSettings, compute, forecast_periods

CONFIG = load_pipelines()
RATES = load_rates()
TZ = ZoneInfo("UTC")
NOW = int(datetime(2024, 2, 15, 12, tzinfo=UTC).timestamp() * 1000)  # in 2024-02 and 2024-Q1


def t(month: int, day: int) -> int:
    return int(datetime(2024, month, day, 12, tzinfo=UTC).timestamp() * 1000)


def ev(deal_id: str, n: int, at: int, stage: str, amount: str, owner: str = "o1", **kw: Any) -> DealEvent:
    return DealEvent(
        str(n),
        "crm",
        deal_id,
        "UPDATED",
        at,
        "enterprise",
        stage,
        Decimal(amount),
        "USD",
        owner_id=owner,
        **kw,
    )


def deals(*extra: DealEvent) -> list[Deal]:
    """o1 won d1 (600.00) on 01-10 and d2 (700.00) on 01-20; d3 (1,000.00) is open in
    proposal, due 2024-02-20, region emea."""
    events = [
        ev("d1", 0, t(1, 2), "discovery", "600"),
        ev("d1", 1, t(1, 10), "won", "600"),
        ev("d2", 0, t(1, 3), "discovery", "700"),
        ev("d2", 1, t(1, 20), "won", "700"),
        ev("d3", 0, t(1, 5), "proposal", "1000", region="emea", expected_close_date=date(2024, 2, 20)),
        *extra,
    ]
    by_deal: dict[str, list[DealEvent]] = {}
    for e in events:
        by_deal.setdefault(e.deal_id, []).append(e)
    return [fold(evs, CONFIG) for evs in by_deal.values()]


JAN = fixed_period("2024-01")
FEB = fixed_period("2024-02")
QUOTAS = QuotaConfig(
    "USD",
    {"emea": Territory("emea", frozenset({"emea"}))},
    (
        Quota("owner", "o1", JAN, 100_000),  # 1,000.00
        Quota("owner", "o1", FEB, 200_000),
        Quota("territory", "emea", FEB, 500_000),
    ),
)
PLANS = PlanConfig(
    "USD",
    {"ae": Plan("ae", Fraction(8, 100), ((Fraction(1), Fraction(12, 100)),), role="ae")},
    {"o1": "ae"},
)


# ------------------------------------------------------------------ streams/targets.py


def test_forecast_periods_are_this_and_next_month_and_quarter() -> None:
    labels = [p.label for p in forecast_periods(NOW, TZ)]
    assert labels == ["2024-02", "2024-03", "2024-Q1", "2024-Q2"]
    december = int(datetime(2024, 12, 31, 23, tzinfo=UTC).timestamp() * 1000)
    assert [p.label for p in forecast_periods(december, TZ)] == ["2024-12", "2025-01", "2024-Q4", "2025-Q1"]


def test_compute_standings_commission_and_projection_by_hand() -> None:
    result = compute(deals(), CONFIG, RATES, TZ, NOW, ForecastSettings(), QUOTAS, PLANS, {})
    st = {(s.scope, s.key, s.period): s for s in result.standings}
    # January: won 600 + 700 = 1,300.00 of 1,000.00 -> 130 %, gap 0, coverage undefined
    jan = st[("owner", "o1", "2024-01")]
    assert (jan.won_cents, jan.attainment, jan.gap_cents, jan.coverage) == (130_000, 1.3, 0, None)
    # February: nothing won, d3 (1,000.00) due on 02-20 -> coverage 1,000 / 2,000 = 0.5
    feb = st[("owner", "o1", "2024-02")]
    assert (feb.won_cents, feb.open_due_cents, feb.coverage) == (0, 100_000, 0.5)
    # commission in January: 8 % of 600 = 48.00; then 8 % of 400 + 12 % of 300 = 68.00
    (jan_c,) = [c for c in result.commissions if c.statement.period == "2024-01"]
    assert {x.deal_id: x.commission_cents for x in jan_c.statement.lines} == {"d1": 4_800, "d2": 6_800}
    assert jan_c.statement.earned_cents == 11_600
    # January has ended: projected at the credited value, the same 116.00
    assert jan_c.projection is not None and jan_c.projection.commission_cents == 11_600
    # only quotas whose period contains today are forecast: February's, not January's
    assert set(result.quota_forecasts or {}) == {("owner", "o1", "2024-02"), ("territory", "emea", "2024-02")}
    # the forecast covers this and next month and quarter, total and breakdowns
    assert {(f.period, f.dimension, f.member) for f in result.forecasts} >= {
        ("2024-02", "all", "all"),
        ("2024-Q1", "owner", "o1"),
        ("2024-03", "region", "emea"),
    }
    total = next(f for f in result.forecasts if (f.period, f.dimension) == ("2024-02", "all"))
    # weighted: d3 due in February, proposal's configured probability
    proposal = CONFIG.pipelines["enterprise"].stage("proposal")
    assert proposal is not None
    assert total.weighted_cents == round(100_000 * Fraction(repr(proposal.probability)))


def test_a_changed_amount_after_the_statement_is_an_adjustment_against_the_ledger() -> None:
    first = compute(deals(), CONFIG, RATES, TZ, NOW, ForecastSettings(), QUOTAS, PLANS, {})
    (jan,) = [c for c in first.commissions if c.statement.period == "2024-01"]
    ledger = {("o1", "2024-01"): jan.statement.lines}
    again = compute(deals(), CONFIG, RATES, TZ, NOW, ForecastSettings(), QUOTAS, PLANS, ledger)
    (same,) = [c for c in again.commissions if c.statement.period == "2024-01"]
    assert same.statement.lines == ()  # nothing changed: nothing new
    # d1 corrected to 500.00 on 02-01: credit -100.00; commission 8 % of 500 = 40 (-8.00);
    # d2 then runs 500 -> 1,200: 8 % of 500 + 12 % of 200 = 64.00 (-4.00, recalculated)
    changed = compute(
        deals(ev("d1", 2, t(2, 1), "won", "500")),
        CONFIG,
        RATES,
        TZ,
        NOW,
        ForecastSettings(),
        QUOTAS,
        PLANS,
        ledger,
    )
    (adj,) = [c for c in changed.commissions if c.statement.period == "2024-01"]
    got = {(x.deal_id, x.reason): (x.credit_cents, x.commission_cents) for x in adj.statement.lines}
    assert got == {("d1", "amount_changed"): (-10_000, -800), ("d2", "recalculated"): (0, -400)}
    assert adj.statement.earned_cents == 10_400


def test_without_quotas_only_the_forecast_is_computed() -> None:
    result = compute(deals(), CONFIG, RATES, TZ, NOW)
    assert result.forecasts and not result.standings and not result.commissions


# ------------------------------------------------------------------ backtest cut-offs


def test_earlier_cases_keep_the_cut_off_offset_and_the_period_kind() -> None:
    # cut 5 days into March at 06:00 -> 5 days into February and January at 06:00
    cut = day_start_ms(date(2024, 3, 6).toordinal(), TZ) + 6 * 3_600_000
    cases = earlier_cases(cut, parse_period("2024-03", 0, TZ), 3, TZ)
    assert [(p.label, datetime.fromtimestamp(c / 1000, UTC).isoformat()) for c, p in cases] == [
        ("2024-01", "2024-01-06T06:00:00+00:00"),
        ("2024-02", "2024-02-06T06:00:00+00:00"),
        ("2024-03", "2024-03-06T06:00:00+00:00"),
    ]
    q = earlier_cases(cut, parse_period("2024-Q1", 0, TZ), 2, TZ)
    assert [p.label for _, p in q] == ["2023-Q4", "2024-Q1"]
    # a 10-day range steps back 10 days
    r = earlier_cases(cut, parse_period("2024-03-01..2024-03-10", 0, TZ), 2, TZ)
    assert [p.label for _, p in r] == ["2024-02-20..2024-02-29", "2024-03-01..2024-03-10"]
    with pytest.raises(ValueError):
        earlier_cases(cut, parse_period("2024", 0, TZ), 0, TZ)


# ------------------------------------------------------------------ agents/all_deals.py


def test_all_deals_keeps_bytes_and_decodes_each_version_once() -> None:
    s = Settings(app_id="app")
    assert changelog_topic(s) == "app-deals-changelog"
    book = AllDeals(s)
    d1, d2 = deals()[:2]
    raw1, raw2 = DealRecord(0, d1).to_bytes(), DealRecord(1, d2).to_bytes()
    book.put(b"d1", raw1)
    book.put(b"d2", raw2)
    assert book.version == 2
    book.put(b"d1", bytes(raw1))  # the same bytes again: no change
    assert book.version == 2
    first = {d.deal_id: d for d in book.deals()}
    assert first == {"d1": d1, "d2": d2}
    again = {d.deal_id: d for d in book.deals()}
    assert again["d1"] is first["d1"]  # cached: not decoded again
    (d1_new,) = [d for d in deals(ev("d1", 2, t(2, 1), "won", "500")) if d.deal_id == "d1"]
    book.put(b"d1", DealRecord(0, d1_new).to_bytes())
    book.put(b"d2", None)  # tombstone
    assert {d.deal_id: d for d in book.deals()} == {"d1": d1_new}
    assert len(book) == 1 and book.version == 4
    book.put(b"bad", b"not a deal record")
    assert [d.deal_id for d in book.deals()] == ["d1"]  # logged and left out


# ------------------------------------------------------------------ agents/targets.py


def service(tmp_path: Path) -> TargetsService:
    quotas = tmp_path / "q.toml"
    quotas.write_text(
        'currency = "USD"\n[territories.emea]\nregions = ["emea"]\n'
        '[quotas.owner.o1]\n"2024-01" = 1000\n"2024-02" = 2000\n[quotas.territory.emea]\n"2024-02" = 5000\n'
    )
    plans = tmp_path / "p.toml"
    plans.write_text(
        'currency = "USD"\n[roles]\no1 = "ae"\n[plans.ae]\nrole = "ae"\nbase_rate = 0.08\n'
        "tiers = [{ from = 1.0, rate = 0.12 }]\n"
    )
    settings = Settings(quotas_file=str(quotas), plans_file=str(plans))
    worker = SimpleNamespace(settings=settings, rates=RATES, config=CONFIG, tz=TZ)
    svc = TargetsService(worker)  # type: ignore[arg-type]
    svc.latest = compute(
        deals(), CONFIG, RATES, TZ, NOW, svc.forecast_settings, svc.quota_config, svc.plans, {}
    )
    svc.duration_s = 0.25
    return svc


def test_records_encode_with_their_schemas_and_the_ledger_reads_back(tmp_path: Path) -> None:
    svc = service(tmp_path)
    records = svc.records()
    assert set(records) == {"forecast", "attainment", "commission"}
    codecs = {v: Codec.for_record(n) for v, n in CODECS.items()}
    for view, rows in records.items():
        for _key, row in rows.items():
            codecs[view].decode(codecs[view].encode({**row, "as_of": NOW}))
    row = records["commission"]["2024-01:o1"]
    assert (row["earned"], row["adjustments"], row["projected"]) == (Decimal("116.00"), 0, Decimal("116.00"))
    back = ledger_lines(codecs["commission"].decode(codecs["commission"].encode({**row, "as_of": NOW})))
    (jan,) = [c for c in svc.latest.commissions if c.statement.period == "2024-01"]  # type: ignore[union-attr]
    assert back == jan.statement.lines
    territory = records["attainment"]["2024-02:territory:emea"]
    assert territory["spread_cv"] == 0.0 and territory["reps"][0]["open"] == Decimal("1000.00")
    assert json.dumps(records["commission"], default=str)  # Redis-able: no datetime inside


def test_no_targets_process_starts_once_the_worker_stops(tmp_path: Path) -> None:
    # the targets timer still ticks while the worker stops; a process started then would
    # hold the worker's exit up until its run ended
    svc = service(tmp_path)
    svc.stop_process()
    with pytest.raises(BrokenProcessPool, match="stopping"):
        asyncio.run(svc._in_process(len, []))
    assert svc._pool is None


def test_gauges_of_the_last_run(tmp_path: Path) -> None:
    svc = service(tmp_path)
    metrics = SalesopsMetrics(CollectorRegistry())
    svc.update_gauges(metrics)
    value = metrics.registry.get_sample_value
    assert (
        value("salesops_quota_attainment_ratio", {"scope": "owner", "member": "o1", "period": "2024-01"})
        == 1.3
    )
    assert (
        value("salesops_pipeline_coverage_ratio", {"scope": "owner", "member": "o1", "period": "2024-02"})
        == 0.5
    )
    assert (
        value("salesops_commission_earned", {"owner": "o1", "period": "2024-01", "currency": "USD"}) == 116.0
    )
    assert value("salesops_commission_adjustments", {"owner": "o1", "period": "2024-01"}) == 0.0
    assert (
        value(
            "salesops_quota_value",
            {"scope": "territory", "member": "emea", "period": "2024-02", "currency": "USD"},
        )
        == 5000.0
    )
    assert value("salesops_forecast_run_seconds") == 0.25
    # already won in February: nothing; January's won (1,300.00) is in no forecast period
    won = value(
        "salesops_forecast_expected_value",
        {"dimension": "all", "member": "all", "period": "2024-02", "component": "won", "currency": "USD"},
    )
    assert won == 0.0
    p50 = value(
        "salesops_forecast_value",
        {
            "dimension": "owner",
            "member": "o1",
            "period": "2024-02",
            "method": "monte_carlo_p50",
            "currency": "USD",
        },
    )
    assert p50 is not None
    assert value("salesops_territory_pipeline_spread", {"territory": "emea", "statistic": "max_share"}) == 1.0


def test_a_bad_quotas_file_or_plans_without_quotas_stop_the_worker_with_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "q.toml"
    bad.write_text('currency = "USD"\n[quotas.owner.o1]\n"2024-13" = 10\n')
    monkeypatch.setenv("SALESOPS_RESPONDENT_SECRET", "x" * 32)
    monkeypatch.setenv("SALESOPS_QUOTAS_FILE", str(bad))
    assert cli.main(["worker"]) == 2
    assert "quotas.owner.o1.2024-13: period must be" in capsys.readouterr().err
    monkeypatch.delenv("SALESOPS_QUOTAS_FILE")
    monkeypatch.setenv("SALESOPS_PLANS_FILE", str(bad))
    assert "needs SALESOPS_QUOTAS_FILE" in (cli.config_problem(Settings(plans_file=str(bad))) or "")
    assert cli.config_problem(Settings()) is None


def test_new_schemas_document_every_field() -> None:
    for name in CODECS.values():
        schema = json.loads(load_schema_json(name))
        fields = list(schema["fields"])
        for f in schema["fields"]:
            if isinstance(f["type"], dict) and f["type"].get("type") == "array":
                fields += f["type"]["items"]["fields"]
        assert schema["doc"] and all(f.get("doc") for f in fields), name
        money = [f for f in fields if "decimal" in json.dumps(f["type"])]
        assert all('"precision": 38, "scale": 2' in json.dumps(f["type"]) for f in money), name


# ------------------------------------------------------------------ the API's periods


def test_query_period_reads_ranges_labels_and_fiscal_years() -> None:
    worker = SimpleNamespace(tz=TZ, settings=Settings(fiscal_year_start_month=10))
    q = query_period({"from": "2024-03-01", "to": "2024-05-15"}, NOW, worker, "2024-01")  # type: ignore[arg-type]
    assert (q.label, q.last_day - q.first_day) == ("2024-03-01..2024-05-15", 75)
    assert query_period({}, NOW, worker, "2024-01").label == "2024-01"  # type: ignore[arg-type]
    fy = query_period({"period": "FY2024"}, NOW, worker, "")  # type: ignore[arg-type]
    assert date.fromordinal(fy.first_day) == date(2023, 10, 1)
    for bad in ({"from": "2024-03-01"}, {"from": "2024-03-01", "to": "2024-02-01"}, {"period": "x"}):
        with pytest.raises(PeriodError):
            query_period(bad, NOW, worker, "2024-01")  # type: ignore[arg-type]
    with pytest.raises(PeriodError, match="not both"):
        query_period({"period": "2024-01", "from": "2024-01-01", "to": "2024-01-02"}, NOW, worker, "")  # type: ignore[arg-type]


# ------------------------------------------------------------------ salesops backtest


def export(tmp_path: Path) -> Path:
    """Two won deals in January 2024 and a bad line, as a deal export."""
    lines = []
    for i, (day, amount) in enumerate(((10, "600.00"), (20, "700.00"))):
        for n, (stage, at) in enumerate((("discovery", t(1, 2)), ("won", t(1, day)))):
            lines.append(
                json.dumps(
                    {
                        "event_id": f"e{i}{n}",
                        "source": "crm",
                        "deal_id": f"d{i}",
                        "event_type": "UPDATED",
                        "occurred_at": at,
                        "pipeline": "enterprise",
                        "stage": stage,
                        "amount": amount,
                        "currency": "USD",
                    }
                )
            )
    lines.append('{"not": "a deal"}')
    path = tmp_path / "deals.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_backtest_arguments_and_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = export(tmp_path)
    args = cli.build_parser().parse_args(
        ["backtest", "--as-of", "2024-01-01", "--period", "2024-01", "--cutoffs", "2", "--file", str(path)]
    )
    assert (args.as_of, args.period, args.cutoffs, args.file) == ("2024-01-01", "2024-01", 2, path)
    out = io.StringIO()
    assert run_backtest(args, Settings(), out) == 0
    text = out.getvalue()
    # 2023-12 (cut 2023-12-01): nothing won; 2024-01: 600 + 700 = 1,300.00 actual
    assert "weighted (USD)" in text and "Monte Carlo P50 (USD)" in text
    assert "2024-01                  2024-01-01" in text and "1300.00" in text
    assert "summary over 2 period(s)" in text and "actual inside P10..P90" in text
    err = capsys.readouterr().err
    assert "read 2 deals" in err and "1 rejected" in err and "cut-off 2/2" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--as-of", "2024-13-01", "--period", "2024-01"], "--as-of must be a day"),
        (["--as-of", "2024-01-01", "--period", "spring"], "period must be"),
        (["--as-of", "2024-01-01", "--period", "last-30d"], "must be fixed"),
        (["--as-of", "2024-01-01", "--period", "2024-01", "--cutoffs", "0"], "--cutoffs must be >= 1"),
        (["--as-of", "2024-01-01", "--period", "2024-01", "--trials", "10"], "--trials must be >= 10000"),
    ],
)
def test_backtest_bad_input_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    args = cli.build_parser().parse_args(["backtest", *argv, "--file", str(export(tmp_path))])
    assert run_backtest(args, Settings()) == 2
    assert message in capsys.readouterr().err


def test_backtest_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = cli.build_parser().parse_args(
        ["backtest", "--as-of", "2024-01-01", "--period", "2024-01", "--file", str(tmp_path / "none.jsonl")]
    )
    assert run_backtest(args, Settings()) == 2
    assert "no such file" in capsys.readouterr().err


def test_the_bench_reports_the_forecast_time_and_peak_memory_as_headline_rows() -> None:
    from tests.bench.report import Report, forecast_rows, render

    report = Report()
    for row in forecast_rows(2.27, 11 * 2**20, 100_000, 10_000):
        report.add(row)
    table = render(report).splitlines()
    assert "| forecast Monte Carlo, 100,000 open deals x 10,000 trials: time | 2,270 ms | - | - |" in table
    assert (
        "| forecast Monte Carlo, 100,000 open deals x 10,000 trials: peak memory | 11,534,336 B | - | - |"
        in table
    )
