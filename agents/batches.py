"""What every input batch goes through, whichever agent takes it.

* The **barrier** (:meth:`Intake.durable`): a batch's table writes and output records are
  acknowledged by Kafka before any of its offsets can be committed.
* The **position check** (:meth:`Intake.check_position`): a record past a skipped one
  seeks the partition back (agents/input_offsets.py).
* **Decoding and validation** (:meth:`Intake.accept`): a bad record becomes a dead letter
  with a reason, never an exception that stops the worker; a bug on one record is
  dead-lettered as ``internal_error`` with its traceback in the log (:meth:`Intake.guarded`).
* **Output records of the batch** (:meth:`Intake.produce`): dead letters and alerts go
  through the batch's writer, so they are durable with it.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

import faust

from agents.changelog import TableWriter
from agents.input_offsets import InputPositions
from agents.settings import Settings
from schemas.codec import Codec, DecodeError
from sinks.metrics import SalesopsMetrics
from streams.clock import WallClock
from streams.validation import Limits, Rejection

log = logging.getLogger(__name__)
Event = TypeVar("Event")  # a validated input record: DealEvent, SurveyResponse, SurveyInvitation
# A batch is what has arrived when the agent takes the next one, at most this many
# events.  Its table writes and outputs are acknowledged by Kafka before its offsets can
# be committed (agents/changelog.py).
BATCH_MAX_EVENTS = 2000
# the writer of the batch the current agent task is handling (agents run as tasks)
_BATCH_WRITER: contextvars.ContextVar[TableWriter | None] = contextvars.ContextVar("batch", default=None)


async def fetched_batches(stream: faust.StreamT, max_events: int) -> AsyncIterator[list[faust.EventT]]:
    """The agent's input as batches of what has arrived: everything the consumer has
    delivered to the agent's channel so far, at most ``max_events``.

    This reads the channel's queue (which Faust's conductor fills with each fetched
    record) directly instead of iterating the Faust stream: the stream runs a task switch,
    processors and sensor calls for every event (measured: about a third of the worker's
    CPU), and none of it is needed when a whole batch is handled at once.  Nothing is
    acked here: each event holds the reference the conductor gave it until
    :meth:`Intake.durable` acks it, after its batch's writes were acknowledged."""
    channel = aiter(stream.channel)  # subscribes the agent's topics, as the stream would
    queue = channel.queue  # type: ignore[attr-defined]
    while True:
        try:
            batch = [await queue.get()]
            while len(batch) < max_events and not queue.empty():
                batch.append(queue.get_nowait())
        except StopAsyncIteration:  # Faust ends a channel's readers this way when it stops
            return
        yield batch


