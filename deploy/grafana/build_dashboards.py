"""Generate the Grafana dashboards of deploy/grafana/dashboards/, one per audience:

* ``salesops-pipeline.json`` (revenue and sales ops): headline figures, open pipeline and
  deals by stage in stage order, conversion and cohort conversion, win rate, closed deals,
  deal size, cycle and velocity, stage aging and stalled deals, the movement waterfall,
  open pipeline by owner, team and region, the forecast by method, quota attainment,
  forecast attainment, coverage, territory spread and commission;
* ``salesops-people.json`` (people partners): eNPS by group with suppressed groups shown
  as such (their response count only), margins of error, trends, drops against the
  alert threshold and eNPS alerts;
* ``salesops-operations.json`` (whoever runs the workers): workers and broker health,
  consumer lag per partition, assignment, throughput, dead letters, late events,
  latencies, sinks, alert transitions and webhook deliveries.

Run from the repository root after changing the pipelines or the reporting currency:

    .venv/bin/python deploy/grafana/build_dashboards.py [--pipelines FILE] [--rates FILE]

Stages are listed in the pipelines file's order (one query per stage: Grafana keeps the
order of queries), and money panels carry the reporting currency of the rates file as
their unit.  tests/unit/test_dashboards.py checks the committed files equal this output
for the built-in configuration.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from streams.pipelines import (  # noqa: E402 - after the path set-up above
    DEFAULT_PIPELINES_FILE,
    DEFAULT_RATES_FILE,
    PipelineConfig,
    load_pipelines,
    load_rates,
)

OUT = Path(__file__).resolve().parent / "dashboards"
DS = {"type": "prometheus", "uid": "${datasource}"}
RUNBOOK = "https://github.com/salesops/salesops/blob/main/deploy/RUNBOOK.md"
# Grafana's built-in currency units; other currencies get a suffix
GRAFANA_CURRENCIES = {
    "USD": "currencyUSD",
    "EUR": "currencyEUR",
    "GBP": "currencyGBP",
    "JPY": "currencyJPY",
    "CHF": "currencyCHF",
    "SEK": "currencySEK",
    "NOK": "currencyNOK",
    "DKK": "currencyDKK",
    "PLN": "currencyPLN",
    "CZK": "currencyCZK",
    "BRL": "currencyBRL",
    "INR": "currencyINR",
    "ZAR": "currencyZAR",
    "KRW": "currencyKRW",
}
MOVEMENT = (
    ("start", "start"),
    ("new", "+ new"),
    ("reopened", "+ reopened"),
    ("increased", "+ increased"),
    ("decreased", "- decreased"),
    ("won", "- won"),
    ("lost", "- lost"),
    ("deleted", "- deleted"),
    ("end", "end"),
)


def money_unit(currency: str) -> str:
    return GRAFANA_CURRENCIES.get(currency, f"suffix: {currency}")


# ---------------------------------------------------------------------------- building blocks


def target(expr: str, legend: str = "", instant: bool = False, table: bool = False) -> dict[str, Any]:
    t: dict[str, Any] = {"datasource": DS, "expr": expr, "legendFormat": legend or "__auto"}
    if instant:
        t |= {"instant": True, "range": False}
    else:
        t |= {"range": True}
    if table:
        t["format"] = "table"
    return t


def panel(
    kind: str,
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    unit: str = "short",
    w: int = 12,
    h: int = 8,
    **extra: Any,
) -> dict[str, Any]:
    for i, t in enumerate(targets):
        t["refId"] = _ref(i)
    defaults: dict[str, Any] = {"unit": unit}
    defaults |= extra.pop("defaults", {})
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": extra.pop("overrides", [])},
        "options": extra.pop("options", _OPTIONS[kind]()),
        "_size": (w, h),
        **extra,
    }


def _ref(i: int) -> str:
    return chr(ord("A") + i) if i < 26 else f"A{i}"


def _timeseries_options() -> dict[str, Any]:
    return {
        "legend": {
            "displayMode": "table",
            "placement": "right",
            "showLegend": True,
            "calcs": ["lastNotNull"],
        },
        "tooltip": {"mode": "multi", "sort": "desc"},
    }


def _stat_options() -> dict[str, Any]:
    return {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": "value",
        "graphMode": "area",
        "justifyMode": "auto",
        "textMode": "auto",
    }


def _bargauge_options() -> dict[str, Any]:
    return {
        "orientation": "horizontal",
        "displayMode": "gradient",
        "showUnfilled": True,
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
    }


def _table_options() -> dict[str, Any]:
    return {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}}


_OPTIONS = {
    "timeseries": _timeseries_options,
    "stat": _stat_options,
    "bargauge": _bargauge_options,
    "table": _table_options,
}


def row(title: str) -> dict[str, Any]:
    return {"type": "row", "title": title, "collapsed": False, "panels": [], "_size": (24, 1)}


def thresholds(*steps: tuple[str, float | None]) -> dict[str, Any]:
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in steps]}


def query_variable(
    name: str, label: str, query: str, default: str | None = None, multi: bool = False, sort: int = 1
) -> dict[str, Any]:
    """A variable from ``label_values(...)``; multi-value ones default to All (``.*``)."""
    if multi:
        current = {"selected": True, "text": ["All"], "value": ["$__all"]}
    elif default is not None:
        current = {"selected": True, "text": default, "value": default}
    else:
        current = {}
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "definition": query,
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "refresh": 2,
        "sort": sort,
        "multi": multi,
        "includeAll": multi,
        "allValue": ".*" if multi else None,
        "regex": "",
        "current": current,
        "options": [],
        "hide": 0,
    }


def custom_variable(name: str, label: str, values: Iterable[str], default: str) -> dict[str, Any]:
    values = list(values)
    return {
        "name": name,
        "label": label,
        "type": "custom",
        "query": ",".join(values),
        "current": {"selected": True, "text": default, "value": default},
        "options": [{"selected": v == default, "text": v, "value": v} for v in values],
        "multi": False,
        "includeAll": False,
        "hide": 0,
    }


DATASOURCE_VARIABLE = {
    "name": "datasource",
    "label": "Data source",
    "type": "datasource",
    "query": "prometheus",
    "current": {},
    "hide": 0,
    "includeAll": False,
    "multi": False,
    "options": [],
    "refresh": 1,
    "regex": "",
}


def dashboard(
    uid: str, title: str, description: str, variables: list[dict[str, Any]], panels: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["salesops"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "links": [
            {"title": "Runbook", "type": "link", "icon": "doc", "targetBlank": True, "url": RUNBOOK},
            {
                "title": "salesops dashboards",
                "type": "dashboards",
                "tags": ["salesops"],
                "asDropdown": True,
                "includeVars": False,
                "keepTime": True,
            },
        ],
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "templating": {"list": [DATASOURCE_VARIABLE, *variables]},
        "panels": _layout(panels),
    }


def _layout(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ids and grid positions: left to right, a new line when a panel does not fit, rows
    on a line of their own."""
    out = []
    x = y = line_h = 0
    for i, p in enumerate(panels, start=1):
        w, h = p.pop("_size")
        if x + w > 24 or p["type"] == "row":
            x, y, line_h = 0, y + line_h, 0
        p = {"id": i, "gridPos": {"h": h, "w": w, "x": x, "y": y}, **p}
        out.append(p)
        x += w
        line_h = max(line_h, h)
        if p["type"] == "row":
            x, y, line_h = 0, y + h, 0
    return out


