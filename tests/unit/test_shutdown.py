"""The bounded stop (agents/shutdown.py), without a broker: one deadline for every wait,
and the abandonment of what a real aiokafka accumulator never delivered (no sender
runs, so its batches never complete, as with the broker down)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
from aiokafka.consumer.fetcher import Fetcher
from aiokafka.errors import NodeNotReadyError
from aiokafka.producer.message_accumulator import MessageAccumulator
from aiokafka.structs import TopicPartition

from agents import shutdown
from agents.shutdown import Deadline, RecordsAbandoned, abandon, undelivered

TP = TopicPartition("t-changelog", 0)


class OneLeader:
    """The accumulator's view of the cluster: every partition led by broker 0."""

    def leader_for_partition(self, tp: TopicPartition) -> int:
        return 0


def accumulator() -> MessageAccumulator:
    # batch_size 16 KiB, no compression, batches expire after 1,200 s as Faust sets it
    return MessageAccumulator(OneLeader(), 16384, 0, 1200.0)


async def never() -> None:
    await asyncio.get_running_loop().create_future()


def test_before_the_stop_a_wait_is_not_bounded() -> None:
    async def run() -> tuple[bool, object]:
        deadline = Deadline(0.01)

        async def slow() -> str:
            await asyncio.sleep(0.1)  # ten times the deadline: it has not started
            return "flushed"

        return await deadline.within(slow)

    assert asyncio.run(run()) == (True, "flushed")


def test_every_wait_of_the_stop_ends_at_one_deadline_also_one_begun_before_it() -> None:
    async def run() -> tuple[tuple[bool, object], float, tuple[bool, object], float]:
        deadline = Deadline(0.2)
        # a commit's flush that was already waiting for the broker when SIGTERM came
        before = asyncio.ensure_future(deadline.within(never))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        deadline.start()
        first = await before
        first_s = time.monotonic() - started
        second = await deadline.within(never)  # the deadline has passed: at once
        second_s = time.monotonic() - started - first_s
        return first, first_s, second, second_s

    first, first_s, second, second_s = asyncio.run(run())
    assert first == (False, None) and 0.15 <= first_s < 1.0
    assert second == (False, None) and second_s < 0.1


def test_a_wait_cancelled_from_outside_cancels_what_it_waits_for() -> None:
    async def run() -> bool:
        inner: list[asyncio.Task[None]] = []

        async def call() -> None:
            inner.append(asyncio.current_task())  # type: ignore[arg-type]
            await never()

        outer = asyncio.ensure_future(Deadline(5.0).within(call))
        await asyncio.sleep(0.01)
        outer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await outer
        return inner[0].cancelled()

    assert asyncio.run(run())


def test_undelivered_batches_are_abandoned_and_every_wait_on_them_returns() -> None:
    async def run() -> None:
        acc = accumulator()
        futures = [await acc.add_message(TP, b"deal-%d" % i, b"v", timeout=1.0) for i in range(3)]
        assert undelivered(acc) == (3, 1)  # 3 records in one batch
        # the flush Faust runs at stop never ends: nothing delivers the batch
        deadline = Deadline(0.05)
        deadline.start()
        assert await deadline.within(acc.flush) == (False, None)

        records, batches = abandon(acc, RecordsAbandoned("broker_unreachable"))

        assert (records, batches) == (3, 1)
        for fut in futures:
            with pytest.raises(RecordsAbandoned, match="broker_unreachable"):
                fut.result()
        # what aiokafka's producer.stop() waits for returns at once now
        await asyncio.wait_for(acc.close(), 1.0)
        assert undelivered(acc) == (0, 0)

    asyncio.run(run())


def test_an_accumulator_refuses_records_once_abandoned() -> None:
    async def run() -> None:
        acc = accumulator()
        abandon(acc, RecordsAbandoned("stopping"))
        with pytest.raises(RecordsAbandoned):
            await acc.add_message(TP, b"k", b"v", timeout=1.0)

    asyncio.run(run())


