"""Plain consumers that follow a topic from its beginning, on every worker.

The partials, the alerts (eNPS drop state), the deals changelog (forecast) and the
commission ledger are read whole by every worker, whichever partitions its consumer group
gave it: a consumer without a group, every partition assigned, from the beginning,
forever.  One loop does it for all of them (:func:`follow_topic`): it waits for the topic
to exist, backs retriable errors and request timeouts off with
:data:`agents.broker_health.RETRY_BACKOFF` instead of ending the task (that would stop
the worker) -- in its start too: a broker outage can begin while a follower starts --
and reports *caught up* once every position reached the end offsets measured at start --
an empty fetch alone proves nothing (the broker may be unreachable).  :func:`held_keys`
reads a compacted topic once, to the end, for the keys it holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError, KafkaTimeoutError

from agents import broker_health
from agents.settings import Settings

log = logging.getLogger(__name__)

Record = Callable[[bytes, bytes | None], None]
T = TypeVar("T")
HELD_KEYS_TIMEOUT_S = 30.0


async def follow_topic(
    settings: Settings, topic: str, on_record: Record, on_caught_up: Callable[[], None], name: str
) -> None:
    """Read every partition of ``topic`` from the beginning, forever, without a consumer
    group; hand each keyed record to ``on_record`` (value None: a tombstone) and call
    ``on_caught_up`` once every position reached the end offsets measured at start.
    Waits for the topic to exist; transient errors (:func:`_transient`) back off, in the
    start too, and never end the task."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_list,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        retry_backoff_ms=500,
    )
    try:
        await _retrying(consumer.start, name, topic)
        tps = await _partitions(consumer, topic, settings.topic_partitions, name)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await _retrying(lambda: consumer.end_offsets(tps), name, topic)
        log.info("%s_follower_started topic=%s partitions=%s", name, topic, len(tps))
        caught_up = False
        while True:
            batch = await _retrying(lambda: consumer.getmany(timeout_ms=500), name, topic)
            for records in batch.values():
                for r in records:
                    if r.key is not None:
                        on_record(r.key, r.value)
            if not caught_up and await _retrying(lambda: _reached(consumer, ends), name, topic):
                caught_up = True
                on_caught_up()
    finally:
        await consumer.stop()


async def held_keys(settings: Settings, topic: str, timeout_s: float = HELD_KEYS_TIMEOUT_S) -> set[bytes]:
    """The keys ``topic`` holds now: those whose latest record is not a tombstone.  Reads
    the topic from the beginning to the end offsets measured at start (:func:`follow_topic`)
    and stops; ``TimeoutError`` after ``timeout_s`` (the broker is away)."""
    keys: set[bytes] = set()
    caught_up = asyncio.Event()

    def on_record(key: bytes, value: bytes | None) -> None:
        if value is None:
            keys.discard(key)
        else:
            keys.add(key)

    reading = asyncio.create_task(follow_topic(settings, topic, on_record, caught_up.set, "held_keys"))
    try:
        await asyncio.wait_for(caught_up.wait(), timeout_s)
    finally:
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading
    return keys


def _transient(exc: KafkaError) -> bool:
    """An error that passes with the broker's outage: a retriable one, or a request that
    timed out (aiokafka does not mark KafkaTimeoutError retriable; ``end_offsets`` raises
    it after ``request_timeout_ms`` while the broker is down)."""
    return exc.retriable or isinstance(exc, KafkaTimeoutError)


async def _retrying(call: Callable[[], Awaitable[T]], name: str, topic: str) -> T:
    """``call()`` until it does not fail with a transient error, backed off; the first
    failure of a run of them is logged."""
    failures = 0
    while True:
        try:
            return await call()
        except KafkaError as exc:
            if not _transient(exc):
                raise
            failures += 1
            if failures == 1:
                log.warning("%s_follower_retrying topic=%s error=%s", name, topic, exc)
            await asyncio.sleep(broker_health.RETRY_BACKOFF.delay(failures))


async def _partitions(consumer: AIOKafkaConsumer, topic: str, count: int, name: str) -> list[TopicPartition]:
    """The topic's ``count`` partitions (``SALESOPS_TOPIC_PARTITIONS``: Faust creates the
    changelog, ``ensure_topics`` the others with it), once the topic exists."""
    failures = 0
    while True:
        try:
            exists = topic in await consumer.topics()  # fresh metadata of every topic
        except KafkaError as exc:
            if not _transient(exc):
                raise
            exists = False
        if exists:
            return [TopicPartition(topic, p) for p in range(count)]
        failures += 1
        if failures == 1:
            log.info("%s_waiting_for_topic topic=%s", name, topic)
        await asyncio.sleep(broker_health.RETRY_BACKOFF.delay(failures))


async def _reached(consumer: AIOKafkaConsumer, ends: Mapping[TopicPartition, int]) -> bool:
    """Every position is at or past the end offset measured at start."""
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return False
    return True
