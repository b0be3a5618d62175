"""The consumer's drain loop without a task per record.

Faust's ``Consumer._drain_messages`` hands every fetched record to the conductor with
``wait_first(callback(message), suspend_flow.wait())``: four futures, an ``asyncio.wait``
and their cancellation per record, so that a callback blocked on flow control gives way
when a rebalance suspends the flow.  Measured in a profiled worker: about 13 % of its CPU
and most of the event loop's own time went there (faust-streaming 0.15,
``faust/transport/consumer.py``).

The callback (the conductor's ``on_message``) can only block on three things: flow
control while it is suspended (a rebalance), the producer buffer above its limit, and a
full channel queue.  So this loop awaits the callback directly while the flow is active
and no suspension is pending: then it completes without ever yielding to the loop, as
fast as a function call.  Otherwise it takes Faust's own path with ``wait_first``.  The
rest is Faust's loop: the same fetch, the same periodic ``sleep(0)`` so the loop stays
responsive, the same commit-every check, the same stop conditions.  Read offsets and
gaps are not tracked (agents/input_offsets.py keeps them unread on purpose).

**Fetch wait.**  Faust creates its Kafka consumer with ``fetch_max_wait_ms=1500``.  The
client has one fetch in flight per broker, and it leaves out of it every partition whose
records still wait in its buffer; so a fetch often asks only for partitions that have
nothing new (the stall-check topic, a partition just drained), and the broker holds it
for the full 1.5 s while new deal events pile up in the partitions it did not ask for.
Measured with 2,000 deal events/s paced: records came in bursts every ~1.6 s and the
event-to-view p50 was 1.15 s (p99 3.3 s) with the worker 40 % idle; with
:data:`FETCH_MAX_WAIT_MS` p50 163 ms, p99 406 ms.  An idle worker sends a fetch every
100 ms instead of every 1.5 s, which costs the broker nothing measurable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import faust

log = logging.getLogger(__name__)
YIELD_EVERY = 100  # records between two sleep(0), as in Faust's loop
FETCH_MAX_WAIT_MS = 100  # the longest a fetch waits for data (module doc, "Fetch wait")


class RawRecords(faust.Schema):
    """The schema of the worker's topics: key and value are the record's bytes.

    Faust's compiled decode (``Schema.compile``) runs, per record, the serializer
    registry's lookup of the ``raw`` codec for the key and for the value (which return
    the bytes they are given) and reads the ``Event`` class from the settings.  This one
    builds the same ``Event`` from the record directly; nothing in it can fail, so the
    decode-error callbacks are never called.  Sending through a topic with this schema is
    Faust's own path (``dumps_key``/``dumps_value`` with the raw codec)."""

    def __init__(self) -> None:
        super().__init__(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

    def compile(self, app: Any, *, default_propagate: bool = False, **_callbacks: Any) -> Any:
        event_class = app.conf.Event

        async def decode(message: Any, *, propagate: bool = default_propagate) -> Any:
            return event_class(app, message.key, message.value, message.headers, message)

        return decode


def install(consumer: Any) -> None:
    """Replace ``consumer._drain_messages`` (the Fetcher service calls it by name), and
    make the Kafka consumer Faust creates wait at most :data:`FETCH_MAX_WAIT_MS` per fetch
    (it is created in the consumer's thread when the worker starts).

    The producer buffer's ``wait_until_ebb``, which the conductor awaits before every
    record, is replaced by one that reads the buffer's length directly: Faust's
    ``size`` property looks up ``producer_threaded`` in the settings on every call
    (2-3 % of the worker's CPU in a profile)."""
    consumer._drain_messages = lambda fetcher: drain(consumer, fetcher)
    buffer = consumer.app.producer.buffer
    pending_size, max_messages = producer_buffer_size(consumer.app), buffer.max_messages
    faust_wait_until_ebb = buffer.wait_until_ebb

    async def wait_until_ebb() -> None:
        if pending_size() > max_messages:  # Faust's own test, and its flush when above
            await faust_wait_until_ebb()

    buffer.wait_until_ebb = wait_until_ebb
    thread = consumer._thread
    faust_create = thread._create_worker_consumer

    def create_worker_consumer(transport: Any) -> Any:
        client = faust_create(transport)
        client._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read by the client's start()
        return client

    thread._create_worker_consumer = create_worker_consumer


def producer_buffer_size(app: Any) -> Callable[[], int]:
    """The length of the producer buffer Faust's ``size`` property reads, without its
    settings lookup per call: the pending queue, or with ``producer_threaded`` set the
    property itself."""
    buffer = app.producer.buffer
    if app.conf.producer_threaded:
        return lambda: cast(int, buffer.size)
    return cast(Callable[[], int], buffer.pending.qsize)


async def drain(consumer: Any, fetcher: Any) -> None:
    callback = consumer.callback
    getmany = consumer.getmany
    suspend_flow = consumer.suspend_flow
    flow_control = consumer.app.flow_control
    producer_buffer = consumer.app.producer.buffer
    buffer_size, buffer_max = producer_buffer_size(consumer.app), producer_buffer.max_messages
    consumer_should_stop = consumer._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    commit_every = consumer._commit_every
    since_yield = 0
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            records = cast(AsyncIterator[Any], getmany(timeout=1.0))
            await asyncio.sleep(0)  # getmany may return at once, again and again
            if consumer.should_stop:
                continue
            async for _tp, message in records:
                since_yield += 1
                if since_yield > YIELD_EVERY:
                    await asyncio.sleep(0)
                    since_yield = 0
                if commit_every is not None and consumer._n_acked >= commit_every:
                    consumer._n_acked = 0
                    await consumer.commit()
                if not suspend_flow.is_set() and flow_control.is_active() and buffer_size() <= buffer_max:
                    await callback(message)  # cannot block on flow control: no task needed
                else:
                    await consumer.wait_first(callback(message), suspend_flow.wait())
    except consumer.consumer_stopped_errors:
        if consumer.transport.app.should_stop:
            log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if consumer.transport.app.should_stop:
            log.info("Consumer shutting down for user cancel.")
            return
        raise
