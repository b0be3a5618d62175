"""Grafana dashboards (deploy/grafana) and alert rules (deploy/prometheus) against the
metrics the worker exports: generated files in sync, every metric family placed, no fixed
rate windows, currency on money, stages in order, and a runbook section per alert.
(tests/integration/test_prometheus.py evaluates every expression against a live worker.)"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

from sinks.metrics import SalesopsMetrics
from streams.pipelines import load_pipelines

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
RULES = ROOT / "deploy" / "prometheus" / "rules" / "salesops.rules.yml"
RUNBOOK = ROOT / "deploy" / "RUNBOOK.md"
MONEY_METRICS = (
    "salesops_pipeline_value",
    "salesops_pipeline_weighted_value",
    "salesops_dimension_pipeline_value",
    "salesops_dimension_pipeline_weighted_value",
    "salesops_pipeline_movement_value",
    "salesops_average_deal_size",
    "salesops_sales_velocity_per_day",
)


def _builder() -> Any:
    spec = importlib.util.spec_from_file_location("build_dashboards", GRAFANA / "build_dashboards.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted((GRAFANA / "dashboards").glob("*.json"))}


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in board["panels"] if p["type"] != "row"]


def exprs(board: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in panels(board) for t in p["targets"]]


def rule_exprs() -> list[str]:
    return [r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def test_committed_dashboards_are_the_generators_output() -> None:
    builder = _builder()
    built = builder.build(load_pipelines(), "USD")
    assert (
        set(built)
        == set(dashboards())
        == {
            "salesops-pipeline.json",
            "salesops-people.json",
            "salesops-operations.json",
        }
    )
    for name, board in built.items():
        assert (GRAFANA / "dashboards" / name).read_text() == builder.render(board), (
            f"{name} differs from deploy/grafana/build_dashboards.py's output: run it"
        )


def test_every_exported_metric_family_is_on_a_dashboard() -> None:
    families = {f.name for f in SalesopsMetrics(CollectorRegistry()).registry.collect()}
    # client_python names families without their _total / _info suffix
    text = "\n".join(e for board in dashboards().values() for e in exprs(board))
    used = {f for f in families if re.search(rf"\b{f}(_total|_info|_bucket)?\b", text)}
    assert families - used == set()


def test_rates_use_grafanas_interval_not_fixed_windows() -> None:
    for name, board in dashboards().items():
        for e in exprs(board):
            for window in re.findall(r"\[([^\]]+)\]", e):
                assert window in ("$__rate_interval", "$__range"), (name, e)


def test_money_panels_carry_the_reporting_currency() -> None:
    for board in dashboards().values():
        for p in panels(board):
            if any(m + "{" in t["expr"] or m + ")" in t["expr"] for t in p["targets"] for m in MONEY_METRICS):
                assert p["fieldConfig"]["defaults"]["unit"] == "currencyUSD", p["title"]


def test_stage_bars_follow_the_pipelines_file() -> None:
    config = load_pipelines()
    order = [s for p in config.pipelines.values() for s in p.open_stage_ids]
    board = dashboards()["salesops-pipeline.json"]
    (value_panel,) = [p for p in panels(board) if p["title"] == "Open pipeline value: $pipeline"]
    shown = [re.search(r'stage="([^"]+)"', t["expr"]).group(1) for t in value_panel["targets"]]  # type: ignore[union-attr]
    assert shown == order
    assert value_panel["repeat"] == "pipeline"


def test_panels_fit_the_grid_and_ids_are_unique() -> None:
    for name, board in dashboards().items():
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), name
        for p in board["panels"]:
            g = p["gridPos"]
            assert g["x"] >= 0 and g["x"] + g["w"] <= 24, (name, p["title"])
        for t in (t for p in panels(board) for t in p["targets"]):
            assert t["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


def test_variables_have_sane_defaults() -> None:
    defaults = {
        (name, v["name"]): v["current"].get("value")
        for name, board in dashboards().items()
        for v in board["templating"]["list"]
    }
    assert defaults[("salesops-pipeline.json", "pipeline")] == ["$__all"]
    assert defaults[("salesops-pipeline.json", "window")] == "last-90d"
    assert defaults[("salesops-pipeline.json", "statistic")] == "p90"
    assert defaults[("salesops-people.json", "window")] == "last-30d"
    assert defaults[("salesops-operations.json", "instance")] == ["$__all"]


def test_rules_select_no_job_and_each_alert_has_a_runbook_section() -> None:
    anchors = {
        re.sub(r"[^a-z0-9]", "", line[3:].strip().lower())
        for line in RUNBOOK.read_text().splitlines()
        if line.startswith("## ")
    }
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            assert "job=" not in rule["expr"], rule["alert"]
            assert rule["labels"]["severity"] in ("warning", "critical")
            assert rule["labels"]["team"]
            assert rule["annotations"]["runbook_url"].endswith("#" + rule["alert"].lower())
            assert rule["alert"].lower() in anchors, f"deploy/RUNBOOK.md has no section {rule['alert']}"
    assert len(rule_exprs()) == 8