def test_a_batch_taken_and_put_back_for_a_retry_is_abandoned_without_a_callback_error() -> None:
    """The sender takes a batch (it moves to the in-flight set, with a callback that
    removes it from there when it completes), the send fails, the batch is queued again:
    aiokafka's own fail_all then makes that callback raise KeyError."""
    errors: list[dict[str, Any]] = []

    async def run() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, context: errors.append(context))
        acc = accumulator()
        fut = await acc.add_message(TP, b"k", b"v", timeout=1.0)
        nodes, _unknown = acc.drain_by_nodes(ignore_nodes=set())
        batch = nodes[0][TP]
        acc.reenqueue(batch)  # what the sender does after a failed produce request

        assert abandon(acc, RecordsAbandoned("stopping")) == (1, 1)

        await asyncio.sleep(0)  # the batches' done callbacks run
        assert fut.done() and isinstance(fut.exception(), RecordsAbandoned)
        await asyncio.wait_for(acc.close(), 1.0)

    asyncio.run(run())
    assert [e for e in errors if isinstance(e.get("exception"), KeyError)] == []


def fetcher(closed: bool) -> Any:
    """A real Fetcher whose fetch request fails as with the broker down, then sleeps its
    retry backoff (long here, so the cancel lands in it)."""
    f = Fetcher.__new__(Fetcher)

    class Down:
        async def send(self, node_id: int, request: Any) -> Any:
            raise NodeNotReadyError("broker down")

    f._client = Down()
    f._retry_backoff = 30.0
    f._closed = closed
    f._preferred_read_replica = {}
    return f


class Request:
    topics: list[Any] = []


@pytest.mark.parametrize("closing", [True, False])
def test_a_fetch_cancelled_in_its_backoff_ends_quietly_when_the_fetcher_closes(closing: bool) -> None:
    assert shutdown.install_fetcher_close_fix()

    async def run() -> tuple[bool, Any]:
        f = fetcher(closed=closing)
        task = asyncio.create_task(f._proc_fetch_request(None, 1, Request()))
        await asyncio.sleep(0.05)  # the request failed; the task sleeps its backoff
        task.cancel()
        # Fetcher.close() cancels and awaits each pending fetch like this
        try:
            result = await task
        except asyncio.CancelledError:
            return True, None
        return False, result

    cancelled, result = asyncio.run(run())
    # closing: "no longer of interest", as aiokafka treats a cancel during the send;
    # otherwise (a partition unassigned) the cancel goes through as before
    assert (cancelled, result) == ((False, False) if closing else (True, None))


def test_the_fetcher_fix_is_installed_once() -> None:
    assert shutdown.install_fetcher_close_fix()
    patched = Fetcher._proc_fetch_request
    assert shutdown.install_fetcher_close_fix()
    assert Fetcher._proc_fetch_request is patched


def test_faust_lines_about_abandoned_records_are_left_to_the_one_warning() -> None:
    drop = shutdown._DropAbandoned()

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("faust.topics", logging.WARNING, __file__, 1, message, None, None)

    assert not drop.filter(record("_on_published error ... error RecordsAbandoned: stopping"))
    assert drop.filter(record("_on_published error ... error KafkaTimeoutError"))


def test_settle_gives_a_close_its_grace_then_cancels_it() -> None:
    async def run() -> tuple[bool, bool, float, bool]:
        async def quick() -> None:
            await asyncio.sleep(0)

        fast = await shutdown.settle(quick(), grace_s=1.0)
        hung = asyncio.ensure_future(never())
        started = time.monotonic()
        cut = await shutdown.settle(hung, grace_s=0.1)
        return fast, cut, time.monotonic() - started, hung.cancelled()

    fast, cut, took, cancelled = asyncio.run(run())
    assert fast is True
    assert cut is False and 0.1 <= took < 0.5 and cancelled


def test_settle_passes_the_error_of_a_close_on() -> None:
    async def failing() -> None:
        raise ValueError("close failed")

    with pytest.raises(ValueError, match="close failed"):
        asyncio.run(shutdown.settle(failing(), grace_s=1.0))


def test_a_consumer_whose_broker_never_answers_stops_after_the_grace() -> None:
    from aiokafka import AIOKafkaConsumer

    class Frozen:
        """A group coordinator whose LeaveGroup request the broker never answers."""

        async def close(self) -> None:
            await never()

    assert shutdown.install_consumer_close_bound()

    async def run() -> float:
        consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:9")  # never started
        consumer._coordinator = Frozen()
        started = time.monotonic()
        await asyncio.wait_for(consumer.stop(), 10.0)  # unbounded before: forever
        return time.monotonic() - started

    took = asyncio.run(run())
    assert shutdown.CLOSE_GRACE_S <= took < shutdown.CLOSE_GRACE_S + 1.0