# ---------------------------------------------------------------------------- dashboards


def stages_in_order(config: PipelineConfig) -> list[str]:
    """Open stages of every pipeline, in the pipelines file's order (first appearance)."""
    return list(dict.fromkeys(s for p in config.pipelines.values() for s in p.open_stage_ids))


def per_stage(expr: str, stages: list[str], label: str = "stage") -> list[dict[str, Any]]:
    """One instant query per stage (``STAGE`` in ``expr`` replaced), so that bars keep the
    configured stage order; in a panel repeated per pipeline, the other pipelines' stages
    return nothing and show no bar."""
    return [target(expr.replace("STAGE", f'{label}="{s}"'), s, instant=True) for s in stages]


def pipeline_dashboard(config: PipelineConfig, currency: str) -> dict[str, Any]:
    money = money_unit(currency)
    stages = stages_in_order(config)
    p = 'pipeline=~"$pipeline"'
    pw = f'{p}, window="$window"'
    repeat = {"repeat": "pipeline", "repeatDirection": "h", "maxPerRow": 3}
    percent = {"min": 0, "max": 1, "thresholds": thresholds(("red", None), ("orange", 0.25), ("green", 0.5))}
    panels = [
        row("Headlines"),
        panel(
            "stat",
            "Open pipeline",
            "Sum of amount over open deals (not won, lost or deleted), in the reporting currency.",
            [target(f"sum(salesops_pipeline_value{{{p}}})")],
            money,
            w=4,
            h=4,
        ),
        panel(
            "stat",
            "Weighted pipeline",
            "Open amount x stage probability (a deal's own probability overrides its stage's).",
            [target(f"sum(salesops_pipeline_weighted_value{{{p}}})")],
            money,
            w=4,
            h=4,
        ),
        panel(
            "stat",
            "Open deals",
            "Open deals in the selected pipelines.",
            [target(f"sum(salesops_pipeline_deals{{{p}}})")],
            w=4,
            h=4,
        ),
        panel(
            "stat",
            "Stalled share",
            "Open deals past their stage's stalled threshold, as a share of open deals "
            "(SalesopsStalledDealsHigh alerts per stage above 30 %).",
            [target(f"sum(salesops_stalled_deals{{{p}}}) / sum(salesops_pipeline_deals{{{p}}})")],
            "percentunit",
            w=4,
            h=4,
            defaults={"thresholds": thresholds(("green", None), ("orange", 0.2), ("red", 0.3))},
        ),
        panel(
            "stat",
            "Win rate ($window)",
            "Won / (won + lost) by count, deals closed in the window; one value per pipeline.",
            [target(f'max by (pipeline) (salesops_win_rate_ratio{{{pw}, basis="count"}})', "{{pipeline}}")],
            "percentunit",
            w=4,
            h=4,
        ),
        panel(
            "stat",
            "Sales velocity ($window)",
            "Open deals x average deal size x win rate / average cycle days: expected won value per day.",
            [target(f"sum(salesops_sales_velocity_per_day{{{pw}}})")],
            money,
            w=4,
            h=4,
        ),
        row("Pipeline by stage (in stage order)"),
        panel(
            "bargauge",
            "Open pipeline value: $pipeline",
            "Open value per stage in the pipelines file's order; the sum over workers of their partitions.",
            per_stage(f"sum(salesops_pipeline_value{{{p}, STAGE}})", stages),
            money,
            w=8,
            **repeat,
        ),
        panel(
            "bargauge",
            "Weighted pipeline value: $pipeline",
            "Open value x probability per stage.",
            per_stage(f"sum(salesops_pipeline_weighted_value{{{p}, STAGE}})", stages),
            money,
            w=8,
            **repeat,
        ),
        panel(
            "bargauge",
            "Open deals: $pipeline",
            "Open deals per stage.",
            per_stage(f"sum(salesops_pipeline_deals{{{p}, STAGE}})", stages),
            w=8,
            **repeat,
        ),
        panel(
            "timeseries",
            "Open pipeline value over time",
            "Open value per pipeline: how the pipeline grows and shrinks.",
            [target(f"sum by (pipeline) (salesops_pipeline_value{{{p}}})", "{{pipeline}}")],
            money,
        ),
        panel(
            "timeseries",
            "Open deals over time",
            "Open deals per pipeline and stage.",
            [
                target(
                    f"sum by (pipeline, stage) (salesops_pipeline_deals{{{p}}})", "{{pipeline}} / {{stage}}"
                )
            ],
            defaults={"custom": {"stacking": {"mode": "normal", "group": "A"}, "fillOpacity": 20}},
        ),
        row("Funnel ($window)"),
        panel(
            "bargauge",
            "Stage conversion: $pipeline",
            "Window-based: of the deals that left the stage in the window, the share that moved to "
            "a later stage or won. Skipped stages count as passed; moves back are regressions.",
            per_stage(f"max(salesops_stage_conversion_ratio{{{pw}, STAGE}})", stages, "from_stage"),
            "percentunit",
            w=8,
            defaults=percent,
            **repeat,
        ),
        panel(
            "bargauge",
            "Cohort conversion: $pipeline",
            "Of the deals that entered the stage in the window, the share that later reached a later stage.",
            per_stage(f"max(salesops_stage_cohort_conversion_ratio{{{pw}, STAGE}})", stages, "from_stage"),
            "percentunit",
            w=8,
            defaults=percent,
            **repeat,
        ),
        panel(
            "bargauge",
            "Win rate by count and value",
            "Won / (won + lost) among deals closed in the window, by count and by value.",
            [
                target(
                    f"max by (pipeline, basis) (salesops_win_rate_ratio{{{pw}}})",
                    "{{pipeline}} {{basis}}",
                    True,
                )
            ],
            "percentunit",
            w=8,
            defaults=percent,
        ),
        panel(
            "bargauge",
            "Closed deals",
            "Deals won and lost in the window.",
            [
                target(
                    f"max by (pipeline, outcome) (salesops_closed_deals{{{pw}}})",
                    "{{pipeline}} {{outcome}}",
                    True,
                )
            ],
            w=8,
        ),
        panel(
            "bargauge",
            "Average deal size",
            "Won value / won count in the window.",
            [target(f"max by (pipeline) (salesops_average_deal_size{{{pw}}})", "{{pipeline}}", True)],
            money,
            w=8,
        ),
        panel(
            "bargauge",
            "Sales cycle",
            "Mean time from a won deal's creation to its close, deals won in the window.",
            [target(f"max by (pipeline) (salesops_sales_cycle_seconds{{{pw}}})", "{{pipeline}}", True)],
            "s",
            w=8,
        ),
        panel(
            "timeseries",
            "Sales velocity per day",
            "Expected won value per day: open deals x average deal size x win rate / average cycle days.",
            [target(f"max by (pipeline) (salesops_sales_velocity_per_day{{{pw}}})", "{{pipeline}}")],
            money,
        ),
        panel(
            "timeseries",
            "Win rate over time",
            "Win rate by count per pipeline.",
            [target(f'max by (pipeline) (salesops_win_rate_ratio{{{pw}, basis="count"}})', "{{pipeline}}")],
            "percentunit",
        ),
        row("Aging and stalled deals"),
        panel(
            "bargauge",
            "Time in stage ($statistic): $pipeline",
            "Age of open deals' current stage visit per stage: median, p90 (from a bounded summary, "
            "see docs/metrics.md) or max (exact).",
            per_stage(f'max(salesops_stage_age_seconds{{{p}, statistic="$statistic", STAGE}})', stages),
            "s",
            w=8,
            **repeat,
        ),
        panel(
            "bargauge",
            "Stalled deals: $pipeline",
            "Open deals past their stage's stalled threshold (stalled_after_days in the pipelines file).",
            per_stage(f"sum(salesops_stalled_deals{{{p}, STAGE}})", stages),
            w=8,
            defaults={"thresholds": thresholds(("green", None), ("orange", 1))},
            **repeat,
        ),
        panel(
            "timeseries",
            "Stalled share by stage",
            "Stalled / open deals per stage; the red line is SalesopsStalledDealsHigh's 30 %.",
            [
                target(
                    f"sum by (pipeline, stage) (salesops_stalled_deals{{{p}}}) "
                    f"/ sum by (pipeline, stage) (salesops_pipeline_deals{{{p}}})",
                    "{{pipeline}} / {{stage}}",
                )
            ],
            "percentunit",
            defaults={
                "thresholds": thresholds(("green", None), ("red", 0.3)),
                "custom": {"thresholdsStyle": {"mode": "line"}},
            },
        ),
        panel(
            "timeseries",
            "Oldest deal per stage",
            "Age of each stage's oldest open deal.",
            [
                target(
                    f'max by (pipeline, stage) (salesops_stage_age_seconds{{{p}, statistic="max"}})',
                    "{{pipeline}} / {{stage}}",
                )
            ],
            "s",
        ),
        row("Movement ($period)"),
        panel(
            "bargauge",
            "Pipeline movement: $pipeline",
            "Open value at the start of the period, what came in and went out, and the end: "
            "end = start + new + reopened + increased - decreased - won - lost - deleted.",
            [
                target(
                    f'sum(salesops_pipeline_movement_value{{{p}, window="$period", change="{c}"}})',
                    label,
                    True,
                )
                for c, label in MOVEMENT
            ],
            money,
            w=12,
            h=9,
            **repeat,
        ),
        row("By owner, team and region (all pipelines)"),
        *[
            panel(
                "bargauge",
                f"Open pipeline by {dim}",
                f"Open value per {dim}, largest first; at most 50 {dim}s have their own series, the "
                f"rest are summed as (other).",
                [
                    target(
                        "sort_desc(max by (member) "
                        f'(salesops_dimension_pipeline_value{{dimension="{dim}"}}))',
                        "{{member}}",
                        True,
                    )
                ],
                money,
                w=8,
                h=10,
            )
            for dim in ("owner", "team", "region")
        ],
        panel(
            "table",
            "Open deals, value and weighted value by team",
            "Per team: open deals, open value and weighted value.",
            [
                target(
                    'max by (member) (salesops_dimension_pipeline_deals{dimension="team"})', "", True, True
                ),
                target(
                    'max by (member) (salesops_dimension_pipeline_value{dimension="team"})', "", True, True
                ),
                target(
                    'max by (member) (salesops_dimension_pipeline_weighted_value{dimension="team"})',
                    "",
                    True,
                    True,
                ),
            ],
            money,
            transformations=[
                {"id": "merge", "options": {}},
                {
                    "id": "organize",
                    "options": {
                        "excludeByName": {"Time": True},
                        "renameByName": {
                            "member": "team",
                            "Value #A": "open deals",
                            "Value #B": "open value",
                            "Value #C": "weighted value",
                        },
                    },
                },
            ],
            overrides=[
                {
                    "matcher": {"id": "byName", "options": "open deals"},
                    "properties": [{"id": "unit", "value": "short"}],
                }
            ],
        ),
        panel(
            "timeseries",
            "Open pipeline by region over time",
            "Open value per region.",
            [target('max by (member) (salesops_dimension_pipeline_value{dimension="region"})', "{{member}}")],
            money,
        ),
    ]
    panels += targets_panels(money)
    return dashboard(
        "salesops-pipeline",
        "salesops / Pipeline and funnel",
        "For revenue and sales ops: open pipeline, funnel conversion, win rate, velocity, stage "
        "aging, movement, and pipeline by owner, team and region.",
        [
            query_variable(
                "pipeline", "Pipeline", "label_values(salesops_pipeline_deals, pipeline)", multi=True
            ),
            query_variable(
                "window",
                "Window",
                "label_values(salesops_stage_conversion_ratio, window)",
                default="last-90d",
            ),
            query_variable(
                "period", "Movement period", "label_values(salesops_pipeline_movement_value, window)", sort=2
            ),
            custom_variable("statistic", "Stage age", ("median", "p90", "max"), "p90"),
            query_variable(
                "forecast_period", "Forecast period", "label_values(salesops_forecast_value, period)"
            ),
            query_variable("quota_period", "Quota period", "label_values(salesops_quota_value, period)"),
        ],
        panels,
    )


