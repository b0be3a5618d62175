"""Crash and scale-out: a SIGKILLed worker restarts to the same numbers, and two workers
in one consumer group together publish exactly the reference totals."""

from __future__ import annotations

import subprocess
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import ROOT, Names, create_topic, poll, poll_equal, run_cli
from tests.integration.reference import DealReference, read_jsonl
from tests.integration.test_deal_pipeline import (
    api_by_stage,
    assert_last_90_days_closed_match,
    pipeline_topic_rows,
)


def simulate(tmp_path, deals: int, seed: int):
    out = tmp_path / "sim"
    gen = run_cli(
        "simulate",
        "--seed",
        str(seed),
        "--deals",
        str(deals),
        "--survey-waves",
        "0",
        "--output-dir",
        str(out),
    )
    assert gen.returncode == 0, gen.stderr
    return out / "deals.jsonl"


# 50,000 events pass through a worker twice (before and after the crash): minutes on a
# slow 2-core runner, so this test gets a budget of its own.
@pytest.mark.timeout(900)
def test_sigkill_mid_import_then_restart_gives_the_reference(names: Names, start_worker, tmp_path) -> None:
    path = simulate(tmp_path, 12_500, seed=11)
    events = read_jsonl(path)
    assert len(events) >= 50_000
    ref = DealReference(events)
    create_topic(names.deal_events, names.partitions)
    # the group moves the dead worker's partitions after the session timeout: keep it short
    env = names.env(SALESOPS_REDIS_URL="", SALESOPS_SESSION_TIMEOUT_S="10")
    worker = start_worker(env)
    importer = subprocess.Popen(
        [sys.executable, "-m", "agents.cli", "import", "deals", str(path), "--no-progress"],
        cwd=ROOT,
        env={**__import__("os").environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    topic = names.deal_events
    poll(
        lambda: (worker.sample("salesops_events_total", topic=topic, outcome="ok") or 0) >= 15_000,
        180,
        what="15,000 events processed before the crash",
    )
    worker.kill()  # SIGKILL: no commit, no flush, no goodbye
    worker = start_worker(env)
    assert importer.wait(300) == 0, importer.stderr.read() if importer.stderr else ""
    expected = ref.open_by_stage()
    poll_equal(lambda: api_by_stage(worker), expected, 600, interval=1, what="views after restart")
    assert_last_90_days_closed_match(worker, ref)
    assert worker.stop() == 0


def prometheus_sum(workers, name: str) -> dict[tuple[str, str], float]:
    total: dict[tuple[str, str], float] = {}
    for w in workers:
        for family in text_string_to_metric_families(w.metrics()):
            for s in family.samples:
                if s.name == name:
                    key = (s.labels["pipeline"], s.labels["stage"])
                    total[key] = total.get(key, 0.0) + s.value
    return total


def test_two_workers_in_one_group_sum_to_the_reference(names: Names, start_worker, tmp_path) -> None:
    names.partitions = 6
    path = simulate(tmp_path, 600, seed=5)
    ref = DealReference(read_jsonl(path))
    expected = ref.open_by_stage()
    create_topic(names.deal_events, names.partitions)
    env = names.env(SALESOPS_REDIS_URL="")
    first = start_worker(env)
    assert run_cli("import", "deals", str(path), "--no-progress", env=env).returncode == 0
    poll_equal(lambda: api_by_stage(first), expected, 120, what="first worker alone == reference")
    second = start_worker(env)  # joins the group: a rebalance moves partitions to it
    poll(
        lambda: (
            second.sample("salesops_pipeline_deals", pipeline="default", stage="appointmentscheduled")
            is not None
        ),
        120,
        what="second worker owns partitions",
    )
    workers = [first, second]
    for w in workers:  # global numbers whichever worker is asked
        poll_equal(lambda w=w: api_by_stage(w), expected, 120, what=f"API of worker {w.port} == reference")
    want_deals = {k: float(n) for k, (n, _v, _w) in expected.items()}
    poll(
        lambda: prometheus_sum(workers, "salesops_pipeline_deals") == want_deals,
        60,
        what="sum over workers of salesops_pipeline_deals == reference",
    )
    values = prometheus_sum(workers, "salesops_pipeline_value")
    assert {k: round(v * 100) for k, v in values.items()} == {k: v for k, (_n, v, _w) in expected.items()}
    poll_equal(lambda: pipeline_topic_rows(names), expected, 60, interval=1, what="aggregate topic")
    for w in workers:
        assert w.stop() == 0
