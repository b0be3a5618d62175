"""A worker stopped while the broker is unreachable stops within seconds and loses nothing.

On SIGTERM Faust stops the app: it stops the consumer's flow, flushes the producer
(``App.on_stop`` -> ``Producer.flush``: it waits until the aiokafka accumulator has
delivered every batch), stops its services in turn -- the consumer commits, and every
commit first flushes the producer, then retries the commit until the group coordinator
answers -- and stops the producer last (aiokafka's ``stop()`` waits for the accumulator
to drain again, then for the requests in flight).  With the broker down each of these
waits lasts until the broker is back or, for the producer, until a batch expires after
``producer_request_timeout`` (1,200 s); Kubernetes SIGKILLs long before.  A commit begun
before the SIGTERM cannot simply be cancelled either: Faust's
``Consumer.maybe_wait_for_commit_to_finish`` swallows the cancel and commits again.
faust-streaming 0.15.3 ``app/base.py``, ``transport/consumer.py``; aiokafka 0.14
``producer/producer.py``, ``producer/sender.py``, ``consumer/group_coordinator.py``.

:func:`install` gives those waits one :class:`Deadline`, ``SALESOPS_SHUTDOWN_FLUSH_TIMEOUT_S``
after the app's stop began:

* every producer flush and every offset commit ends at the deadline, also one that
  began before the stop did; the rest of the stop goes on (the agents stop, the
  consumer, the web server), and offsets not committed are processed again by the next
  worker;
* when the producer stops, what the broker has still not acknowledged is *abandoned*:
  its batches fail with :class:`RecordsAbandoned` (the accumulator's ``fail_all``), so
  ``stop()`` returns, and one warning says how many records were abandoned.  They are
  failed only then, once the agents no longer wait for them: an agent told of a failed
  delivery resends it (agents/changelog.py), into a producer that has given up;
* the clients' own closing (leaving the group, requests in flight) gets
  :data:`CLOSE_GRACE_S`: with a broker that accepts connections but never answers
  (frozen, or its packets dropped) each request would wait for its request timeout.

:func:`install_fetcher_close_fix` removes one more hang, in aiokafka's consumer ``stop()``.

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
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiokafka.errors import KafkaError

from agents.client_patches import Method, wrap_coroutine_method

log = logging.getLogger(__name__)
T = TypeVar("T")
#: How long a Kafka client may take to close (leave its group, end its requests) once its
#: work is over: milliseconds with a broker that answers; with one that does not (frozen,
#: or its packets dropped), a request in flight would wait for its request timeout.
CLOSE_GRACE_S = 2.0


class RecordsAbandoned(KafkaError):
    """A record the broker had not acknowledged when the stopping worker's deadline passed."""


