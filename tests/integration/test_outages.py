"""A 30 s broker stop in the middle of a replay: the worker rides through, ends with
exactly the reference numbers, and its log stays short.  A SIGTERM while the broker is
down: the worker stops within seconds, abandons what it could not deliver, and a new
worker ends with the reference numbers all the same.

The shared broker is never stopped: the test runs a private one (deploy/local/stack.sh
with its own state directory and ports, the same jars) and stops and starts that.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import ROOT, Names, WorkerProcess, free_port, poll, poll_equal, run_cli
from tests.integration.reference import DealReference, read_jsonl
from tests.integration.test_deal_pipeline import api_by_stage, assert_last_90_days_closed_match

STACK = ROOT / "deploy/local/stack.sh"
# what aiokafka writes on every failed attempt while the broker is away
CLIENT_NOISE = re.compile(
    r"Unable connect to|Unable to update metadata|Failed fetch messages|NodeNotReadyError|"
    r"Group Coordinator Request failed|KafkaConnectionError"
)


class PrivateBroker:
    """A one-node KRaft broker of this test only: own data, logs and ports."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.port = free_port()
        self.env = {
            **os.environ,
            "SALESOPS_LOCAL_DIR": str(state_dir),
            "SALESOPS_LOCAL_KAFKA_PORT": str(self.port),
            "SALESOPS_LOCAL_KAFKA_CONTROLLER_PORT": str(free_port()),
            "SALESOPS_LOCAL_KAFKA_HEAP_OPTS": "-Xms128m -Xmx384m",
        }
        self.bootstrap = f"127.0.0.1:{self.port}"

    def _stack(self, command: str) -> None:
        done = subprocess.run(
            [str(STACK), command], env=self.env, capture_output=True, text=True, timeout=180
        )
        assert done.returncode == 0, f"stack.sh {command}: {done.stdout}\n{done.stderr}"

    def start(self) -> None:
        self._stack("kafka-up")  # returns once the broker answers a metadata request

    def stop(self) -> None:
        self._stack("kafka-down")  # SIGTERM, waits for the process to exit

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """The broker hangs (SIGSTOP): connections open, requests never answered, as when
        its packets are dropped."""
        pid = int((self.state_dir / "kafka" / "kafka.pid").read_text().strip())
        os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(pid, signal.SIGCONT)


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    broker = PrivateBroker(tmp_path / "broker")
    broker.start()
    yield broker
    broker.stop()


def log_lines(path: Path) -> list[str]:
    return path.read_text(errors="replace").splitlines()


def import_replay(
    broker: PrivateBroker, names: Names, tmp_path: Path
) -> tuple[list[dict[str, Any]], DealReference, dict[str, str]]:
    """A simulated CRM export (1,500 deals, 5,991 events) imported into the private
    broker: (its events, their reference numbers, the env of a worker that replays them)."""
    sim = tmp_path / "sim"
    gen = run_cli(
        "simulate", "--seed", "23", "--deals", "1500", "--survey-waves", "0", "--output-dir", str(sim)
    )
    assert gen.returncode == 0, gen.stderr
    events = read_jsonl(sim / "deals.jsonl")
    env = names.env(SALESOPS_KAFKA_BOOTSTRAP=broker.bootstrap, SALESOPS_REDIS_URL="")
    assert run_cli("topics", env=env).returncode == 0
    imported = run_cli("import", "deals", str(sim / "deals.jsonl"), "--no-progress", env=env)
    assert imported.returncode == 0, imported.stderr
    return events, DealReference(events), env


def processed(worker: WorkerProcess, names: Names) -> float:
    return worker.sample("salesops_events_total", topic=names.deal_events, outcome="ok") or 0.0


def stop_broker_mid_replay(worker: WorkerProcess, broker: PrivateBroker, names: Names, total: int) -> int:
    """Stop the broker once the worker's replay is under way, and return when the worker
    knows it is gone (``salesops_broker_up`` 0): how many lines the worker had logged
    before.  The worker is frozen while the broker stops (a stop takes seconds, in which
    a fast worker would finish the replay): it resumes mid-replay with the broker gone."""
    poll(lambda: processed(worker, names) >= 500, 120, what="the replay under way")
    assert worker.sample("salesops_broker_up") == 1.0
    lines_before = len(log_lines(worker.log_path))
    stopped_at = processed(worker, names)
    assert worker.proc is not None
    os.kill(worker.proc.pid, signal.SIGSTOP)
    try:
        broker.stop()
    finally:
        os.kill(worker.proc.pid, signal.SIGCONT)
    assert stopped_at < total, "the broker must go away in the middle of the replay"
    poll(
        lambda: worker.sample("salesops_broker_up") == 0.0, 20, what="salesops_broker_up 0 during the outage"
    )
    return lines_before


