"""``salesops import`` (and ``salesops simulate``) as a user runs them, against the real broker.

A 1,000-line file with 3 bad lines: the CLI names the 3 lines, exits 1 (0 with
--skip-invalid), and exactly the 997 valid records land on the topic, decodable and
equal to the input.  On a broker where the target topics do not exist yet (a fresh
``make up``; the local broker does not auto-create topics), both tools create them with
the configured partitions before producing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from schemas.codec import Codec

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP = os.environ.get("SALESOPS_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
BAD_LINES = {10: "invalid_json", 500: "negative_amount", 900: "invalid_currency"}


@pytest.fixture
def topic() -> Iterator[str]:
    try:
        admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP, bootstrap_timeout_ms=10_000)
    except Exception as exc:  # any client error means the same thing here
        pytest.fail(f"Kafka is not reachable at {BOOTSTRAP} ({exc}); start the local stack with `make up`")
    name = f"t-import-{uuid4().hex[:8]}"
    admin.create_topics({name: {"num_partitions": 3, "replication_factor": 1}}, wait_for_metadata=True)
    try:
        yield name
    finally:
        admin.delete_topics([name])
        admin.close()


def write_deals(path: Path) -> dict[str, dict[str, Any]]:
    """1,000 lines, the ones in BAD_LINES broken; returns the good events by event_id."""
    now_ms = int(time.time() * 1000)
    good: dict[str, dict[str, Any]] = {}
    lines = []
    for n in range(1, 1001):
        event = {
            "event_id": f"imp-{n}",
            "source": "import",
            "deal_id": f"D-{n % 97}",
            "event_type": "STAGE_CHANGED" if n > 97 else "CREATED",
            "occurred_at": now_ms - (1000 - n) * 60_000,
            "pipeline": "default",
            "stage": "qualifiedtobuy",
            "amount": f"{n * 10}.25",
            "currency": "usd" if n % 2 else "EUR",
            "owner_id": f"u-{n % 20:02d}",
        }
        if BAD_LINES.get(n) == "invalid_json":
            lines.append(json.dumps(event)[:-5])
        elif BAD_LINES.get(n) == "negative_amount":
            lines.append(json.dumps({**event, "amount": "-1"}))
        elif BAD_LINES.get(n) == "invalid_currency":
            lines.append(json.dumps({**event, "currency": "DOLLARS"}))
        else:
            lines.append(json.dumps(event))
            good[event["event_id"]] = event
    path.write_text("\n".join(lines) + "\n")
    return good


@pytest.fixture
def new_topics() -> Iterator[list[str]]:
    """Names of topics a test lets the CLI create; they are deleted afterwards."""
    names: list[str] = []
    yield names
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP, bootstrap_timeout_ms=10_000)
    try:
        existing = set(admin.list_topics())
        if gone := [n for n in names if n in existing]:
            admin.delete_topics(gone)
    finally:
        admin.close()


def partitions_of(names: list[str]) -> dict[str, int]:
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP, bootstrap_timeout_ms=10_000)
    try:
        existing = set(admin.list_topics())
        return {
            info["topic"] if "topic" in info else info["name"]: len(info["partitions"])
            for info in admin.describe_topics([n for n in names if n in existing])
        }
    finally:
        admin.close()


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SALESOPS_KAFKA_BOOTSTRAP": BOOTSTRAP, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "agents.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def consume_all(topic: str, expected: int, timeout_s: float = 60.0) -> list[tuple[bytes, bytes]]:
    """Every record of ``topic``: poll until ``expected`` arrived and nothing more comes."""
    consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False, consumer_timeout_ms=1000)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        assert partitions, f"topic {topic} has no partitions"
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        end_offsets = consumer.end_offsets(partitions)
        out: list[tuple[bytes, bytes]] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                out.extend((r.key, r.value) for r in batch)
            if len(out) >= expected and all(consumer.position(tp) >= end_offsets[tp] for tp in partitions):
                return out
        pytest.fail(f"timed out after {timeout_s}s: {len(out)} of {expected} records on {topic}")
    finally:
        consumer.close()


def check_topic(topic: str, good: dict[str, dict[str, Any]]) -> None:
    records = consume_all(topic, len(good))
    assert len(records) == 997
    codec = Codec.for_record("DealEvent")
    seen = {}
    for key, value in records:
        record = codec.decode(value)
        assert key == record["deal_id"].encode()
        seen[record["event_id"]] = record
    assert seen.keys() == good.keys()
    for event_id, record in seen.items():
        source = good[event_id]
        assert record["amount"] == Decimal(source["amount"])
        assert record["currency"] == source["currency"].upper()
        assert int(record["occurred_at"].timestamp() * 1000) == source["occurred_at"]
        assert (record["deal_id"], record["stage"], record["owner_id"]) == (
            source["deal_id"],
            source["stage"],
            source["owner_id"],
        )


def test_import_names_the_bad_lines_and_produces_the_rest(topic: str, tmp_path: Path) -> None:
    path = tmp_path / "deals.jsonl"
    good = write_deals(path)

    result = run_cli("import", "deals", str(path), "--topic", topic)

    assert result.returncode == 1, result.stderr
    for line_no, reason in BAD_LINES.items():
        assert f"{path}:{line_no}: {reason}:" in result.stderr
    assert f"produced 997, rejected 3 ({path})" in result.stdout
    assert "Traceback" not in result.stderr
    check_topic(topic, good)


def test_skip_invalid_exits_zero(topic: str, tmp_path: Path) -> None:
    path = tmp_path / "deals.jsonl"
    good = write_deals(path)

    result = run_cli("import", "deals", str(path), "--topic", topic, "--skip-invalid", "--no-progress")

    assert result.returncode == 0, result.stderr
    assert result.stderr.count(f"{path}:") == 3
    check_topic(topic, good)


def test_unreachable_broker_is_a_clear_error_not_a_hang(tmp_path: Path) -> None:
    path = tmp_path / "deals.jsonl"
    write_deals(path)
    env = {**os.environ, "SALESOPS_KAFKA_BOOTSTRAP": "127.0.0.1:1", "PYTHONPATH": str(ROOT)}
    # a hang would end in TimeoutExpired: the importer gives up after its own connect timeout
    result = subprocess.run(
        [sys.executable, "-m", "agents.cli", "import", "deals", str(path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 3
    assert "cannot reach Kafka at 127.0.0.1:1" in result.stderr
    assert "Traceback" not in result.stderr


def test_import_creates_its_missing_topic_with_the_configured_partitions(
    new_topics: list[str], tmp_path: Path
) -> None:
    topic = f"t-import-new-{uuid4().hex[:8]}"
    new_topics.append(topic)
    assert partitions_of([topic]) == {}, "the topic must not exist before the import"
    path = tmp_path / "deals.jsonl"
    good = write_deals(path)

    result = run_cli("import", "deals", str(path), "--topic", topic, env={"SALESOPS_TOPIC_PARTITIONS": "4"})

    assert result.returncode == 1, result.stderr  # the 3 bad lines; nothing about the topic
    assert f"created topic {topic} (partitions=4 replication=1)" in result.stderr
    assert f"produced 997, rejected 3 ({path})" in result.stdout
    assert partitions_of([topic]) == {topic: 4}
    check_topic(topic, good)


def test_simulate_creates_its_missing_input_topics(new_topics: list[str]) -> None:
    uid = f"t-sim-new-{uuid4().hex[:8]}"
    topics = {
        "SALESOPS_DEAL_EVENTS_TOPIC": f"{uid}.deal-events",
        "SALESOPS_RESPONSES_TOPIC": f"{uid}.survey-responses",
        "SALESOPS_INVITATIONS_TOPIC": f"{uid}.survey-invitations",
    }
    new_topics.extend(topics.values())
    assert partitions_of(list(topics.values())) == {}

    result = run_cli(
        "simulate", "--deals", "20", "--survey-waves", "1", "--employees", "30", "--count", "60",
        env={**topics, "SALESOPS_TOPIC_PARTITIONS": "2"},
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert "sent 60 events" in result.stdout
    assert partitions_of(list(topics.values())) == dict.fromkeys(topics.values(), 2)
    produced = {name: consume_all(name, 0, timeout_s=30) for name in topics.values()}
    assert sum(len(records) for records in produced.values()) == 60
    assert produced[topics["SALESOPS_DEAL_EVENTS_TOPIC"]], "deal events come first in event time"
