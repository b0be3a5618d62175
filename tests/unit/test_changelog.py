"""The batch barrier of agents/changelog.py, against an in-memory producer that can fail.

The crash stress test (tests/integration/test_crash_stress.py) checks the whole path on
a real broker; these cases pin the contract that makes it hold: one record per changed
key per batch, flush returns only after every acknowledgement, a failed record is resent
with the key's *current* value.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from agents.changelog import DurableTable, TableWriter


@dataclass
class Store(dict):  # type: ignore[type-arg]
    persisted: dict[Any, int] = field(default_factory=dict)

    def set_persisted_offset(self, tp: Any, offset: int) -> None:
        self.persisted[tp] = offset

    def __hash__(self) -> int:
        return id(self)


class Topic:
    def get_topic_name(self) -> str:
        return "app-deals-changelog"


class Table:
    def __init__(self) -> None:
        self.data = Store()
        self.changelog_topic = Topic()

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)


@dataclass
class Meta:
    topic_partition: tuple[str, int]
    offset: int


class Producer:
    """Acknowledges each record on the next loop turn; ``fail`` holds how many of the
    next deliveries fail."""

    def __init__(self, fail: int = 0) -> None:
        self.fail = fail
        self.sent: list[tuple[str, bytes | None, bytes | None, int | None]] = []

    async def send(self, topic, key, value, partition, timestamp, headers):  # type: ignore[no-untyped-def]
        self.sent.append((topic, key, value, partition))
        fut: asyncio.Future[Meta] = asyncio.get_running_loop().create_future()
        offset = len(self.sent) - 1
        if self.fail:
            self.fail -= 1
            asyncio.get_running_loop().call_soon(fut.set_exception, ConnectionError("broker gone"))
        else:
            asyncio.get_running_loop().call_soon(fut.set_result, Meta((topic, partition), offset))
        return fut


def test_a_key_changed_many_times_in_a_batch_is_written_once_with_its_last_value() -> None:
    producer = Producer()
    writer = TableWriter(producer)
    deals = DurableTable(Table(), writer)
    writer.partition = 2
    for v in (b"v1", b"v2", b"v3"):
        deals[b"D-1"] = v
    deals.set(b"D-2", b"x", 4)
    writer.produce("alerts", b"a-1", b"fired")

    written = asyncio.run(writer.flush())

    # 2 keys + 1 output; D-1 once, with its latest value, on the event's partition
    assert written == 3
    assert sorted(producer.sent, key=str) == sorted(
        [
            ("app-deals-changelog", b"D-1", b"v3", 2),
            ("app-deals-changelog", b"D-2", b"x", 4),
            ("alerts", b"a-1", b"fired", None),
        ],
        key=str,
    )
    assert writer.pending == 0
    # RocksDB's bookkeeping: the offset it holds data up to, per changelog partition
    assert deals.table.data.persisted == {("app-deals-changelog", 2): 0, ("app-deals-changelog", 4): 1}


def test_flush_resends_failed_records_until_acknowledged() -> None:
    producer = Producer(fail=2)
    failures: list[str] = []
    writer = TableWriter(producer, on_failure=lambda topic, exc: failures.append(topic))
    deals = DurableTable(Table(), writer)
    deals.set(b"D-1", b"v1", 0)
    writer.produce("dead-letter", b"k", b"bad")

    asyncio.run(writer.flush())

    # both first deliveries fail, both are resent and acknowledged
    assert failures == ["app-deals-changelog", "dead-letter"]
    assert producer.sent[2:] == [
        ("app-deals-changelog", b"D-1", b"v1", 0),
        ("dead-letter", b"k", b"bad", None),
    ]


def test_a_resent_table_record_carries_the_current_value_not_the_failed_one() -> None:
    producer = Producer(fail=1)
    writer = TableWriter(producer)
    deals = DurableTable(Table(), writer)
    deals.set(b"D-1", b"old", 0)

    async def scenario() -> None:
        flushing = asyncio.ensure_future(writer.flush())
        await asyncio.sleep(0)  # the first send is out and will fail
        deals.table.data[b"D-1"] = b"new"  # a later write while the resend waits
        await flushing

    asyncio.run(scenario())

    assert [v for _t, _k, v, _p in producer.sent] == [b"old", b"new"]