def targets_panels(money: str) -> list[dict[str, Any]]:
    """Forecast, quotas and commission (agents/targets.py): all global figures, exported by
    the publishing worker (``max`` de-duplicates during a rebalance)."""
    bars = {"defaults": {"min": 0}}
    return [
        row("Forecast ($forecast_period)"),
        panel(
            "bargauge",
            "Forecast by method, all pipelines",
            "Closed-won value at period end: weighted (stage probabilities x close dates), "
            "expected (learned chain: open + already won + new deals) and the Monte Carlo "
            "P10 / P50 / P90 and mean (already won included).",
            [
                target(
                    'max by (method) (salesops_forecast_value{dimension="all", period="$forecast_period"})',
                    "{{method}}",
                    True,
                )
            ],
            money,
            w=8,
            **bars,
        ),
        panel(
            "bargauge",
            "Expected value by component",
            "The expected method's parts: open deals (amount x learned P(win) x share closing "
            "in the period), already won, and deals not created yet.",
            [
                target(
                    "max by (component) "
                    '(salesops_forecast_expected_value{dimension="all", period="$forecast_period"})',
                    "{{component}}",
                    True,
                )
            ],
            money,
            w=8,
            **bars,
        ),
        panel(
            "bargauge",
            "Forecast P50 by pipeline",
            "Monte Carlo median of the period's closed-won value per pipeline.",
            [
                target(
                    'sort_desc(max by (member) (salesops_forecast_value{dimension="pipeline", '
                    'period="$forecast_period", method="monte_carlo_p50"}))',
                    "{{member}}",
                    True,
                )
            ],
            money,
            w=8,
            **bars,
        ),
        panel(
            "timeseries",
            "Forecast P10 / P50 / P90 over time, all pipelines",
            "How the Monte Carlo band of the period moves as deals progress and close.",
            [
                target(
                    'max by (method) (salesops_forecast_value{dimension="all", '
                    'period="$forecast_period", method=~"monte_carlo_p10|monte_carlo_p50|monte_carlo_p90"})',
                    "{{method}}",
                )
            ],
            money,
        ),
        panel(
            "bargauge",
            "Forecast P50 by owner",
            "Monte Carlo median per owner (at most 50 owners; quantiles are not summed into (other)).",
            [
                target(
                    'sort_desc(max by (member) (salesops_forecast_value{dimension="owner", '
                    'period="$forecast_period", method="monte_carlo_p50"}))',
                    "{{member}}",
                    True,
                )
            ],
            money,
            **bars,
        ),
        row("Quotas and commission ($quota_period)"),
        panel(
            "bargauge",
            "Quota attainment",
            "Won value in the period / quota, per owner, team and territory (1 = 100 %).",
            [
                target(
                    'sort_desc(max by (scope, member) (salesops_quota_attainment_ratio{period="$quota_period"}))',
                    "{{scope}} {{member}}",
                    True,
                )
            ],
            "percentunit",
            w=8,
            h=10,
            defaults={"min": 0, "thresholds": thresholds(("red", None), ("orange", 0.7), ("green", 1))},
        ),
        panel(
            "bargauge",
            "Forecast attainment (P50 / quota)",
            "Where the period is heading: the Monte Carlo median of each quota's own deals over "
            "its quota (periods that contain today). Below 1 for long: SalesopsForecastBelowQuota.",
            [
                target(
                    "sort(max by (scope, member) "
                    '(salesops_quota_forecast_attainment_ratio{period="$quota_period"}))',
                    "{{scope}} {{member}}",
                    True,
                )
            ],
            "percentunit",
            w=8,
            h=10,
            defaults={"min": 0, "thresholds": thresholds(("red", None), ("orange", 0.9), ("green", 1))},
        ),
        panel(
            "bargauge",
            "Pipeline coverage",
            "Open value due in the period / quota still to win (3x is a common target); "
            "absent once the quota is reached.",
            [
                target(
                    'sort(max by (scope, member) (salesops_pipeline_coverage_ratio{period="$quota_period"}))',
                    "{{scope}} {{member}}",
                    True,
                )
            ],
            "short",
            w=8,
            h=10,
            defaults={"min": 0, "thresholds": thresholds(("red", None), ("orange", 1), ("green", 3))},
        ),
        panel(
            "table",
            "Quota and gap",
            "Per quota: the quota and what is still to win.",
            [
                target(
                    'max by (scope, member) (salesops_quota_value{period="$quota_period"})', "", True, True
                ),
                target(
                    'max by (scope, member) (salesops_quota_gap_value{period="$quota_period"})',
                    "",
                    True,
                    True,
                ),
            ],
            money,
            transformations=[
                {"id": "merge", "options": {}},
                {
                    "id": "organize",
                    "options": {
                        "excludeByName": {"Time": True},
                        "renameByName": {"Value #A": "quota", "Value #B": "gap"},
                    },
                },
            ],
        ),
        panel(
            "bargauge",
            "Territory pipeline spread",
            "How unevenly each territory's open pipeline is spread over its reps: coefficient of "
            "variation (0 = even) and the largest and smallest rep's share.",
            [
                target(
                    "max by (territory, statistic) (salesops_territory_pipeline_spread)",
                    "{{territory}} {{statistic}}",
                    True,
                )
            ],
            "short",
            **bars,
        ),
        panel(
            "bargauge",
            "Commission earned to date",
            "Per owner: the sum of the statement's lines (credits and adjustments).",
            [
                target(
                    'sort_desc(max by (owner) (salesops_commission_earned{period="$quota_period"}))',
                    "{{owner}}",
                    True,
                )
            ],
            money,
            w=8,
            h=10,
            **bars,
        ),
        panel(
            "bargauge",
            "Projected commission at the P50 forecast",
            "Per owner: the plan applied to the owner's P50 forecast of the period.",
            [
                target(
                    'sort_desc(max by (owner) (salesops_commission_projected{period="$quota_period"}))',
                    "{{owner}}",
                    True,
                )
            ],
            money,
            w=8,
            h=10,
            **bars,
        ),
        panel(
            "bargauge",
            "Commission adjustments",
            "Adjustment lines per owner: won deals reopened, lost, deleted, reassigned, moved or "
            "changed in amount after their credit (never silently rewritten).",
            [
                target(
                    'sort_desc(max by (owner) (salesops_commission_adjustments{period="$quota_period"}))',
                    "{{owner}}",
                    True,
                )
            ],
            "short",
            w=8,
            h=10,
            **bars,
        ),
    ]


