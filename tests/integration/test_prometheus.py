"""A real Prometheus (Debian's package, found or installed by deploy/prometheus/test.sh)
scrapes a real worker fed by a simulated import, with the project's alert rules loaded:

* every expression of every dashboard panel and every dashboard variable, variables
  substituted with real label values (``$__rate_interval`` -> 1m, ``$__range`` -> 1h;
  a panel repeated per pipeline is asked for each pipeline and must answer for one),
  returns a non-empty result;
* every alert rule evaluates without error in Prometheus, and its expression with each
  comparison turned into ``bool`` (``absent(x)`` into ``x``) returns a non-empty result:
  every selector finds series and every vector match pairs them, whether or not the alert
  fires today;
* ``promtool check metrics`` on the worker's /metrics prints nothing.

The scrape job is deliberately not called "salesops": no rule may depend on it.
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.conftest import ROOT, Names, WorkerProcess, create_topic, free_port, poll, run_cli

PROM_SCRIPT = ROOT / "deploy" / "prometheus" / "test.sh"
RULES = ROOT / "deploy" / "prometheus" / "rules" / "salesops.rules.yml"
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
INTERVALS = {"$__rate_interval": "1m", "$__range": "1h"}


def find(tool: str) -> str:
    """promtool / prometheus from PATH, else Debian's package (deploy/prometheus/test.sh)."""
    done = subprocess.run(
        ["bash", "-c", f'source "$1"; find_{tool}', tool, str(PROM_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        pytest.fail(f"no {tool}: {done.stderr.strip()}")
    return done.stdout.strip().splitlines()[-1]


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return list(self.get("/api/v1/query", query=expr)["result"])

    def label_values(self, label: str, metric: str) -> list[str]:
        return list(self.get(f"/api/v1/label/{label}/values", **{"match[]": metric}))


@pytest.fixture
def prometheus(tmp_path: Path, worker: WorkerProcess) -> Iterator[Prometheus]:
    binary = find("prometheus")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(RULES)],
                "scrape_configs": [
                    {
                        "job_name": "kubernetes-pods",
                        "metrics_path": "/metrics",
                        "static_configs": [{"targets": [f"127.0.0.1:{worker.port}"]}],
                    }
                ],
            }
        )
    )
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    prom = Prometheus(f"http://127.0.0.1:{port}")
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"prometheus exited: {(tmp_path / 'prometheus.log').read_text()[-3000:]}")
            with urllib.request.urlopen(prom.url + "/-/ready", timeout=5) as resp:
                return resp.status == 200

        poll(ready, 30, what="prometheus ready")
        yield prom
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


@pytest.fixture
def worker(names: Names, start_worker, tmp_path: Path) -> WorkerProcess:
    """A worker fed by the simulator: deals (some stalled) and six survey waves."""
    out = tmp_path / "sim"
    gen = run_cli(
        "simulate",
        "--seed",
        "5",
        "--deals",
        "300",
        "--survey-waves",
        "6",
        "--employees",
        "120",
        "--output-dir",
        str(out),
    )
    assert gen.returncode == 0, gen.stderr
    for topic in (names.deal_events, names.responses, names.invitations):
        create_topic(topic, names.partitions)
    for kind, f in (
        ("deals", "deals.jsonl"),
        ("surveys", "surveys.jsonl"),
        ("invitations", "invitations.jsonl"),
    ):
        done = run_cli("import", kind, str(out / f), "--no-progress", env=names.env())
        assert done.returncode == 0, done.stderr
    return start_worker(
        names.env(
            SALESOPS_FORECAST_INTERVAL_S=1,
            **targets_files(tmp_path, [f"u-{i:02d}" for i in range(1, 21)]),
        )
    )


def targets_files(tmp_path: Path, owners: list[str]) -> dict[str, str]:
    """A quotas and a plans file for the simulator's owners, teams and regions, over the
    current month and quarter (so that forecast attainment, coverage and projected
    commission are exported too)."""
    today = datetime.now(UTC).date()
    periods = (f"{today.year}-{today.month:02d}", f"{today.year}-Q{(today.month - 1) // 3 + 1}")
    quotas = ['currency = "USD"', "[territories.emea]", 'regions = ["EMEA"]']
    quotas += [f'[quotas.owner.{o}]\n"{periods[0]}" = 100000\n"{periods[1]}" = 300000' for o in owners]
    quotas += [
        f'[quotas.team.na-ent]\n"{periods[1]}" = 2000000',
        f'[quotas.territory.emea]\n"{periods[1]}" = 5000000',
    ]
    plans = ['currency = "USD"', "[roles]", *(f'{o} = "ae"' for o in owners)]
    plans += ["[plans.ae]", 'role = "ae"', "base_rate = 0.08", "tiers = [{ from = 1.0, rate = 0.12 }]"]
    (tmp_path / "quotas.toml").write_text("\n".join(quotas) + "\n")
    (tmp_path / "plans.toml").write_text("\n".join(plans) + "\n")
    return {
        "SALESOPS_QUOTAS_FILE": str(tmp_path / "quotas.toml"),
        "SALESOPS_PLANS_FILE": str(tmp_path / "plans.toml"),
    }


# ------------------------------------------------------------------------ expressions


