"""A follower (agents/followers.py) rides through a broker outage whenever it begins: in
its start as in its loop.  The consumer is a fake that fails as aiokafka does with the
broker down."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, UnsupportedVersionError

from agents import broker_health, followers
from agents.broker_health import Backoff
from agents.settings import Settings

TOPIC = "t.partials"


class Record:
    def __init__(self, key: bytes, value: bytes) -> None:
        self.key, self.value = key, value


class DownThenUp:
    """An AIOKafkaConsumer whose first call of each listed step fails with its error, as
    while the broker is down: ``start`` cannot bootstrap, ``end_offsets`` times out after
    its request timeout (aiokafka's KafkaTimeoutError, not marked retriable)."""

    failures: dict[str, Exception] = {}

    def __init__(self, **_config: Any) -> None:
        self.failing = dict(self.failures)
        self.positions: dict[TopicPartition, int] = {}
        self.fetched = False
        self.stopped = False

    def _step(self, name: str) -> None:
        error = self.failing.pop(name, None)
        if error is not None:
            raise error

    async def start(self) -> None:
        self._step("start")

    async def topics(self) -> set[str]:
        return {TOPIC}

    def assign(self, tps: list[TopicPartition]) -> None:
        self.positions = dict.fromkeys(tps, 0)

    async def seek_to_beginning(self, *tps: TopicPartition) -> None:
        pass

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        self._step("end_offsets")
        return {tp: 1 if tp.partition == 0 else 0 for tp in tps}

    async def getmany(self, timeout_ms: int) -> dict[TopicPartition, list[Record]]:
        self._step("getmany")
        if self.fetched:
            await asyncio.sleep(timeout_ms / 1000)
            return {}
        self.fetched = True
        tp = TopicPartition(TOPIC, 0)
        self.positions[tp] = 1
        return {tp: [Record(b"deals:0", b"partial")]}

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]

    async def stop(self) -> None:
        self.stopped = True


def follow(monkeypatch: pytest.MonkeyPatch, failures: dict[str, Exception]) -> tuple[list[Any], bool]:
    monkeypatch.setattr(DownThenUp, "failures", failures)
    monkeypatch.setattr(followers, "AIOKafkaConsumer", DownThenUp)
    monkeypatch.setattr(broker_health, "RETRY_BACKOFF", Backoff(base_s=0.01, cap_s=0.02))
    seen: list[Any] = []

    async def run() -> bool:
        caught_up = asyncio.Event()
        task = asyncio.create_task(
            followers.follow_topic(
                Settings(topic_partitions=2),
                TOPIC,
                lambda key, value: seen.append((key, value)),
                caught_up.set,
                "partials",
            )
        )
        waiting = asyncio.create_task(caught_up.wait())
        await asyncio.wait({task, waiting}, timeout=5, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if task.done():
            task.result()  # the follower ended: raises its error
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return caught_up.is_set()

    return seen, asyncio.run(run())


@pytest.mark.parametrize(
    "failures",
    [
        {"start": KafkaConnectionError("Unable to bootstrap")},
        {"end_offsets": KafkaTimeoutError("Failed to get offsets by times in 40000 ms")},
        {"getmany": KafkaConnectionError("Connection closed")},
    ],
    ids=["start", "end_offsets", "getmany"],
)
def test_an_outage_in_any_step_is_waited_out(
    monkeypatch: pytest.MonkeyPatch, failures: dict[str, Exception]
) -> None:
    seen, caught_up = follow(monkeypatch, failures)
    assert seen == [(b"deals:0", b"partial")] and caught_up


def test_an_error_that_no_wait_cures_ends_the_follower(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UnsupportedVersionError):
        follow(monkeypatch, {"end_offsets": UnsupportedVersionError("broker too old")})