def people_dashboard() -> dict[str, Any]:
    w = 'window="$window"'
    g = f'group=~"$group", {w}'
    enps_range = {
        "min": -100,
        "max": 100,
        "thresholds": thresholds(("red", None), ("orange", 0), ("green", 20)),
    }
    panels = [
        row("Headlines ($window)"),
        panel(
            "stat",
            "Organisation eNPS",
            "100 x (promoters - detractors) / responses, last answer per respondent and survey.",
            [target(f'max(salesops_enps{{group="org", {w}}})')],
            "none",
            w=6,
            h=4,
            defaults=enps_range,
        ),
        panel(
            "stat",
            "Organisation margin of error",
            "95 % margin of error of the organisation's eNPS, in points.",
            [target(f'max(salesops_enps_margin_of_error_points{{group="org", {w}}})')],
            "none",
            w=6,
            h=4,
        ),
        panel(
            "stat",
            "Responses",
            "eNPS answers in the window, whole organisation.",
            [target(f'max(salesops_enps_responses{{group="org", {w}}})')],
            w=6,
            h=4,
        ),
        panel(
            "stat",
            "Suppressed groups",
            "Groups whose score is hidden: fewer answers than the anonymity threshold, or hidden "
            "so that no subtraction reveals a small group (the differencing rule).",
            [target(f"sum(max by (group) (salesops_enps_suppressed{{{w}}}))")],
            w=6,
            h=4,
        ),
        row("eNPS by group ($window)"),
        panel(
            "table",
            "eNPS by group, suppressed groups included",
            "Every group with answers in the window. A suppressed group shows its response count "
            "only: its score is hidden by design (SALESOPS_ANONYMITY_THRESHOLD, differencing rule).",
            [
                target(f"max by (group) (salesops_enps_responses{{{g}}})", "", True, True),
                target(f"max by (group) (salesops_enps_suppressed{{{g}}})", "", True, True),
                target(f"max by (group) (salesops_enps{{{g}}})", "", True, True),
                target(f"max by (group) (salesops_enps_margin_of_error_points{{{g}}})", "", True, True),
            ],
            "none",
            w=12,
            h=10,
            transformations=[
                {"id": "merge", "options": {}},
                {
                    "id": "organize",
                    "options": {
                        "excludeByName": {"Time": True},
                        "renameByName": {
                            "Value #A": "responses",
                            "Value #B": "status",
                            "Value #C": "eNPS",
                            "Value #D": "+/- (95 %)",
                        },
                        "indexByName": {
                            "group": 0,
                            "Value #C": 1,
                            "Value #D": 2,
                            "Value #A": 3,
                            "Value #B": 4,
                        },
                    },
                },
            ],
            overrides=[
                {
                    "matcher": {"id": "byName", "options": "status"},
                    "properties": [
                        {
                            "id": "mappings",
                            "value": [
                                {
                                    "type": "value",
                                    "options": {
                                        "0": {"text": "visible", "color": "green", "index": 0},
                                        "1": {"text": "suppressed", "color": "orange", "index": 1},
                                    },
                                }
                            ],
                        },
                        {"id": "custom.cellOptions", "value": {"type": "color-text"}},
                    ],
                },
                {
                    "matcher": {"id": "byName", "options": "eNPS"},
                    "properties": [{"id": "noValue", "value": "hidden"}],
                },
            ],
        ),
        panel(
            "bargauge",
            "eNPS of visible groups",
            "Only groups at or above the anonymity threshold have a score.",
            [target(f"sort_desc(max by (group) (salesops_enps{{{g}}}))", "{{group}}", True)],
            "none",
            w=12,
            h=10,
            defaults=enps_range,
        ),
        panel(
            "timeseries",
            "eNPS over time",
            "Trailing-window eNPS per visible group.",
            [target(f"max by (group) (salesops_enps{{{g}}})", "{{group}}")],
            "none",
            defaults={"min": -100, "max": 100},
        ),
        panel(
            "timeseries",
            "Responses over time",
            "eNPS answers in the trailing window per group, suppressed groups included.",
            [target(f"max by (group) (salesops_enps_responses{{{g}}})", "{{group}}")],
        ),
        row("eNPS drops (last 30 days against the 30 days before)"),
        panel(
            "bargauge",
            "Drop in points",
            "Previous 30-day eNPS minus the last 30 days, per group visible in both windows; "
            "negative = improved.",
            [
                target(
                    'sort_desc(max by (group) (salesops_enps_drop_points{group=~"$group"}))',
                    "{{group}}",
                    True,
                )
            ],
            "none",
            w=8,
            defaults={"thresholds": thresholds(("green", None), ("orange", 5), ("red", 10))},
        ),
        panel(
            "bargauge",
            "Margin of error of the drop",
            "95 % margin of error of each drop: a smaller drop is within the noise of two samples.",
            [target('max by (group) (salesops_enps_drop_margin_points{group=~"$group"})', "{{group}}", True)],
            "none",
            w=8,
        ),
        panel(
            "stat",
            "Alert threshold",
            "SALESOPS_ENPS_DROP_POINTS: SalesopsEnpsDrop fires for a drop above it and above its margin.",
            [target("max(salesops_enps_drop_threshold_points)")],
            "none",
            w=4,
        ),
        panel(
            "stat",
            "eNPS alerts fired",
            "ENPS_DROP alerts the worker fired in the dashboard's time range.",
            [target('sum(increase(salesops_alerts_total{kind="ENPS_DROP", status="FIRING"}[$__range]))')],
            w=4,
        ),
        panel(
            "timeseries",
            "Drop against margin and threshold",
            "Drop per group with its margin of error; the alert needs the drop above both.",
            [
                target('max by (group) (salesops_enps_drop_points{group=~"$group"})', "{{group}} drop"),
                target(
                    'max by (group) (salesops_enps_drop_margin_points{group=~"$group"})', "{{group}} margin"
                ),
                target("max(salesops_enps_drop_threshold_points)", "threshold"),
            ],
            "none",
            w=24,
        ),
    ]
    return dashboard(
        "salesops-people",
        "salesops / People pulse",
        "For people partners: eNPS per group with suppressed groups shown by their response count, "
        "margins of error, trends and drops.",
        [
            query_variable(
                "window", "Window", "label_values(salesops_enps_responses, window)", default="last-30d"
            ),
            query_variable("group", "Group", "label_values(salesops_enps_responses, group)", multi=True),
        ],
        panels,
    )


