"""Real-Kafka, real-Redis fixtures (quix-streams style).

The stack is started by ``make up`` / ``make test`` (deploy/local/stack.sh), never by a
test.  When it is unreachable the fixtures *fail* with the command to run: CI must not
skip the integration suite.  Every test gets uniquely named topics, consumer group and
Redis prefix, so tests never see each other's data.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from uuid import uuid4

import pytest
import redis
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP = os.environ.get("SALESOPS_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
REDIS_URL = os.environ.get("SALESOPS_REDIS_URL", "redis://127.0.0.1:6380/0")
T = TypeVar("T")
TEST_RESPONDENT_SECRET = "test-respondent-secret-0123456789abcdef"

pytestmark = pytest.mark.integration


def poll(fn: Callable[[], T], timeout: float = 60.0, interval: float = 0.25, what: str = "condition") -> T:
    """Call ``fn`` until it returns a truthy value or the deadline passes (then fail)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except (OSError, urllib.error.URLError, ValueError, KeyError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def poll_equal(
    fn: Callable[[], T], expected: T, timeout: float = 60.0, interval: float = 0.25, what: str = "value"
) -> T:
    """Like :func:`poll` until ``fn() == expected``; on timeout the failure shows what
    differed (for dicts: the keys whose values differ), not just ``False``."""
    seen: list[Any] = []

    def matches() -> bool:
        seen[:] = [fn()]
        return seen[0] == expected

    try:
        poll(matches, timeout, interval, what)
    except pytest.fail.Exception:
        last = seen[0] if seen else None
        shown: Any = (last, expected)
        if isinstance(last, dict) and isinstance(expected, dict):
            keys = last.keys() | expected.keys()
            shown = {k: (last.get(k), expected.get(k)) for k in keys if last.get(k) != expected.get(k)}
        pytest.fail(f"timed out after {timeout}s waiting for {what}; (got, want): {shown!r}")
    return expected


def kafka_unreachable() -> str | None:
    """None when the broker at ``BOOTSTRAP`` answers, else the message to fail with."""
    try:
        admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP, request_timeout_ms=5000)
        admin.list_topics()
        admin.close()
    except Exception as exc:  # any client error means the same thing here
        return f"Kafka is not reachable at {BOOTSTRAP} ({exc}); start the local stack with `make up`"
    return None


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    problem = kafka_unreachable()
    if problem:
        pytest.fail(problem)
    return BOOTSTRAP


@pytest.fixture(scope="session")
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis is not reachable at {REDIS_URL} ({exc}); start the local stack with `make up`")
    yield client
    client.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Names:
    """Unique topic/group/prefix names of one test, and the worker env that uses them."""

    uid: str
    partitions: int = 3

    @property
    def deal_events(self) -> str:
        return f"{self.uid}.deal-events"

    @property
    def responses(self) -> str:
        return f"{self.uid}.survey-responses"

    @property
    def invitations(self) -> str:
        return f"{self.uid}.survey-invitations"

    @property
    def dead_letter(self) -> str:
        return f"{self.uid}.dead-letter"

    @property
    def alerts(self) -> str:
        return f"{self.uid}.alerts"

    def output(self, view: str) -> str:
        return f"{self.uid}.out.{view}"

    def env(self, **extra: Any) -> dict[str, str]:
        env = {
            "SALESOPS_KAFKA_BOOTSTRAP": BOOTSTRAP,
            "SALESOPS_REDIS_URL": REDIS_URL,
            "SALESOPS_APP_ID": self.uid,
            "SALESOPS_REDIS_PREFIX": self.uid,
            "SALESOPS_DEAL_EVENTS_TOPIC": self.deal_events,
            "SALESOPS_RESPONSES_TOPIC": self.responses,
            "SALESOPS_INVITATIONS_TOPIC": self.invitations,
            "SALESOPS_DEAD_LETTER_TOPIC": self.dead_letter,
            "SALESOPS_ALERTS_TOPIC": self.alerts,
            "SALESOPS_OUTPUT_TOPIC_PREFIX": f"{self.uid}.out.",
            "SALESOPS_TOPIC_PARTITIONS": str(self.partitions),
            "SALESOPS_FLUSH_INTERVAL_S": "0.5",
            # the worker refuses to start without one; fixed, so restarts key respondents alike
            "SALESOPS_RESPONDENT_SECRET": TEST_RESPONDENT_SECRET,
        }
        env.update({k: str(v) for k, v in extra.items()})
        return env


@pytest.fixture
def names(request: pytest.FixtureRequest) -> Names:
    test = re.sub(r"[^a-zA-Z0-9]+", "-", request.node.name)[:32].strip("-")
    return Names(uid=f"t-{test}-{uuid4().hex[:8]}")


