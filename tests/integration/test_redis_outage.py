"""A Redis outage is retried and never stops consumption (a real redis-server, stopped and
restarted by the test on its own port so the shared one is untouched)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from decimal import Decimal
from pathlib import Path

import pytest
import redis

from sinks.base import SinkUnavailable, ViewRows
from sinks.redis_snapshot import RedisSnapshotSink
from tests.integration.conftest import (
    Names,
    create_topic,
    encoded_deal,
    free_port,
    poll,
    poll_equal,
    produce,
    run_cli,
)
from tests.integration.reference import DealReference, read_jsonl
from tests.integration.test_deal_pipeline import api_by_stage


def start_redis(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    server = shutil.which("redis-server")
    assert server, "redis-server is required (make test installs it)"
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    poll(lambda: client.ping(), 20, what=f"redis on {port}")
    return proc


def test_snapshot_sink_writes_atomically_and_raises_a_retryable_error_when_down(tmp_path: Path) -> None:
    port = free_port()
    proc = start_redis(port, tmp_path)
    sink = RedisSnapshotSink(f"redis://127.0.0.1:{port}/0", "unit")
    sink.setup()
    sink.add(ViewRows("pipeline", 1000, {"stage:p:a": {"deals": 2}}))
    asyncio.run(sink.flush())
    client = redis.Redis(port=port)
    assert json.loads(client.hget("unit:view:pipeline", "stage:p:a")) == {"deals": 2}
    assert client.hget("unit:meta", "pipeline") == b"1000"
    sink.add(ViewRows("pipeline", 2000, {"stage:p:b": {"deals": 1}}))  # a:... vanished, b appeared
    proc.terminate()
    proc.wait(10)
    with pytest.raises(SinkUnavailable):
        asyncio.run(sink.flush())
    assert sink.pending == 1  # kept for the retry
    proc = start_redis(port, tmp_path)
    asyncio.run(sink.flush())
    assert redis.Redis(port=port).hgetall("unit:view:pipeline") == {b"stage:p:b": b'{"deals": 1}'}
    proc.terminate()
    proc.wait(10)


def test_worker_keeps_consuming_through_a_redis_outage(names: Names, start_worker, tmp_path: Path) -> None:
    port = free_port()
    proc = start_redis(port, tmp_path)
    create_topic(names.deal_events, names.partitions)
    worker = start_worker(names.env(SALESOPS_REDIS_URL=f"redis://127.0.0.1:{port}/0"))
    now = int(time.time() * 1000)

    def event(i: int) -> tuple[bytes, bytes]:
        return encoded_deal(
            event_id=f"e{i}",
            source="t",
            deal_id=f"D{i}",
            event_type="CREATED",
            occurred_at=now - i,
            pipeline="default",
            stage="contractsent",
            amount=Decimal("10.00"),
            currency="USD",
        )

    produce(names.deal_events, [event(i) for i in range(5)])
    client = redis.Redis(port=port)
    key = f"{names.uid}:view:pipeline"
    poll(
        lambda: json.loads(client.hget(key, "stage:default:contractsent") or b"{}").get("deals") == 5,
        60,
        what="5 deals in Redis",
    )
    proc.terminate()
    proc.wait(10)
    produce(names.deal_events, [event(i) for i in range(5, 12)])
    topic = names.deal_events
    poll(
        lambda: worker.sample("salesops_events_total", topic=topic, outcome="ok") == 12.0,
        60,
        what="consumption goes on while Redis is down",
    )
    poll(
        lambda: (worker.sample("salesops_sink_errors_total", sink="redis") or 0) >= 1,
        30,
        what="outage counted",
    )
    proc = start_redis(port, tmp_path)
    client = redis.Redis(port=port)
    poll(
        lambda: json.loads(client.hget(key, "stage:default:contractsent") or b"{}").get("deals") == 12,
        60,
        what="Redis catches up after the outage",
    )
    assert worker.stop() == 0
    proc.terminate()
    proc.wait(10)


def redis_pipeline_rows(client: redis.Redis, prefix: str) -> dict[tuple[str, str], tuple[int, str, str]]:
    """(pipeline, stage) -> (deals, value, weighted value) of the Redis pipeline snapshot."""
    raw = client.hgetall(f"{prefix}:view:pipeline")
    rows = {k.decode(): json.loads(v) for k, v in raw.items()}
    return {
        (k.split(":", 2)[1], k.split(":", 2)[2]): (r["deals"], r["value"], r["weighted_value"])
        for k, r in rows.items()
        if k.startswith("stage:")
    }


@pytest.mark.timeout(300)
def test_a_30s_redis_stop_mid_replay_ends_with_the_reference_snapshot(
    names: Names, start_worker, tmp_path: Path
) -> None:
    sim = tmp_path / "sim"
    gen = run_cli(
        "simulate", "--seed", "29", "--deals", "600", "--survey-waves", "0", "--output-dir", str(sim)
    )
    assert gen.returncode == 0, gen.stderr
    lines = (sim / "deals.jsonl").read_text().splitlines(keepends=True)
    # the replay arrives in two halves: the second one while Redis is down
    halves = [tmp_path / "first.jsonl", tmp_path / "second.jsonl"]
    halves[0].write_text("".join(lines[: len(lines) // 2]))
    halves[1].write_text("".join(lines[len(lines) // 2 :]))
    ref = DealReference(read_jsonl(sim / "deals.jsonl"))
    # the snapshot holds amounts as decimal strings of the reporting currency
    want = {k: (n, f"{v / 100:.2f}", f"{w / 100:.2f}") for k, (n, v, w) in ref.open_by_stage().items()}

    port = free_port()
    proc = start_redis(port, tmp_path)
    create_topic(names.deal_events, names.partitions)
    env = names.env(SALESOPS_REDIS_URL=f"redis://127.0.0.1:{port}/0")
    assert run_cli("import", "deals", str(halves[0]), "--no-progress", env=env).returncode == 0
    worker = start_worker(env)
    topic = names.deal_events

    def processed() -> float:
        return worker.sample("salesops_events_total", topic=topic, outcome="ok") or 0.0

    client = redis.Redis(port=port)
    poll(lambda: redis_pipeline_rows(client, names.uid), 90, what="a first snapshot in Redis")
    proc.terminate()
    proc.wait(10)
    outage_ends = time.monotonic() + 30
    assert run_cli("import", "deals", str(halves[1]), "--no-progress", env=env).returncode == 0
    poll(lambda: processed() >= len(lines), 90, what="the replay goes on while Redis is down")
    poll(
        lambda: (worker.sample("salesops_sink_errors_total", sink="redis") or 0) >= 1,
        30,
        what="outage counted",
    )
    # the outage itself lasts 30 s, however fast the replay went (not a wait for a result)
    time.sleep(max(0.0, outage_ends - time.monotonic()))
    assert worker.proc is not None and worker.proc.poll() is None, "the worker rode through"

    proc = start_redis(port, tmp_path)  # empty: no persistence, the worker must write it all again
    client = redis.Redis(port=port)
    poll_equal(
        lambda: redis_pipeline_rows(client, names.uid), want, 90, interval=1, what="Redis == reference"
    )
    poll_equal(lambda: api_by_stage(worker), ref.open_by_stage(), 30, what="API == reference")
    assert worker.stop() == 0
    proc.terminate()
    proc.wait(10)