def operations_dashboard() -> dict[str, Any]:
    i = 'instance=~"$instance"'
    ri = "[$__rate_interval]"
    panels = [
        row("Health"),
        panel(
            "stat",
            "Workers",
            "Workers exporting metrics.",
            [target(f"count(salesops_build_info{{{i}}})")],
            w=4,
            h=4,
        ),
        panel(
            "stat",
            "Kafka reachable",
            "1 when every worker's broker probe gets a metadata answer.",
            [target(f"min(salesops_broker_up{{{i}}})")],
            w=4,
            h=4,
            defaults={
                "mappings": [
                    {
                        "type": "value",
                        "options": {
                            "0": {"text": "down", "color": "red"},
                            "1": {"text": "up", "color": "green"},
                        },
                    }
                ]
            },
        ),
        panel(
            "stat",
            "Consumer lag",
            "Records waiting after the committed offsets, all assigned input partitions.",
            [target(f"sum(salesops_consumer_lag_records{{{i}}})")],
            w=4,
            h=4,
            defaults={"thresholds": thresholds(("green", None), ("orange", 1000), ("red", 10000))},
        ),
        panel(
            "stat",
            "Events per second",
            "Input records handled per second, all topics and outcomes.",
            [target(f"sum(rate(salesops_events_total{{{i}}}{ri}))")],
            "ops",
            w=4,
            h=4,
        ),
        panel(
            "stat",
            "Dead letters",
            "Records sent to the dead-letter topic in the dashboard's time range.",
            [target(f"sum(increase(salesops_dead_letter_total{{{i}}}[$__range]))")],
            w=4,
            h=4,
            defaults={"thresholds": thresholds(("green", None), ("red", 1))},
        ),
        panel(
            "stat",
            "Sink errors",
            "Failed (retried) sink writes in the dashboard's time range.",
            [target(f"sum(increase(salesops_sink_errors_total{{{i}}}[$__range]))")],
            w=4,
            h=4,
            defaults={"thresholds": thresholds(("green", None), ("red", 1))},
        ),
        row("Consumer group"),
        panel(
            "timeseries",
            "Consumer lag per partition",
            "End offset minus the committed offset, per input partition (whichever worker owns "
            "it); SalesopsConsumerLagHigh fires above 1000 for 15 minutes.",
            [
                target(
                    f'max by (topic, partition) (salesops_consumer_lag_records{{{i}, topic=~"$topic"}})',
                    "{{topic}} / {{partition}}",
                )
            ],
            defaults={
                "thresholds": thresholds(("green", None), ("red", 1000)),
                "custom": {"thresholdsStyle": {"mode": "line"}},
            },
        ),
        panel(
            "timeseries",
            "Committed records per second",
            "How fast each worker's committed offsets move; 0 with lag above 0 is a stuck consumer.",
            [
                target(
                    "sum by (instance, topic) "
                    f'(deriv(salesops_consumer_committed_offset{{{i}, topic=~"$topic"}}{ri}))',
                    "{{instance}} {{topic}}",
                )
            ],
            "ops",
        ),
        panel(
            "timeseries",
            "Assigned partitions",
            "Input partitions per worker and topic: a rebalance moves them.",
            [
                target(
                    f'sum by (instance, topic) (salesops_assigned_partitions{{{i}, topic=~"$topic"}})',
                    "{{instance}} {{topic}}",
                )
            ],
        ),
        panel(
            "timeseries",
            "Events per second by topic and outcome",
            "Input records handled: ok or dead_letter.",
            [
                target(
                    f"sum by (topic, outcome) (rate(salesops_events_total{{{i}}}{ri}))",
                    "{{topic}} {{outcome}}",
                )
            ],
            "ops",
        ),
        row("Input quality"),
        panel(
            "timeseries",
            "Dead letters by reason",
            "Records sent to the dead-letter topic per interval (SalesopsDeadLetters fires on any).",
            [target(f"sum by (reason) (increase(salesops_dead_letter_total{{{i}}}{ri}))", "{{reason}}")],
            defaults={"custom": {"drawStyle": "bars", "fillOpacity": 60}},
        ),
        panel(
            "timeseries",
            "Late events per second",
            "Events older than their partition's watermark (still applied).",
            [target(f"sum by (topic) (rate(salesops_late_events_total{{{i}}}{ri}))", "{{topic}}")],
            "ops",
        ),
        panel(
            "timeseries",
            "Input rewinds",
            "Seeks back to input records the Kafka client skipped after a rebalance; they are "
            "fetched and applied again, so numbers stay exact (docs/design.md).",
            [target(f"sum by (topic) (increase(salesops_input_rewinds_total{{{i}}}{ri}))", "{{topic}}")],
            defaults={"custom": {"drawStyle": "bars", "fillOpacity": 60}},
        ),
        row("Latency"),
        panel(
            "timeseries",
            "Processing time per record",
            "Decode + validate + apply of one deal event: p50, p90, p99.",
            [
                target(
                    f"histogram_quantile({q}, sum by (le, topic) "
                    f"(rate(salesops_event_processing_seconds_bucket{{{i}}}{ri})))",
                    f"p{int(q * 100)} {{{{topic}}}}",
                )
                for q in (0.5, 0.9, 0.99)
            ],
            "s",
        ),
        panel(
            "timeseries",
            "Event to view latency",
            "Kafka record timestamp to the view being updated: p50, p90, p99.",
            [
                target(
                    f"histogram_quantile({q}, sum by (le) "
                    f"(rate(salesops_event_to_view_seconds_bucket{{{i}}}{ri})))",
                    f"p{int(q * 100)}",
                )
                for q in (0.5, 0.9, 0.99)
            ],
            "s",
        ),
        row("Sinks, alerts and the broker"),
        panel(
            "timeseries",
            "Sink flushes and errors",
            "Successful flushes (redis, aggregate-topics) and failed, retried writes (changelog, "
            "partials, aggregate-topics, redis) per second.",
            [
                target(f"sum by (sink) (rate(salesops_sink_flushes_total{{{i}}}{ri}))", "{{sink}} ok"),
                target(f"sum by (sink) (rate(salesops_sink_errors_total{{{i}}}{ri}))", "{{sink}} error"),
            ],
            "ops",
        ),
        panel(
            "timeseries",
            "Alert transitions",
            "Stalled-deal and eNPS-drop alerts fired and resolved per interval.",
            [
                target(
                    f"sum by (kind, status) (increase(salesops_alerts_total{{{i}}}{ri}))",
                    "{{kind}} {{status}}",
                )
            ],
            defaults={"custom": {"drawStyle": "bars", "fillOpacity": 60}},
        ),
        panel(
            "timeseries",
            "Webhook deliveries",
            "Alert webhook outcomes per interval: delivered, already_delivered (a redelivery "
            "skipped), failed (dead-lettered webhook_failed). All 0 without SALESOPS_WEBHOOK_URL.",
            [
                target(
                    f"sum by (outcome) (increase(salesops_alert_deliveries_total{{{i}}}{ri}))", "{{outcome}}"
                )
            ],
            defaults={"custom": {"drawStyle": "bars", "fillOpacity": 60}},
        ),
        panel(
            "timeseries",
            "Kafka broker",
            "Broker reachability per worker, disconnections, and Kafka client log lines held back.",
            [
                target(f"min by (instance) (salesops_broker_up{{{i}}})", "{{instance}} up"),
                target(
                    f"sum by (instance) (increase(salesops_broker_disconnects_total{{{i}}}{ri}))",
                    "{{instance}} disconnects",
                ),
                target(
                    f"sum by (instance) (increase(salesops_client_log_suppressed_total{{{i}}}{ri}))",
                    "{{instance}} log lines held back",
                ),
            ],
        ),
        panel(
            "timeseries",
            "Forecast computation time",
            "Duration of the last forecast, attainment and commission run (every "
            "SALESOPS_FORECAST_INTERVAL_S, off the event loop).",
            [target(f"max by (instance) (salesops_forecast_run_seconds{{{i}}})", "{{instance}}")],
            "s",
        ),
        panel(
            "table",
            "Workers",
            "Each worker and its version.",
            [target(f"max by (instance, version) (salesops_build_info{{{i}}})", "", True, True)],
            w=24,
            h=5,
            transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True}}}],
        ),
    ]
    return dashboard(
        "salesops-operations",
        "salesops / Operations",
        "For whoever runs salesops: workers, broker, consumer lag per partition, throughput, dead "
        "letters, latency, sinks, alerts and webhook deliveries.",
        [
            query_variable("instance", "Worker", "label_values(salesops_build_info, instance)", multi=True),
            query_variable(
                "topic", "Topic", "label_values(salesops_consumer_lag_records, topic)", multi=True
            ),
        ],
        panels,
    )


def build(config: PipelineConfig, currency: str) -> dict[str, dict[str, Any]]:
    """File name -> dashboard."""
    return {
        "salesops-pipeline.json": pipeline_dashboard(config, currency),
        "salesops-people.json": people_dashboard(),
        "salesops-operations.json": operations_dashboard(),
    }


def render(board: dict[str, Any]) -> str:
    return json.dumps(board, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipelines", default=str(DEFAULT_PIPELINES_FILE), help="pipelines file (TOML)")
    parser.add_argument("--rates", default=str(DEFAULT_RATES_FILE), help="rates file (TOML)")
    parser.add_argument("--out", default=str(OUT), help="directory to write the dashboards to")
    args = parser.parse_args(argv)
    boards = build(load_pipelines(args.pipelines), load_rates(args.rates).reporting_currency)
    out = Path(args.out)
    for name, board in boards.items():
        (out / name).write_text(render(board))
        print(f"wrote {out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