def with_bool(expr: str) -> str:
    """``expr`` with ``bool`` after every comparison operator outside label matchers, and
    ``absent(x)`` read as ``x``: a filter then keeps every series (as 0 or 1)."""
    expr = expr.strip()
    if expr.startswith("absent(") and expr.endswith(")"):
        expr = expr[len("absent(") : -1]
    out, depth, quote, i = [], 0, "", 0
    while i < len(expr):
        c = expr[i]
        if quote:
            quote = "" if c == quote and expr[i - 1] != "\\" else quote
        elif c in "\"'":
            quote = c
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        elif depth == 0 and (m := re.match(r"==|!=|>=|<=|>|<", expr[i:])):
            out.append(m.group(0) + " bool")
            i += len(m.group(0))
            continue
        out.append(c)
        i += 1
    return "".join(out)


def test_with_bool_leaves_label_matchers_alone() -> None:
    assert with_bool('a{x!="1", y=~"b"} > 0.3 and on (x) b == 0') == (
        'a{x!="1", y=~"b"} > bool 0.3 and on (x) b == bool 0'
    )
    assert with_bool("absent(salesops_build_info)") == "salesops_build_info"


def variable_values(prom: Prometheus, board: dict[str, Any]) -> dict[str, list[str]]:
    """Each variable's candidate values: the default when it is a real value, All as
    ``.*``, else every real value (a repeated panel is asked for each)."""
    values: dict[str, list[str]] = {}
    for v in board["templating"]["list"]:
        if v["type"] == "query":
            m = re.fullmatch(r"label_values\((\w+), (\w+)\)", v["query"]["query"])
            assert m, v["query"]
            real = prom.label_values(m.group(2), m.group(1))
            default = v["current"].get("value")
            if not real:
                values[v["name"]] = []  # its panels find nothing: reported as empty
            elif default == ["$__all"]:
                values[v["name"]] = [".*", *real]
            elif default in real:
                values[v["name"]] = [default]
            else:
                values[v["name"]] = sorted(real, reverse=v.get("sort") == 2)
        elif v["type"] == "custom":
            values[v["name"]] = [v["current"]["value"]]
    return values


def substitutions(expr: str, values: dict[str, list[str]], repeat: str | None) -> list[str]:
    """``expr`` with its variables replaced: the first candidate of each, except the
    repeated variable (every real value of it, as Grafana repeats the panel)."""
    for name, intervals in INTERVALS.items():
        expr = expr.replace(name, intervals)
    variants = [expr]
    for name, candidates in values.items():
        choices = [c for c in candidates if c != ".*"] if name == repeat else candidates[:1]
        variants = [e.replace(f"${name}", c) for e in variants for c in choices]
    return variants


def empty_dashboard_expressions(prom: Prometheus) -> list[str]:
    empty = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        values = variable_values(prom, board)
        for v in board["templating"]["list"]:
            if v["type"] == "query" and not values[v["name"]]:
                empty.append(f"{path.name} / variable {v['name']}: {v['query']['query']}")
        for p in board["panels"]:
            for t in p.get("targets", []):
                if not any(prom.query(e) for e in substitutions(t["expr"], values, p.get("repeat"))):
                    empty.append(f"{path.name} / {p['title']}: {t['expr']}")
    return empty


def empty_rule_expressions(prom: Prometheus) -> list[str]:
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    assert len(rules) == 8
    return [f"{r['alert']}: {with_bool(r['expr'])}" for r in rules if not prom.query(with_bool(r["expr"]))]


# ------------------------------------------------------------------------ the test


def test_a_real_prometheus_finds_data_for_every_dashboard_and_rule_expression(
    worker: WorkerProcess, prometheus: Prometheus
) -> None:
    # the worker has processed everything: pipeline, eNPS (suppressed groups included), drops, lag
    def caught_up() -> bool:
        text = worker.metrics()
        needed = (
            "salesops_enps_drop_margin_points{",
            'salesops_enps_suppressed{group="',
            "salesops_consumer_lag",
            "salesops_commission_projected{",
        )
        lags = [float(v) for v in re.findall(r"^salesops_consumer_lag_records\{[^}]*\} (\S+)$", text, re.M)]
        return all(n in text for n in needed) and bool(lags) and sum(lags) == 0

    poll(caught_up, 90, interval=0.5, what="worker caught up with the import (lag 0, pulse and drops out)")

    # Prometheus has scraped the finished state twice and evaluated the rules
    poll(
        lambda: prometheus.query("count_over_time(salesops_enps_drop_threshold_points[1m]) >= 2"),
        30,
        what="two scrapes of the finished worker",
    )

    def evaluated_rules() -> list[dict[str, Any]] | None:
        rules = [r for g in prometheus.get("/api/v1/rules")["groups"] for r in g["rules"]]
        done = len(rules) == 8 and all(not r["lastEvaluation"].startswith("0001") for r in rules)
        return rules if done else None

    rules = poll(evaluated_rules, 30, what="rules loaded and evaluated")
    assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []

    # the variables of the dashboards, then every panel expression and every rule
    # (polled: the rates need a few samples of the finished state)
    empty: list[str] = []

    def all_have_data() -> bool:
        empty[:] = empty_dashboard_expressions(prometheus) + empty_rule_expressions(prometheus)
        return not empty

    if not poll_quietly(all_have_data, 30):
        pytest.fail("expressions without data:\n" + "\n".join(empty))


def poll_quietly(fn: Any, timeout: float) -> bool:
    """Like conftest.poll, but returns False at the deadline (the caller explains)."""
    try:
        poll(fn, timeout, interval=1.0)
    except pytest.fail.Exception:
        return False
    return True


def test_promtool_check_metrics_is_clean_on_a_live_worker(worker: WorkerProcess) -> None:
    promtool = find("promtool")
    poll(lambda: "salesops_enps{" in worker.metrics(), 90, what="eNPS exported")
    text = worker.metrics()
    assert "_created" not in text
    done = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")