@dataclass
class WorkerProcess:
    """A real ``salesops worker`` subprocess, as a user runs it."""

    env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        env = {**os.environ, **self.env, "SALESOPS_WEB_PORT": str(self.port), "PYTHONUNBUFFERED": "1"}
        env.setdefault("SALESOPS_DATA_DIR", str(self.log_path.parent / f"data-{self.port}"))
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agents.cli", "worker"],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def json(self, path: str) -> Any:
        status, body = self.get(path)
        if status != 200:
            raise ValueError(f"GET {path} -> {status}: {body[:300]!r}")
        return json.loads(body)

    def metrics(self, *names: str) -> str:
        """The /metrics page; with ``names``, only those samples (``?name[]=``)."""
        query = "&".join(f"name[]={name}" for name in names)
        return self.get(f"/metrics?{query}" if query else "/metrics")[1].decode()

    def sample(self, name: str, **labels: str) -> float | None:
        """Value of one series in /metrics (exact label match), None when absent."""
        from prometheus_client.parser import text_string_to_metric_families

        for family in text_string_to_metric_families(self.metrics(name)):
            for s in family.samples:
                if s.name == name and s.labels == labels:
                    return float(s.value)
        return None

    def wait_ready(self, timeout: float = 90.0) -> WorkerProcess:
        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"worker exited with {self.proc.returncode}; log:\n{self.log_tail()}")
            return self.get("/metrics")[0] == 200

        poll(ready, timeout, what=f"worker on port {self.port}")
        return self

    def log_tail(self, n: int = 60) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: the graceful path a user and Kubernetes take."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                pytest.fail(f"worker did not stop within {timeout}s of SIGTERM; log:\n{self.log_tail()}")
        self._log.close()
        return int(self.proc.returncode)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        self._log.close()


@pytest.fixture
def start_worker(
    kafka_bootstrap: str, redis_client: redis.Redis, tmp_path: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    workers: list[WorkerProcess] = []

    def _start(env: dict[str, str], ready: bool = True) -> WorkerProcess:
        w = WorkerProcess(env=env, log_path=tmp_path / f"worker-{len(workers)}.log").start()
        workers.append(w)
        return w.wait_ready() if ready else w

    yield _start
    for w in workers:
        if w.proc is not None and w.proc.poll() is None:
            w.stop()


DEAL_OPTIONAL_FIELDS = ("owner_id", "team", "region", "expected_close_date", "probability")


def deal_record(**fields: Any) -> dict[str, Any]:
    """A DealEvent record for the codec: the given fields, ``source`` "test" unless given,
    and the schema's optional fields None unless given."""
    return {**dict.fromkeys(DEAL_OPTIONAL_FIELDS), "source": "test", **fields}


def encoded_deal(**fields: Any) -> tuple[bytes, bytes]:
    """(key, value) of a DealEvent as a CRM connector would produce it."""
    from schemas.codec import Codec

    record = deal_record(**fields)
    return record["deal_id"].encode(), Codec.for_record("DealEvent").encode(record)


def create_topic(name: str, partitions: int) -> None:
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    try:
        admin.create_topics([NewTopic(name, partitions, 1)])
    except Exception as exc:
        if "TopicAlreadyExists" not in type(exc).__name__:
            raise
    finally:
        admin.close()


def produce(topic: str, records: list[tuple[bytes | None, bytes | None]]) -> None:
    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", linger_ms=5)
    for key, value in records:
        producer.send(topic, key=key, value=value)
    producer.flush(30)
    producer.close()


def consume_all(topic: str, expected: int, timeout: float = 60.0) -> list[Any]:
    """Read a topic from the beginning until ``expected`` records arrived (or fail)."""
    consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False, consumer_timeout_ms=1000)
    parts = poll(lambda: consumer.partitions_for_topic(topic), 30, what=f"topic {topic}")
    tps = [TopicPartition(topic, p) for p in parts]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(out) < expected and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            out.extend(records)
    consumer.close()
    if len(out) < expected:
        pytest.fail(f"{topic}: {len(out)} records after {timeout}s, expected {expected}")
    return out


def consume_until_quiet(topic: str, quiet_s: float = 2.0, timeout: float = 60.0) -> list[Any]:
    """Everything a topic holds: read from the beginning until nothing new for ``quiet_s``."""
    consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False)
    parts = poll(lambda: consumer.partitions_for_topic(topic), 30, what=f"topic {topic}")
    tps = [TopicPartition(topic, p) for p in parts]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    last_new = time.monotonic()
    while time.monotonic() - last_new < quiet_s and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=200).values():
            out.extend(records)
            last_new = time.monotonic()
    consumer.close()
    return out


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agents.cli", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