class Intake:
    """The batch mechanics shared by the deal, survey and alert-delivery agents."""

    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        metrics: SalesopsMetrics,
        positions: InputPositions,
        dead_letter_topic: Any,
        alerts_topic: Any,
    ) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self.positions = positions
        self.dead_letter_topic = dead_letter_topic
        self.alerts_topic = alerts_topic
        self.dead_letter_codec = Codec.for_record("DeadLetter")
        self.alert_codec = Codec.for_record("Alert")
        self.clock = WallClock()

    def writer(self) -> TableWriter:
        """A writer for one agent's batches: a failed produce is counted and resent."""

        def failed(topic: str, error: BaseException) -> None:
            self.metrics.sink_errors.labels("changelog").inc()
            log.warning("produce_failed topic=%s error=%r (resent)", topic, error)

        return TableWriter(self.app.producer, on_failure=failed)

    @contextlib.asynccontextmanager
    async def durable(self, stream: Any, events: Sequence[Any], writer: TableWriter) -> AsyncIterator[None]:
        """The batch barrier.  The batch's events are acked only after ``writer.flush()``
        returned, i.e. once every table write and output record of the batch is
        acknowledged by Kafka; a batch that ends with an exception (a SIGTERM cancels the
        agent mid-flush) is never acked, hence never committed, and is processed again
        after a restart."""
        token = _BATCH_WRITER.set(writer)
        try:
            yield
            await writer.flush()
        finally:
            _BATCH_WRITER.reset(token)
        for event in events:
            event.ack()

    async def check_position(self, msg: Any) -> None:
        """Seek back when Faust delivered a record past a skipped one (agents/input_offsets.py)."""
        missing = self.positions.observe(msg.tp, msg.offset)
        if missing is not None:
            self.metrics.input_rewinds.labels(msg.topic).inc()
            log.warning(
                "input_skipped topic=%s partition=%s missing_from=%s got=%s (seeking back)",
                msg.topic,
                msg.partition,
                missing,
                msg.offset,
            )
            await self.app.consumer.seek_wait({msg.tp: missing})  # in the consumer's thread

    async def produce(self, topic: Any, key: bytes, value: bytes) -> None:
        """An output record of the current batch (durable with it), or, outside a batch
        (the publisher's timer), sent and awaited at once."""
        writer = _BATCH_WRITER.get()
        if writer is not None:
            writer.produce(topic.get_topic_name(), key, value)
        else:
            await (await topic.send(key=key, value=value))

    def now_ms(self) -> int:
        """Wall time: what validation limits and dead letters are stamped with."""
        return self.clock.now_ms()

    def limits(self) -> Limits:
        return Limits(now_ms=self.now_ms(), max_future_ms=self.settings.max_future_s * 1000)

    async def accept(
        self, msg: Any, codec: Codec, validate: Callable[[Any, Limits], Event | Rejection]
    ) -> Event | None:
        """The decoded, validated event of ``msg``; None once a bad one is dead-lettered."""
        decoded = self.decode(codec, msg)
        result = decoded if isinstance(decoded, Rejection) else validate(decoded, self.limits())
        if isinstance(result, Rejection):
            await self.dead_letter(msg, result.reason, result.detail)
            return None
        return result

    def decode(self, codec: Codec, msg: Any) -> dict[str, Any] | Rejection:
        if msg.value is None:
            return Rejection("undecodable", "empty value (tombstone) on an input topic")
        try:
            return codec.decode_plain(msg.value)
        except DecodeError as exc:
            return Rejection("undecodable", str(exc))

    async def dead_letter(self, msg: Any, reason: str, detail: str) -> None:
        """Dead-letter one record.  Survey responses carry a respondent identifier, which
        must never leave the worker, so their bytes are withheld: topic, partition and
        offset point at the original, which stays in the input topic."""
        value = msg.value
        if msg.topic == self.settings.responses_topic:
            value = None
            detail += " (value withheld: it names a respondent; read it at the source offset)"
        record = {
            "reason": reason,
            "detail": detail,
            "source_topic": msg.topic,
            "source_partition": msg.partition,
            "source_offset": msg.offset,
            "original_key": msg.key,
            "original_value": value,
            "failed_at": self.now_ms(),
        }
        await self.produce(self.dead_letter_topic, msg.key, self.dead_letter_codec.encode(record))
        self.metrics.dead_letters.labels(reason).inc()
        self.metrics.events.labels(msg.topic, "dead_letter").inc()
        log.info(
            "dead_letter topic=%s partition=%s offset=%s reason=%s",
            msg.topic,
            msg.partition,
            msg.offset,
            reason,
        )

    async def guarded(self, handler: Callable[[Any], Any], msg: Any) -> Any:
        """Run one handler; a bug on one record dead-letters it (reason internal_error) and
        logs the traceback instead of crashing the worker and blocking the partition."""
        try:
            return await handler(msg)
        except Exception as exc:
            await self.internal_error(msg, exc)
            return None

    async def internal_error(self, msg: Any, exc: Exception) -> None:
        log.exception("internal_error topic=%s partition=%s offset=%s", msg.topic, msg.partition, msg.offset)
        await self.dead_letter(msg, "internal_error", f"{type(exc).__name__}: {exc}")

    async def step_problems(self, entries: Sequence[tuple[Any, Any]], problems: Sequence[Any]) -> None:
        """Dead-letter the items a pure step reported as problems (``ItemProblem``: index
        into ``entries`` of (event, item), reason, detail); an ``internal_error`` is also
        logged as an error, since it is a bug, not bad input."""
        for problem in problems:
            msg = entries[problem.index][0].message
            if problem.reason == "internal_error":
                log.error(
                    "internal_error topic=%s partition=%s offset=%s detail=%s",
                    msg.topic,
                    msg.partition,
                    msg.offset,
                    problem.detail,
                )
            await self.dead_letter(msg, problem.reason, problem.detail)

    async def emit_alert(self, record: dict[str, Any]) -> None:
        """An alert transition on the alerts topic (durable with the current batch)."""
        await self.produce(self.alerts_topic, record["alert_id"].encode(), self.alert_codec.encode(record))
        self.metrics.alerts.labels(record["kind"], record["status"]).inc()
        log.info("alert id=%s status=%s", record["alert_id"], record["status"])