@pytest.mark.timeout(400)
def test_a_30s_broker_stop_mid_replay_ends_exact_with_a_short_log(
    private_broker: PrivateBroker, names: Names, start_worker, tmp_path: Path
) -> None:
    events, ref, env = import_replay(private_broker, names, tmp_path)
    worker = start_worker(env)
    lines_before = stop_broker_mid_replay(worker, private_broker, names, len(events))
    # the worker writes a summary 30 s into the outage: the outage lasts at least that long
    poll(
        lambda: any("for_s=30" in line for line in log_lines(worker.log_path)[lines_before:]),
        45,
        what="the 30 s summary of the outage",
    )
    outage_lines = log_lines(worker.log_path)[lines_before:]
    private_broker.start()

    poll(lambda: worker.sample("salesops_broker_up") == 1.0, 60, what="salesops_broker_up 1 after")
    poll_equal(lambda: api_by_stage(worker), ref.open_by_stage(), 180, interval=1, what="views == reference")
    assert_last_90_days_closed_match(worker, ref)
    assert processed(worker, names) >= len(events)
    assert worker.sample("salesops_broker_disconnects_total") == 1.0
    assert worker.stop() == 0

    after = log_lines(worker.log_path)[lines_before:]
    noise = [line for line in after if CLIENT_NOISE.search(line)]
    # before: ~2,000 client lines/s, 84,282 lines in a 45 s outage; now a handful
    assert len(outage_lines) < 100, "\n".join(outage_lines[-40:])
    assert len(noise) < 30, "\n".join(noise[-40:])
    losses = [line for line in after if "broker_unreachable" in line and " error=" in line]
    summaries = [line for line in after if "broker_unreachable" in line and "for_s=" in line]
    backs = [line for line in after if "broker_reachable" in line]
    assert len(losses) == 1 and f"broker={private_broker.bootstrap} since=" in losses[0], losses
    assert summaries and "suppressed=" in summaries[0], summaries
    assert len(backs) == 1 and "down_s=" in backs[0], backs


@pytest.mark.timeout(400)
def test_sigterm_during_an_outage_stops_promptly_and_loses_nothing(
    private_broker: PrivateBroker, names: Names, start_worker, tmp_path: Path
) -> None:
    events, ref, env = import_replay(private_broker, names, tmp_path)
    worker = start_worker(env)
    stop_broker_mid_replay(worker, private_broker, names, len(events))
    # before: the stop waited for the producer (Faust's flush, then aiokafka's stop) until
    # the broker came back or 1,200 s passed; Kubernetes SIGKILLs after its grace period
    started = time.monotonic()
    assert worker.stop() == 0  # SIGTERM; fails unless it exits within 30 s
    took = time.monotonic() - started
    abandoned = [line for line in log_lines(worker.log_path) if "shutdown_records_abandoned" in line]
    assert len(abandoned) == 1, abandoned
    found = re.search(r" records=(\d+) ", abandoned[0])
    assert found and int(found[1]) > 0, abandoned[0]
    print(f"stopped in {took:.1f}s: {abandoned[0]}")

    # The abandoned records belong to input whose offsets were not committed: a new worker
    # of the same group processes that input again and ends with the reference numbers.
    private_broker.start()
    restarted = start_worker(env)
    poll_equal(
        lambda: api_by_stage(restarted), ref.open_by_stage(), 180, interval=1, what="views == reference"
    )
    assert_last_90_days_closed_match(restarted, ref)


@pytest.mark.timeout(400)
def test_sigterm_while_the_broker_hangs_stops_promptly(
    private_broker: PrivateBroker, names: Names, start_worker, tmp_path: Path
) -> None:
    """A broker that accepts connections but never answers: every request in flight would
    wait for its request timeout (1,200 s in the producer, 90 s in Faust's consumer)."""
    events, _ref, env = import_replay(private_broker, names, tmp_path)
    worker = start_worker(env)
    poll(lambda: processed(worker, names) >= 500, 120, what="the replay under way")
    frozen_at = processed(worker, names)
    with private_broker.frozen():
        assert frozen_at < len(events), "the broker must hang in the middle of the replay"
        poll(lambda: worker.sample("salesops_broker_up") == 0.0, 30, what="salesops_broker_up 0")
        assert worker.stop() == 0  # SIGTERM; fails unless it exits within 30 s
    abandoned = [line for line in log_lines(worker.log_path) if "shutdown_records_abandoned" in line]
    assert len(abandoned) == 1, abandoned
