"""A worker stopped while the broker is unreachable stops within seconds and loses nothing.

On SIGTERM Faust stops the app: it stops the consumer's flow, flushes the producer
(``App.on_stop`` -> ``Producer.flush``: it waits until the aiokafka accumulator has
delivered every batch), stops its services in turn -- the consumer commits (its group
coordinator lookup retries until the broker answers) -- and stops the producer last
(aiokafka's ``stop()`` waits for the accumulator to drain again).  With the broker down
each of these waits lasts until the broker is back, or, for the producer, until a batch
expires after ``producer_request_timeout`` (1,200 s); Kubernetes SIGKILLs long before.
faust-streaming 0.15.3 ``app/base.py``, ``transport/consumer.py``; aiokafka 0.14
``producer/producer.py``, ``consumer/group_coordinator.py``.

:func:`install` gives these waits one deadline, ``SALESOPS_SHUTDOWN_FLUSH_TIMEOUT_S``
after the stop's flush began:

* the flush waits until the deadline at most, and the rest of the stop goes on (the
  agents stop, the consumer, the web server);
* the consumer's final commit gets what is left of it (nothing, when the flush used it
  all: the offsets not committed are processed again by the next worker);
* when the producer stops, what the broker has still not acknowledged is *abandoned*:
  its batches fail with :class:`RecordsAbandoned` (the accumulator's ``fail_all``), so
  ``stop()`` returns at once, and one warning says how many records were abandoned.
  They are failed only then, once the agents no longer wait for them: an agent told of a
  failed delivery resends it (agents/changelog.py), into a producer that has given up.

A flush during a rebalance keeps Faust's own wait.  :func:`install_fetcher_close_fix`
removes the last hang, in aiokafka's consumer ``stop()``.

**Why abandoning is safe.**  Every record the worker must not lose is written through
the batch barrier (agents/batches.py ``Intake.durable``, agents/changelog.py): table
changes, dead letters and alerts of a batch are acknowledged by Kafka before the batch's
input records are acked, and only acked offsets are committed (agents/input_offsets.py
holds a commit back even past a skipped record).  So an abandoned record of a batch
belongs to input whose offset was not committed: the next worker of the group processes
that input again and writes the record then.  The other records are derived from the
tables and written again by whoever owns them next: partials (a rebuilt partition is
published again), stall checks (the stall index is rebuilt from the deals table and asks
again), eNPS alerts (sent and awaited; the next publisher decides again from the alerts
topic) and aggregate rows (a new publisher writes every current row).  One exception,
as after any restart: a new publisher does not know the rows an earlier one wrote, so a
row that disappeared (its tombstone abandoned, or never sent) stays on its compacted
aggregate topic until its key comes back.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka.errors import KafkaError

log = logging.getLogger(__name__)


class RecordsAbandoned(KafkaError):
    """A record the broker had not acknowledged when the stopping worker's deadline passed."""