class Deadline:
    """The end of a stop's waits for the broker: ``timeout_s`` after :meth:`start`."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._passed = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """The stop began (the first call counts)."""
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.timeout_s, self._passed.set)

    async def within(self, call: Callable[[], Awaitable[T]]) -> tuple[bool, T | None]:
        """Await ``call()``; once the deadline passes, give it up (cancel it), also when it
        began before the stop did: (True, its result), or (False, None) when given up.
        Before the stop begins this is a plain ``await call()``.  ``call`` must honour a
        cancel (the client calls wrapped here do)."""
        task = asyncio.ensure_future(call())
        passed = asyncio.ensure_future(self._passed.wait())
        try:
            await asyncio.wait((task, passed), return_when=asyncio.FIRST_COMPLETED)
        finally:
            passed.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if task.cancelled():
            return False, None
        return True, task.result()


async def settle(awaitable: Awaitable[Any], grace_s: float = CLOSE_GRACE_S) -> bool:
    """Await ``awaitable`` for ``grace_s`` at most; then cancel it, and give it ``grace_s``
    more to unwind.  False when it had to be cancelled (it may still be unwinding)."""
    task = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait({task}, timeout=grace_s)
        if done:
            task.result()  # its error, if any
            return True
        task.cancel()
        await asyncio.wait({task}, timeout=grace_s)
        return False
    finally:
        task.cancel()  # when we are cancelled ourselves; a no-op once it is done


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


def install_consumer_close_bound(grace_s: float = CLOSE_GRACE_S) -> bool:
    """Bound ``AIOKafkaConsumer.stop()`` (process-wide, idempotent): it leaves the group and
    ends the coordinator's requests, each of which waits up to ``request_timeout_ms`` (90 s
    in Faust's consumer) when the broker does not answer; Faust's consumer thread, which
    the interpreter waits for at exit, runs it.  After ``grace_s`` (:func:`settle`) the
    stop is cancelled; the process closes the connections."""
    from aiokafka import AIOKafkaConsumer

    def wrap(original: Method) -> Method:
        async def stop(self: Any) -> None:
            if not await settle(original(self), grace_s):
                log.info("consumer_close_cut grace_s=%g (the broker does not answer)", grace_s)

        return stop

    return wrap_coroutine_method(AIOKafkaConsumer, "stop", wrap, "consumer_close_bound")


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

    def wrap(original: Method) -> Method:
        async def proc_fetch_request(self: Any, *args: Any) -> Any:
            try:
                return await original(self, *args)
            except asyncio.CancelledError:
                if not self._closed:
                    raise
                return False

        return proc_fetch_request

    return wrap_coroutine_method(Fetcher, "_proc_fetch_request", wrap, "fetcher_close_fix")


class _DropAbandoned(logging.Filter):
    """Faust logs every failed send of its own (``_on_published error``): the abandoned
    ones are summed up in one warning instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return RecordsAbandoned.__name__ not in record.getMessage()


def install(app: Any, timeout_s: float, broker_up: Callable[[], bool]) -> Deadline:
    """Bound the stop's waits for the broker (module docstring).  ``broker_up()`` tells
    whether the broker is reachable (the worker's broker probe)."""
    install_fetcher_close_fix()
    install_consumer_close_bound()
    logging.getLogger("faust.topics").addFilter(_DropAbandoned())
    deadline = Deadline(timeout_s)
    producer, consumer = app.producer, app.consumer
    faust_app_stop: Callable[[], Awaitable[None]] = app.on_stop
    faust_flush: Callable[[], Awaitable[None]] = producer.flush
    faust_producer_stop: Callable[[], Awaitable[None]] = producer.on_stop
    faust_commit: Callable[[Any], Awaitable[bool]] = consumer._commit
    noted: set[str] = set()

    def note(what: str) -> None:
        if what not in noted:  # the flush and the commit run more than once in a stop
            noted.add(what)
            log.info("%s timeout_s=%g", what, timeout_s)

    async def app_on_stop() -> None:
        deadline.start()
        await faust_app_stop()

    async def flush() -> None:
        done, _ = await deadline.within(faust_flush)
        if not done:
            note(
                "shutdown_flush_incomplete (the rest of the stop goes on; the producer abandons what is left)"
            )

    async def commit(offsets: Any) -> bool:
        done, committed = await deadline.within(lambda: faust_commit(offsets))
        if not done:
            note("shutdown_commit_skipped (the next worker processes the uncommitted input again)")
        return bool(committed)

    async def producer_on_stop() -> None:
        client = producer._producer  # the aiokafka producer; None when it never started
        if client is not None:
            accumulator = client._message_accumulator
            done, _ = await deadline.within(accumulator.flush)
            if not done:
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
        # its sender waits for the requests in flight: up to 1,200 s each when the broker
        # does not answer at all
        if not await settle(faust_producer_stop()):
            log.info("producer_close_cut grace_s=%g (the broker does not answer)", CLOSE_GRACE_S)

    app.on_stop = app_on_stop
    producer.flush = flush
    producer.on_stop = producer_on_stop
    consumer._commit = commit
    return deadline
