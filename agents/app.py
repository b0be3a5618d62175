"""The Faust app: topics, tables, agents, timers and web views. Thin glue.

Flow per partition (docs/design.md): decode -> validate -> core (``streams``) -> table ->
incremental views.  A timer publishes each owned partition's *partial* view to the
internal partials topic; every worker reads all partials and merges the latest one per
partition, so ``/api`` answers global numbers whichever worker is asked.  The worker
owning partition 0 of the deal topic (the *publisher*) writes the merged views to the
aggregate topics, Redis and the ratio gauges.  After a rebalance or a restart the views
are rebuilt from the recovered tables, never from counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar, cast
from zoneinfo import ZoneInfo

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from agents import broker_health, input_offsets, lag
from agents.changelog import DurableTable, TableWriter
from agents.outputs import Publisher
from agents.partials import PartialExchange, partition_for
from agents.records import DealRecord, FramedRecord, FramedTable, TableLedger
from agents.settings import Settings
from agents.web import define_routes
from schemas.codec import Codec, DecodeError
from sinks.metrics import ERROR_SINKS, SalesopsMetrics, set_gauge_family
from sinks.webhook import WebhookSink
from streams import enps_alerts, pulse, stalled
from streams.clock import Clock, WallClock
from streams.deal_step import DealPartition, StoredDeal, apply_batch
from streams.events import DealEvent
from streams.pipeline_views import merge_partials
from streams.pipelines import DEFAULT_PIPELINES_FILE, DEFAULT_RATES_FILE, load_pipelines, load_rates
from streams.validation import (
    Limits,
    Rejection,
    to_epoch_ms,
    validate_deal,
    validate_invitation,
    validate_response,
)

log = logging.getLogger(__name__)
REPUBLISH_S = 30.0  # global outputs are refreshed at least this often (ages grow with time)
Event = TypeVar("Event")  # a validated input record: DealEvent, SurveyResponse, SurveyInvitation
# A batch is what one take from the stream returns: at most this many events, or what
# arrived within this many seconds.  Its table writes and outputs are acknowledged by
# Kafka before its offsets can be committed (agents/changelog.py).
BATCH_MAX_EVENTS = 2000
BATCH_WITHIN_S = 0.05
# the writer of the batch the current agent task is handling (agents run as tasks)
_BATCH_WRITER: contextvars.ContextVar[TableWriter | None] = contextvars.ContextVar("batch", default=None)


@dataclass
class SurveyPartition:
    views: pulse.PulseViews
    dirty: bool = True


@dataclass
class PartialBook:
    """Latest partial per ``<view>:<partition>`` as read from the partials topic."""

    latest: dict[str, dict[str, Any]] = field(default_factory=dict)
    version: int = 0  # bumped on every put: global outputs are recomputed only on change

    def put(self, key: str, partial: dict[str, Any]) -> None:
        self.latest[key] = partial
        self.version += 1

    def parts(self, view: str) -> list[dict[str, Any]]:
        prefix = view + ":"
        return [v for k, v in sorted(self.latest.items()) if k.startswith(prefix)]


class SalesopsWorker:
    """Builds the Faust app for one set of settings (tests build several in one process)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        s = settings
        self.config = load_pipelines(s.pipelines_file or DEFAULT_PIPELINES_FILE)
        self.rates = load_rates(s.rates_file or DEFAULT_RATES_FILE)
        self.tz = ZoneInfo(s.timezone)
        self.metrics = SalesopsMetrics()
        self.deal_codec = Codec.for_record("DealEvent")
        self.response_codec = Codec.for_record("SurveyResponse")
        self.invitation_codec = Codec.for_record("SurveyInvitation")
        self.dead_letter_codec = Codec.for_record("DeadLetter")
        self.alert_codec = Codec.for_record("Alert")
        self.partitions: dict[int, DealPartition] = {}
        # live: stall detection and aging on the wall clock; replay: each partition's watermark
        self.wall_clock: Clock | None = WallClock() if s.clock == "wall" else None
        self.survey_partitions: dict[int, SurveyPartition] = {}
        self.book = PartialBook()
        # chunks partials so none exceeds the broker's message size (agents/partials.py)
        self.exchange = PartialExchange()
        # eNPS drop alerts: group -> its latest alert; recovered from the alerts topic at start
        self.enps_latest: enps_alerts.Alerts = {}
        # global outputs wait until the partials/alerts reader has read to the end once
        self.reader_caught_up = False
        self._gauged_partitions: frozenset[int] = frozenset()
        self._published_version = -1
        self._published_at = 0.0
        self.secret = s.respondent_secret.value.encode()
        (Path(s.data_dir) / s.app_id).mkdir(parents=True, exist_ok=True)
        host = "127.0.0.1" if s.web_host in ("0.0.0.0", "") else s.web_host
        self.app = faust.App(
            s.app_id,
            broker=[f"kafka://{b}" for b in s.bootstrap_list],
            store=s.store,
            datadir=str(Path(s.data_dir) / s.app_id),
            web_host=s.web_host,
            web_bind=s.web_host,  # the interface to listen on; Faust's own default is 0.0.0.0
            web_port=s.web_port,
            canonical_url=f"http://{host}:{s.web_port}",
            topic_partitions=s.topic_partitions,
            topic_replication_factor=s.topic_replication,
            topic_allow_declare=True,
            key_serializer="raw",
            value_serializer="raw",
            consumer_auto_offset_reset="earliest",
            stream_wait_empty=False,
            web_in_thread=False,
            # Faust's /table and /router pages would serve table contents and worker URLs
            web_tables_enabled=False,
            web_router_enabled=False,
            # every table write is a changelog record: a longer linger batches them into
            # fewer produce requests (measured: +30% events/s), at <= 50 ms added latency
            producer_linger_ms=50,
            # and a batch big enough that a send rarely waits for the previous batch to
            # drain; with larger polls and stream buffer: 960 -> 1,315 events/s measured
            # (50k-event replay, one worker, 2 cores)
            producer_max_batch_size=256 * 1024,
            broker_max_poll_records=2000,
            stream_buffer_maxsize=16384,
            broker_session_timeout=s.session_timeout_s,
            broker_commit_every=1000,
            broker_commit_interval=1.0,
        )
        self.publisher = Publisher(self)
        self._define()
        followed = {s.deal_events_topic, s.responses_topic, s.invitations_topic}
        followed |= {s.alerts_topic} if s.webhook_url else set()
        self.positions = input_offsets.install(
            self.app.consumer, followed | {s.topic("stall-checks")}, followed
        )
        self.webhook: WebhookSink | None = None
        if s.webhook_url:
            self.webhook = WebhookSink(
                s.webhook_url.value,
                headers=dict(s.webhook_headers.value),
                template=s.webhook_template or None,
                timeout_s=s.webhook_timeout_s,
                retry_budget=s.webhook_retry_budget,
                ledger=TableLedger(self.delivery_store),
            )
            self.webhook.setup()

    # ------------------------------------------------------------------ topology
    def _define(self) -> None:
        app, s = self.app, self.settings
        raw: dict[str, Any] = {
            "key_type": bytes,
            "value_type": bytes,
            "key_serializer": "raw",
            "value_serializer": "raw",
        }
        self.deal_input = app.topic(s.deal_events_topic, s.topic("stall-checks"), **raw)
        self.stall_checks = app.topic(s.topic("stall-checks"), partitions=s.topic_partitions, **raw)
        self.survey_input = app.topic(s.responses_topic, s.invitations_topic, **raw)
        self.dead_letter = app.topic(s.dead_letter_topic, **raw)
        self.alerts = app.topic(s.alerts_topic, **raw)
        self.partials_topic = app.topic(s.topic("partials"), **raw)
        table_opts: dict[str, Any] = {"key_type": bytes, "value_type": bytes}
        self.deals = app.Table("deals", default=None, partitions=s.topic_partitions, **table_opts)
        self.responses = app.Table("responses", default=None, partitions=s.topic_partitions, **table_opts)
        self.invitations = app.Table("invitations", default=None, partitions=s.topic_partitions, **table_opts)
        self.deliveries = app.Table("deliveries", default=None, partitions=s.topic_partitions, **table_opts)
        # every table write goes through the writer of its agent's batch
        self.deal_writer = self._writer()
        self.survey_writer = self._writer()
        self.delivery_writer = self._writer()
        self.deal_store = DurableTable(self.deals, self.deal_writer)
        self.response_store = DurableTable(self.responses, self.survey_writer)
        self.invitation_store = DurableTable(self.invitations, self.survey_writer)
        self.delivery_store = DurableTable(self.deliveries, self.delivery_writer)
        self.deals.on_recover(self._rebuild_deal_views)
        self.responses.on_recover(self._rebuild_survey_views)

        @app.agent(self.deal_input, name="deal-events")
        async def deal_agent(stream: faust.StreamT) -> None:
            async for events in batches(stream, BATCH_MAX_EVENTS):
                await self.handle_deal_batch(stream, events)

        @app.agent(self.survey_input, name="survey-events")
        async def survey_agent(stream: faust.StreamT) -> None:
            async for events in batches(stream, BATCH_MAX_EVENTS):
                await self.handle_batch(stream, events, self.survey_writer, self._survey_handler)

        if s.webhook_url:
            self.alerts_in = app.topic(s.alerts_topic, **raw)

            @app.agent(self.alerts_in, name="alert-delivery")
            async def delivery_agent(stream: faust.StreamT) -> None:
                # one alert at a time: a slow receiver must not hold a batch of acks back
                async for events in batches(stream, 1):
                    await self.handle_batch(
                        stream, events, self.delivery_writer, lambda _msg: self.deliver_alert
                    )

        app.timer(s.flush_interval_s, name="publish-views")(self.publish_views)
        app.timer(s.stall_check_interval_s, name="stall-checks")(self.emit_due_checks)
        app.task(self.read_partials)
        # consumer lag of the input partitions this worker owns
        inputs = [s.deal_events_topic, s.topic("stall-checks"), s.responses_topic, s.invitations_topic]
        lag.install(app, self.metrics, inputs + ([s.alerts_topic] if s.webhook_url else []))
        define_routes(self)

    # ------------------------------------------------------------------ batches
    def _writer(self) -> TableWriter:
        def failed(topic: str, error: BaseException) -> None:
            self.metrics.sink_errors.labels("changelog").inc()
            log.warning("produce_failed topic=%s error=%r (resent)", topic, error)

        return TableWriter(self.app.producer, on_failure=failed)

    def _survey_handler(self, msg: Any) -> Callable[[Any], Any]:
        if msg.topic == self.settings.responses_topic:
            return self.on_response_message
        return self.on_invitation_message

    async def handle_batch(
        self,
        stream: Any,
        events: Any,
        writer: TableWriter,
        handler_for: Callable[[Any], Callable[[Any], Any]],
    ) -> None:
        """Handle one fetched batch in order; its offsets become committable only once its
        table writes and outputs are acknowledged (:meth:`durable`)."""
        async with self.durable(stream, events, writer):
            for event in events:
                msg = event.message
                await self.check_position(msg)
                # a RocksDB store picks the partition of a write from Faust's current event
                stream._set_current_event(event)
                writer.partition = msg.partition
                await self.guarded(handler_for(msg), msg)

    @contextlib.asynccontextmanager
    async def durable(self, stream: Any, events: Sequence[Any], writer: TableWriter) -> AsyncIterator[None]:
        """The batch barrier.  ``take_events`` acks a batch when the loop body is done,
        also when it ends with an exception (a SIGTERM cancels the agent mid-flush): so
        each message holds one more reference for the batch, released only after
        ``writer.flush()`` returned.  A batch whose writes were not all acknowledged is
        never acked, hence never committed, and is processed again after a restart."""
        for event in events:
            event.message.incref()
        token = _BATCH_WRITER.set(writer)
        try:
            yield
            await writer.flush()
        finally:
            _BATCH_WRITER.reset(token)
        for event in events:
            await stream.ack(event)

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

    async def _produce(self, topic: Any, key: bytes, value: bytes) -> None:
        """An output record of the current batch (durable with it), or, outside a batch
        (the publisher's timer), sent and awaited at once."""
        writer = _BATCH_WRITER.get()
        if writer is not None:
            writer.produce(topic.get_topic_name(), key, value)
        else:
            await (await topic.send(key=key, value=value))

    # ------------------------------------------------------------------ helpers
    def now_ms(self) -> int:
        return int(time.time() * 1000)

    def _limits(self) -> Limits:
        return Limits(now_ms=self.now_ms(), max_future_ms=self.settings.max_future_s * 1000)

    async def _accept(
        self, msg: Any, codec: Codec, validate: Callable[[Any, Limits], Event | Rejection]
    ) -> Event | None:
        """The decoded, validated event of ``msg``; None once a bad one is dead-lettered."""
        decoded = self._decode(codec, msg)
        result = decoded if isinstance(decoded, Rejection) else validate(decoded, self._limits())
        if isinstance(result, Rejection):
            await self.send_dead_letter(msg, result.reason, result.detail)
            return None
        return result

    async def send_dead_letter(self, msg: Any, reason: str, detail: str) -> None:
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
        await self._produce(self.dead_letter, msg.key, self.dead_letter_codec.encode(record))
        self.metrics.dead_letters.labels(reason).inc()
        self.metrics.events.labels(msg.topic, "dead_letter").inc()
        log.info(
            "dead_letter topic=%s partition=%s offset=%s reason=%s",
            msg.topic,
            msg.partition,
            msg.offset,
            reason,
        )

    async def guarded(self, handler: Callable[[Any], Any], msg: Any) -> None:
        """Run one handler; a bug on one record dead-letters it (reason internal_error) and
        logs the traceback instead of crashing the worker and blocking the partition."""
        try:
            await handler(msg)
        except Exception as exc:
            await self._internal_error(msg, exc)

    async def _internal_error(self, msg: Any, exc: Exception) -> None:
        log.exception("internal_error topic=%s partition=%s offset=%s", msg.topic, msg.partition, msg.offset)
        await self.send_dead_letter(msg, "internal_error", f"{type(exc).__name__}: {exc}")

    def _decode(self, codec: Codec, msg: Any) -> dict[str, Any] | Rejection:
        if msg.value is None:
            return Rejection("undecodable", "empty value (tombstone) on an input topic")
        try:
            return codec.decode_plain(msg.value)
        except DecodeError as exc:
            return Rejection("undecodable", str(exc))

    # ------------------------------------------------------------------ deals
    def _partition(self, p: int) -> DealPartition:
        part = self.partitions.get(p)
        if part is None:
            lateness_ms = self.settings.allowed_lateness_s * 1000
            part = DealPartition(self.config, self.rates, self.tz, lateness_ms, self.wall_clock)
            self.partitions[p] = part
        return part

    def stored_deal(self, deal_id: str) -> StoredDeal | None:
        raw = self.deals.get(deal_id.encode())
        if not raw:
            return None
        rec = DealRecord.from_bytes(raw)
        return StoredDeal(rec.deal, stalled.AlertState.from_dict(rec.alert))

    async def _deal_item(self, msg: Any) -> DealEvent | stalled.DueCheck | None:
        """The batch item of one record: a validated deal event or a stall check; None
        once a bad record is dead-lettered."""
        if msg.topic != self.settings.deal_events_topic:
            try:
                return stalled.DueCheck(**json.loads(msg.value))
            except (ValueError, TypeError) as exc:
                await self.send_dead_letter(msg, "undecodable", f"bad stall check: {exc}")
                return None
        limits = self._limits()
        return await self._accept(
            msg, self.deal_codec, lambda d, _: validate_deal(d, self.config, self.rates, limits)
        )

    async def handle_deal_batch(self, stream: Any, events: Sequence[Any]) -> None:
        """Decode and validate the batch, apply each partition's share in one step
        (:func:`streams.deal_step.apply_batch`), store each changed deal once, emit the
        alert transitions, and wait until all of it is acknowledged (see handle_batch)."""
        started = time.perf_counter()
        async with self.durable(stream, events, self.deal_writer):
            by_partition: dict[int, list[tuple[Any, DealEvent | stalled.DueCheck]]] = {}
            for event in events:
                msg = event.message
                await self.check_position(msg)
                try:
                    item = await self._deal_item(msg)
                except Exception as exc:
                    await self._internal_error(msg, exc)
                    continue
                if item is not None:
                    by_partition.setdefault(msg.partition, []).append((event, item))
            for p, entries in by_partition.items():
                await self._apply_deal_partition(stream, p, entries)
        now = time.time()
        topic = self.settings.deal_events_topic
        per_event = (time.perf_counter() - started) / max(1, len(events))
        for event in events:
            msg = event.message
            if msg.topic == topic:
                self.metrics.processing.labels(topic).observe(per_event)
                if msg.timestamp:
                    self.metrics.event_lag.observe(max(0.0, now - msg.timestamp))

    async def _apply_deal_partition(
        self, stream: Any, p: int, entries: list[tuple[Any, DealEvent | stalled.DueCheck]]
    ) -> None:
        outcome = apply_batch(self._partition(p), self.stored_deal, [item for _event, item in entries])
        for problem in outcome.problems:
            msg = entries[problem.index][0].message
            if problem.reason == "internal_error":
                log.error(
                    "internal_error topic=%s partition=%s offset=%s detail=%s",
                    msg.topic,
                    p,
                    msg.offset,
                    problem.detail,
                )
            await self.send_dead_letter(msg, problem.reason, problem.detail)
        # a RocksDB store picks the partition of a write from Faust's current event
        stream._set_current_event(entries[-1][0])
        for deal_id, rec in outcome.changed.items():
            alert = rec.alert.to_dict() if rec.alert else None
            self.deal_store.set(deal_id.encode(), DealRecord(p, rec.deal, alert).to_bytes(), p)
        for t in outcome.transitions:
            await self.emit_alert(t.to_record())
        topic = self.settings.deal_events_topic
        if outcome.late:
            self.metrics.late_events.labels(topic).inc(outcome.late)
        ok = sum(1 for _e, item in entries if isinstance(item, DealEvent)) - sum(
            1 for pr in outcome.problems if isinstance(entries[pr.index][1], DealEvent)
        )
        if ok:
            self.metrics.events.labels(topic, "ok").inc(ok)

    async def emit_alert(self, record: dict[str, Any]) -> None:
        await self._produce(self.alerts, record["alert_id"].encode(), self.alert_codec.encode(record))
        self.metrics.alerts.labels(record["kind"], record["status"]).inc()
        log.info("alert id=%s status=%s", record["alert_id"], record["status"])

    async def deliver_alert(self, msg: Any) -> None:
        """Webhook delivery, at most one 2xx per (alert, status): the ledger is a table."""
        decoded = self._decode(self.alert_codec, msg)
        if isinstance(decoded, Rejection):
            await self.send_dead_letter(msg, decoded.reason, decoded.detail)
            return
        record = {k: (to_epoch_ms(v, k) if isinstance(v, datetime) else v) for k, v in decoded.items()}
        assert self.webhook is not None  # the agent exists only with a webhook URL
        result = await self.webhook.deliver(record)
        if result.delivered:
            self.metrics.alert_deliveries.labels(
                "delivered" if result.attempts else "already_delivered"
            ).inc()
        else:
            self.metrics.alert_deliveries.labels("failed").inc()
            await self.send_dead_letter(
                msg, "webhook_failed", f"after {result.attempts} attempts: {result.last_error}"
            )

    async def emit_due_checks(self) -> None:
        for p, part in list(self.partitions.items()):
            for check in part.due_checks():
                body = json.dumps(
                    {
                        "deal_id": check.deal_id,
                        "stage": check.stage,
                        "entered_at": check.entered_at,
                        "due_at": check.due_at,
                    }
                ).encode()
                await self.stall_checks.send(key=check.deal_id.encode(), value=body, partition=p)

    def _active(self, topic: str) -> set[int]:
        return {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == topic}

    async def _rebuild_deal_views(self) -> None:
        actives = self._active(self.settings.deal_events_topic)
        self.partitions = {}
        for p in actives:
            self._partition(p)
        for _key, value in list(self.deals.items()):
            if not value:
                continue
            rec = DealRecord.from_bytes(value)
            part = self.partitions.get(rec.partition)
            if part is not None:
                part.restore(StoredDeal(rec.deal, stalled.AlertState.from_dict(rec.alert)))
        log.info(
            "deal views rebuilt partitions=%s deals=%s",
            sorted(actives),
            sum(len(p.index) for p in self.partitions.values()),
        )

    # ------------------------------------------------------------------ surveys
    def _survey_partition(self, p: int) -> SurveyPartition:
        part = self.survey_partitions.get(p)
        if part is None:
            part = SurveyPartition(pulse.PulseViews(self.tz))
            self.survey_partitions[p] = part
        return part

    async def on_response_message(self, msg: Any) -> None:
        result = await self._accept(msg, self.response_codec, validate_response)
        if result is None:
            return
        part = self._survey_partition(msg.partition)
        if pulse.apply_response(
            FramedTable(self.response_store, msg.partition), part.views, result, self.secret
        ):
            part.dirty = True
        self.metrics.events.labels(msg.topic, "ok").inc()

    async def on_invitation_message(self, msg: Any) -> None:
        result = await self._accept(msg, self.invitation_codec, validate_invitation)
        if result is None:
            return
        part = self._survey_partition(msg.partition)
        if pulse.apply_invitation(FramedTable(self.invitation_store, msg.partition), part.views, result):
            part.dirty = True
        self.metrics.events.labels(msg.topic, "ok").inc()

    async def _rebuild_survey_views(self) -> None:
        actives = self._active(self.settings.responses_topic)
        self.survey_partitions = {}
        for p in actives:
            self._survey_partition(p)
        for _key, value in list(self.responses.items()):
            if value:
                rec = FramedRecord.from_bytes(value)
                if rec.partition in self.survey_partitions:
                    self.survey_partitions[rec.partition].views.replace(
                        None, pulse.StoredResponse.from_bytes(rec.body)
                    )
        for _key, value in list(self.invitations.items()):
            if value:
                rec = FramedRecord.from_bytes(value)
                if rec.partition in self.survey_partitions:
                    self.survey_partitions[rec.partition].views.set_invitation(
                        None, pulse.invitation_from_bytes(rec.body)
                    )

    # ------------------------------------------------------------------ publication
    def deal_partial(self, p: int, part: DealPartition) -> dict[str, Any]:
        return {
            "views": part.views.partial(),
            "stalled": sorted(part.firing.values(), key=lambda a: a["alert_id"]),
            "watermark": part.watermark.now_ms(),
        }

    async def publish_views(self) -> None:
        """Publish changed partials; the publisher also writes global outputs.

        Work here is proportional to the state, and it shares the event loop with the
        agents: so partials are built only for changed partitions, the worker's gauges
        only when one of its partials changed, and the global outputs only when a partial
        changed anywhere or ``REPUBLISH_S`` passed (aging moves with the clock).

        A failed publication is logged, counted (``salesops_sink_errors_total{sink}``,
        ``partials`` or ``aggregate-topics``) and retried at the next flush: it never
        stops the worker.
        """
        owned = frozenset(self.partitions)
        deals_changed = owned != self._gauged_partitions
        for p, part in list(self.partitions.items()):
            if part.dirty:
                deals_changed = True
                part.dirty = False
                if not await self._publish_partial(f"deals:{p}", self.deal_partial(p, part)):
                    part.dirty = True
        for p, spart in list(self.survey_partitions.items()):
            if spart.dirty:
                spart.dirty = False
                if not await self._publish_partial(f"pulse:{p}", spart.views.partial()):
                    spart.dirty = True
        if deals_changed:
            self._gauged_partitions = owned
            self.publisher.update_worker_gauges(
                [self.book.latest[f"deals:{p}"]["views"] for p in owned if f"deals:{p}" in self.book.latest]
            )
        if 0 in self.partitions and self.reader_caught_up:
            stale = time.monotonic() - self._published_at > REPUBLISH_S
            if self.book.version != self._published_version or stale:
                version = self.book.version
                try:
                    # False until the clock has a value (watermark clock before any event)
                    if await self.publisher.publish_global():
                        self._published_version, self._published_at = version, time.monotonic()
                        # the same clock as the global outputs, once it has a value
                        await self.check_enps_drops(self.merged_pulse(), self.global_now_ms())
                except Exception:  # a bug in one output must not stop consumption
                    self.metrics.sink_errors.labels("aggregate-topics").inc()
                    log.exception("publish_global_failed retry_next_flush=true")

    async def _publish_partial(self, key: str, partial: dict[str, Any]) -> bool:
        """Keep a partial locally (this worker's answers need not wait for the round trip)
        and publish it for the other workers, in chunks that fit the broker's message
        size (agents/partials.py).  False when the publication failed (logged, counted)."""
        self.book.put(key, partial)
        partition = partition_for(key, self.settings.topic_partitions)
        try:
            for chunk_key, value in self.exchange.encode(key, partial):
                await self.partials_topic.send(key=chunk_key.encode(), value=value, partition=partition)
        except Exception as exc:  # the producer's errors vary (size, broker gone): all mean "retry"
            self.metrics.sink_errors.labels("partials").inc()
            log.warning("sink=partials key=%s retry_next_flush=true error=%r", key, exc)
            return False
        return True

    async def read_partials(self) -> None:
        """Follow the partials topic from the beginning, without a consumer group."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap_list,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # a failed fetch (broker gone) is retried after this, not aiokafka's 100 ms:
            # partials are published every flush interval, so 0.5 s costs nothing
            retry_backoff_ms=500,
        )
        await consumer.start()
        try:
            # assign (no group): every worker reads every partition; the topic is created
            # by ensure_topics with topic_partitions partitions
            topic = self.settings.topic("partials")
            parts = range(self.settings.topic_partitions)
            consumer.assign(
                [TopicPartition(t, p) for t in (topic, self.settings.alerts_topic) for p in parts]
            )
            await consumer.seek_to_beginning()
            log.info("partials_reader_started topic=%s partitions=%s", topic, len(parts))
            failures = 0
            while True:
                try:
                    batch = await consumer.getmany(timeout_ms=500)
                except KafkaError as exc:
                    if not exc.retriable:
                        raise
                    # a retriable fetch error (e.g. the broker went away): back off with
                    # jitter instead of ending the task, which would stop the worker
                    failures += 1
                    if failures == 1:
                        log.warning("partials_reader_retrying error=%s", exc)
                    await asyncio.sleep(broker_health.RETRY_BACKOFF.delay(failures))
                    continue
                failures = 0
                if not batch and not self.reader_caught_up:
                    self.reader_caught_up = True
                    log.info("partials_reader_caught_up partials=%s", len(self.book.latest))
                for tp, records in batch.items():
                    for r in records:
                        if r.key is None or r.value is None:
                            continue
                        if tp.topic == topic:
                            done = self.exchange.receive(r.key.decode(), r.value)
                            if done is not None:
                                self.book.put(*done)
                        else:
                            self._note_enps_alert(r.value)
        finally:
            await consumer.stop()

    def _note_enps_alert(self, value: bytes) -> None:
        """Follow eNPS drop alerts on the alerts topic, so a restarted or new publisher
        neither repeats a FIRING nor forgets to resolve one."""
        try:
            rec = self.alert_codec.decode(value)
        except DecodeError:
            return
        self.enps_latest = enps_alerts.recover(self.enps_latest, rec)

    async def check_enps_drops(self, merged: dict[str, Any], now: int) -> None:
        """Publisher only: the eNPS drop gauges, and the alert transitions decided by
        :func:`streams.enps_alerts.decide` at ``now`` (the clock of the global outputs)."""
        s = self.settings
        all_drops = pulse.enps_drops(merged, now, s.anonymity_threshold, float("-inf"))
        set_gauge_family(self.metrics.enps_drop, {(d["group"],): d["drop"] for d in all_drops})
        margins = pulse.enps_drop_margins(merged, now, s.anonymity_threshold)
        set_gauge_family(self.metrics.enps_drop_margin, {(g,): m for g, m in margins.items()})
        self.metrics.enps_drop_threshold.set(s.enps_drop_points)
        _, records = enps_alerts.decide(self.enps_latest, all_drops, s.enps_drop_points, now, margins)
        for record in records:
            await self.emit_alert(record)
            # known once sent: a failed send is decided and sent again on the next pass
            self.enps_latest = enps_alerts.recover(self.enps_latest, record)

    # ------------------------------------------------------------------ queries
    def merged_deals(self) -> dict[str, Any]:
        return merge_deal_partials(self.book.parts("deals"))

    def merged_pulse(self) -> dict[str, Any]:
        parts = self.book.parts("pulse")
        return pulse.merge_partials(parts) if parts else pulse.PulseViews(self.tz).partial()

    def global_now_ms(self) -> int:
        if self.settings.clock == "wall":
            return self.now_ms()
        return max((p.get("watermark", 0) for p in self.book.parts("deals")), default=0)


def batches(stream: faust.StreamT, max_events: int) -> AsyncIterator[Sequence[faust.EventT]]:
    """The stream's events in batches (``Stream.take_events``, which acks a batch only
    after the loop body is done with it)."""
    return cast(faust.Stream, stream).take_events(max_events, within=BATCH_WITHIN_S)


def merge_deal_partials(parts: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "views": merge_partials([p["views"] for p in parts]),
        "stalled": sorted((a for p in parts for a in p.get("stalled", [])), key=lambda a: a["alert_id"]),
        "watermark": max((p.get("watermark", 0) for p in parts), default=0),
    }


def deal_json(rec: DealRecord) -> dict[str, Any]:
    d = rec.deal
    return {
        "deal_id": d.deal_id,
        "pipeline": d.pipeline,
        "stage": d.stage,
        "status": d.status,
        "amount": str(d.amount),
        "currency": d.currency,
        "owner_id": d.owner_id,
        "team": d.team,
        "region": d.region,
        "probability": d.probability,
        "created_at": d.created_at,
        "closed_at": d.closed_at,
        "history": [
            {"stage": v.stage, "entered_at": v.entered_at, "exited_at": v.exited_at} for v in d.history()
        ],
        "alert": rec.alert,
    }


def run_worker(settings: Settings, on_started: Callable[[SalesopsWorker], None] | None = None) -> int:
    """``salesops worker``: create topics, then run until SIGTERM/SIGINT (graceful)."""
    from agents.kafka_io import BrokerUnavailable
    from agents.topics import ensure_topics

    try:
        ensure_topics(settings)
    except BrokerUnavailable as exc:
        log.error("startup_failed error=%s", exc)
        return 2
    worker = SalesopsWorker(settings)
    worker.metrics.prime(
        [settings.deal_events_topic, settings.responses_topic, settings.invitations_topic],
        sinks=[sink for sink in ERROR_SINKS if sink != "redis" or settings.redis_url],
    )
    # metadata backoff, the Kafka client log filter, salesops_broker_up and its probe
    broker_health.install(worker.app, worker.metrics, settings.bootstrap_list)
    if on_started:
        on_started(worker)
    faust_worker = faust.Worker(worker.app, loglevel=settings.log_level, redirect_stdouts=False)
    faust_worker.execute_from_commandline()
    return 0