class Deadline:
    """One deadline for a stop: ``timeout_s`` after the first :meth:`wait` began."""

    def __init__(self, timeout_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout_s = timeout_s
        self.clock = clock
        self.at: float | None = None

    def remaining(self) -> float:
        if self.at is None:
            self.at = self.clock() + self.timeout_s
        return max(0.0, self.at - self.clock())

    async def wait(self, done: Callable[[], Awaitable[Any]]) -> bool:
        """Await ``done()`` until the deadline at most: True when it finished in time."""
        try:
            await asyncio.wait_for(done(), self.remaining())
        except TimeoutError:
            return False
        return True


def undelivered(accumulator: Any) -> tuple[int, int]:
    """(records, batches) an aiokafka ``MessageAccumulator`` has not delivered: batches
    waiting to be sent and batches in flight."""
    batches = {b for queued in accumulator._batches.values() for b in queued}
    batches |= set(accumulator._pending_batches)
    waiting = [b for b in batches if not b.future.done()]
    return sum(b.record_count for b in waiting), len(waiting)


def abandon(accumulator: Any, error: KafkaError) -> tuple[int, int]:
    """Fail every undelivered batch of ``accumulator`` with ``error`` (its ``fail_all``:
    every wait on them returns, and it refuses new records); returns the (records,
    batches) failed."""
    counts = undelivered(accumulator)
    # A batch the sender took and put back for a retry is queued again, but the callback
    # aiokafka gave it when it was first taken removes it from the in-flight set when it
    # completes (KeyError, logged with a traceback, when it is not there): fail it there.
    accumulator._pending_batches.update(
        b for queued in accumulator._batches.values() for b in queued if b.retry_count
    )
    accumulator.fail_all(error)
    return counts


def install_fetcher_close_fix() -> bool:
    """Let an aiokafka consumer stop while the broker is down (process-wide, idempotent).

    ``Fetcher.close()`` cancels its fetch-request tasks and awaits each one; a task
    cancelled while it sleeps ``retry_backoff_ms`` after a failed fetch (the broker is
    down) raises CancelledError there, so ``close()`` -- and the consumer's ``stop()`` --
    raises it and never closes the client.  Faust's consumer thread then never reports
    itself stopped, and the worker waits for it (mode's 60 s ``shutdown_timeout``).  A
    request cancelled during the send itself is already "no longer of interest"
    (returns False); here the backoff of a closing fetcher is too.  aiokafka 0.14
    ``consumer/fetcher.py`` (issue aio-libs/aiokafka#647).  False when the installed
    aiokafka has no such method (nothing is changed then).
    """
    from aiokafka.consumer.fetcher import Fetcher

    original = getattr(Fetcher, "_proc_fetch_request", None)
    if original is None or not asyncio.iscoroutinefunction(original):
        log.warning("fetcher_close_fix=unavailable reason=aiokafka_without__proc_fetch_request")
        return False
    if getattr(original, "salesops_close_fix", False):
        return True

    @functools.wraps(original)
    async def proc_fetch_request(self: Any, *args: Any) -> Any:
        try:
            return await original(self, *args)
        except asyncio.CancelledError:
            if not self._closed:
                raise
            return False

    proc_fetch_request.salesops_close_fix = True  # type: ignore[attr-defined]
    Fetcher._proc_fetch_request = proc_fetch_request
    return True


class _DropAbandoned(logging.Filter):
    """Faust logs every failed send of its own (``_on_published error``): the abandoned
    ones are summed up in one warning instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return RecordsAbandoned.__name__ not in record.getMessage()


def install(app: Any, timeout_s: float, broker_up: Callable[[], bool]) -> Deadline:
    """Bound the waits of ``app``'s producer while the app stops (module docstring).
    ``broker_up()`` tells whether the broker is reachable (the worker's broker probe)."""
    install_fetcher_close_fix()
    producer = app.producer
    deadline = Deadline(timeout_s)
    faust_flush: Callable[[], Awaitable[None]] = producer.flush
    faust_on_stop: Callable[[], Awaitable[None]] = producer.on_stop
    logging.getLogger("faust.topics").addFilter(_DropAbandoned())

    async def flush() -> None:
        if not app.should_stop:
            await faust_flush()  # a rebalance: Faust's own wait
        elif not await deadline.wait(faust_flush):
            log.info("shutdown_flush_incomplete timeout_s=%g (stopping the rest first)", timeout_s)

    async def on_stop() -> None:
        client = producer._producer  # the aiokafka producer; None when it never started
        if client is not None:
            accumulator = client._message_accumulator
            if not await deadline.wait(accumulator.flush):
                reason = "broker_unreachable" if not broker_up() else "broker_slow"
                error = RecordsAbandoned(f"not acknowledged {timeout_s:g} s into the stop ({reason})")
                records, batches = abandon(accumulator, error)
                if batches:
                    log.warning(
                        "shutdown_records_abandoned records=%s batches=%s timeout_s=%g reason=%s "
                        "safe=input_not_committed (the input they were written for was not committed: "
                        "the next worker of the group processes it again and writes them then)",
                        records,
                        batches,
                        timeout_s,
                        reason,
                    )
        await faust_on_stop()

    consumer = app.consumer
    faust_consumer_stop: Callable[[], Awaitable[None]] = consumer.on_stop

    async def consumer_on_stop() -> None:
        if not await deadline.wait(faust_consumer_stop):
            log.info("shutdown_commit_incomplete timeout_s=%g", timeout_s)

    producer.flush = flush
    producer.on_stop = on_stop
    consumer.on_stop = consumer_on_stop
    return deadline
