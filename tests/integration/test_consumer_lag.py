"""Consumer lag exported by a real worker (agents/lag.py): 0 per assigned partition when
idle, above 0 while a backlog is imported faster than the worker processes it, back to 0
once it has caught up; the partitions it owns are counted per topic."""

from __future__ import annotations

import re

from tests.integration.conftest import Names, create_topic, poll, run_cli


def lags(text: str, topic: str) -> dict[int, float]:
    """partition -> lag of ``topic`` in a /metrics text."""
    pattern = r'^salesops_consumer_lag_records\{partition="(\d+)",topic="([^"]+)"\} (\S+)$'
    return {int(p): float(v) for p, t, v in re.findall(pattern, text, re.M) if t == topic}


def test_lag_rises_behind_a_backlog_and_falls_to_zero_when_caught_up(
    names: Names, start_worker, tmp_path
) -> None:
    out = tmp_path / "sim"
    # 5,000 deals, about 20,000 events: tens of seconds of work for one worker
    gen = run_cli(
        "simulate", "--seed", "9", "--deals", "5000", "--survey-waves", "0", "--output-dir", str(out)
    )
    assert gen.returncode == 0, gen.stderr
    create_topic(names.deal_events, names.partitions)
    worker = start_worker(names.env())
    topic = names.deal_events

    # idle: every partition of the deal topic is assigned to this worker, none behind
    poll(
        lambda: lags(worker.metrics(), topic) == dict.fromkeys(range(names.partitions), 0.0), 60, what="lag 0"
    )
    assert worker.sample("salesops_assigned_partitions", topic=topic) == names.partitions

    # the backlog: the importer writes much faster than the worker applies
    done = run_cli("import", "deals", str(out / "deals.jsonl"), "--no-progress", env=names.env())
    assert done.returncode == 0, done.stderr
    behind = poll(lambda: sum(lags(worker.metrics(), topic).values()), 60, interval=0.2, what="lag > 0")
    assert behind > 0

    # caught up: lag 0 everywhere, the offsets it resumes from at the end of each partition
    poll(
        lambda: lags(worker.metrics(), topic) == dict.fromkeys(range(names.partitions), 0.0),
        180,
        interval=0.5,
        what="lag back to 0",
    )
    committed = sum(
        worker.sample("salesops_consumer_committed_offset", partition=str(p), topic=topic) or 0
        for p in range(names.partitions)
    )
    assert committed == len((out / "deals.jsonl").read_text().splitlines())
