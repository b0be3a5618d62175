"""The Faust app: topics, tables, agents and timers, and who does what. Thin glue.

Flow per partition (docs/design.md): decode -> validate -> core (``streams``) -> table ->
incremental views.  The handlers (agents/deal_handler.py, agents/survey_handler.py) run
each fetched batch through the pure per-partition steps; agents/batches.py makes a
batch durable before its offsets commit.  A timer publishes each owned partition's
*partial* view to the internal partials topic; every worker reads all partials
(agents/partials.py) and merges the latest one per partition, so ``/api`` answers global
numbers whichever worker is asked.  The worker owning partition 0 of the deal topic (the
*publisher*) writes the merged views to the aggregate topics, Redis and the ratio gauges
(agents/outputs.py).  After a rebalance or a restart the views are rebuilt from the
recovered tables, never from counters.

**Clocks.**  One per role, chosen once from ``SALESOPS_CLOCK``: stall detection and aging
of each deal partition run on the wall clock live, or on that partition's own event-time
watermark in replays (``watermark``).  The global outputs (funnel periods, aging, eNPS
windows and eNPS-drop alerts alike) run on :meth:`SalesopsWorker.global_now_ms`: the wall
clock live; in replays the *highest* partition watermark, because a period is "current"
as soon as any partition has reached it, and a minimum would hold every output back on
the slowest or an idle partition forever.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import faust
import uvloop

from agents import broker_health, fetch_loop, input_offsets, lag, shutdown
from agents.all_deals import AllDeals
from agents.batches import BATCH_MAX_EVENTS, Intake, fetched_batches
from agents.changelog import DurableTable
from agents.deal_handler import DealHandler
from agents.followers import held_keys
from agents.outputs import Publisher, Snapshot, set_worker_gauges, view_codecs
from agents.partials import PartialBook, PartialExchange, PartialsReader, merge_deal_partials, partition_for
from agents.records import TableLedger
from agents.settings import Settings
from agents.survey_handler import SurveyHandler
from agents.targets import TargetsService
from agents.web import define_routes
from schemas.codec import Codec, DecodeError
from sinks.aggregate_topics import AggregateTopicSink
from sinks.base import Sink
from sinks.metrics import ERROR_SINKS, SalesopsMetrics, set_gauge_family
from sinks.redis_snapshot import RedisSnapshotSink
from sinks.webhook import WebhookSink
from streams import enps_alerts, pulse
from streams.clock import Clock, WallClock
from streams.deal_step import DealPartition
from streams.pipelines import DEFAULT_PIPELINES_FILE, DEFAULT_RATES_FILE, load_pipelines, load_rates
from streams.validation import Rejection, to_epoch_ms

log = logging.getLogger(__name__)
REPUBLISH_S = 30.0  # global outputs are refreshed at least this often (ages grow with time)
__all__ = ["BATCH_MAX_EVENTS", "SalesopsWorker", "run_worker"]


class SalesopsWorker:
    """Builds the Faust app for one set of settings (tests build several in one process)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        s = settings
        self.config = load_pipelines(s.pipelines_file or DEFAULT_PIPELINES_FILE)
        self.rates = load_rates(s.rates_file or DEFAULT_RATES_FILE)
        self.tz = ZoneInfo(s.timezone)
        self.metrics = SalesopsMetrics()
        self.alert_codec = Codec.for_record("Alert")
        self.book = PartialBook()
        # one clock per role (module docstring, "Clocks"); None: each partition's watermark
        self.partition_clock: Clock | None = WallClock() if s.clock == "wall" else None
        self.global_clock: Clock = WallClock() if s.clock == "wall" else HighestWatermark(self.book)
        # chunks partials so none exceeds the broker's message size (agents/partials.py)
        self.exchange = PartialExchange()
        # eNPS drop alerts: group -> its latest alert; recovered from the alerts topic at start
        self.enps_latest: enps_alerts.Alerts = {}
        self._gauged_partitions: frozenset[int] = frozenset()
        self._published_version = -1
        self._published_at = 0.0
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
        followed = {s.deal_events_topic, s.responses_topic, s.invitations_topic}
        followed |= {s.alerts_topic} if s.webhook_url else set()
        self.positions = input_offsets.install(
            self.app.consumer, followed | {s.topic("stall-checks")}, followed
        )
        fetch_loop.install(self.app.consumer)  # no task per fetched record
        # every partition's deals, for the forecast, quotas and commission (agents/targets.py)
        self.all_deals = AllDeals(s)
        self.targets = TargetsService(self)
        self._define()
        # before its first publication to an aggregate topic, the sink reads which keys the
        # topic holds, so rows an earlier publisher wrote that are gone now get tombstones
        held = functools.partial(held_keys, s)
        sinks: list[Sink] = [AggregateTopicSink(self._send, view_codecs(), s.topic, existing=held)]
        if s.redis_url:
            sinks.append(RedisSnapshotSink(s.redis_url.value, s.redis_prefix))
        self.publisher = Publisher(self.metrics, sinks)
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
        raw: dict[str, Any] = {"schema": fetch_loop.RawRecords()}  # key and value: the record's bytes
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
        self.intake = Intake(app, s, self.metrics, self.positions, self.dead_letter, self.alerts)
        # every table write goes through the writer of its agent's batch
        self.deal_writer = self.intake.writer()
        self.delivery_writer = self.intake.writer()
        self.deal_handler = DealHandler(
            self.intake,
            self.config,
            self.rates,
            self.tz,
            self.deals,
            self.deal_writer,
            self.stall_checks,
            self.partition_clock,
        )
        self.survey_handler = SurveyHandler(
            self.intake,
            self.tz,
            s.respondent_secret.value.encode(),
            self.responses,
            self.invitations,
            self.intake.writer(),
        )
        self.delivery_store = DurableTable(self.deliveries, self.delivery_writer)
        self.deals.on_recover(self._rebuild_deal_views)
        self.responses.on_recover(self._rebuild_survey_views)
        self.partials_reader = PartialsReader(s, self.book, self.exchange, self._note_enps_alert)

        @app.agent(self.deal_input, name="deal-events")
        async def deal_agent(stream: faust.StreamT) -> None:
            async for events in fetched_batches(stream, BATCH_MAX_EVENTS):
                await self.deal_handler.handle_batch(stream, events)

        @app.agent(self.survey_input, name="survey-events")
        async def survey_agent(stream: faust.StreamT) -> None:
            async for events in fetched_batches(stream, BATCH_MAX_EVENTS):
                await self.survey_handler.handle_batch(stream, events)

        if s.webhook_url:
            self.alerts_in = app.topic(s.alerts_topic, **raw)

            @app.agent(self.alerts_in, name="alert-delivery")
            async def delivery_agent(stream: faust.StreamT) -> None:
                # one alert at a time: a slow receiver must not hold a batch of acks back
                async for events in fetched_batches(stream, 1):
                    async with self.intake.durable(stream, events, self.delivery_writer):
                        for event in events:
                            msg = event.message
                            await self.intake.check_position(msg)
                            self.delivery_writer.partition = msg.partition
                            stream._set_current_event(event)  # type: ignore[attr-defined]
                            await self.intake.guarded(self.deliver_alert, msg)

        app.timer(s.flush_interval_s, name="publish-views")(self.publish_views)
        app.timer(s.stall_check_interval_s, name="stall-checks")(self.deal_handler.emit_due_checks)
        app.task(self.partials_reader.run)
        app.task(self.all_deals.follow)
        self.targets.install(app)
        # consumer lag of the input partitions this worker owns
        inputs = [s.deal_events_topic, s.topic("stall-checks"), s.responses_topic, s.invitations_topic]
        lag.install(app, self.metrics, inputs + ([s.alerts_topic] if s.webhook_url else []))
        define_routes(self)

    # ------------------------------------------------------------------ state
    @property
    def partitions(self) -> dict[int, DealPartition]:
        """This worker's deal partitions (their views, stall index, watermark, alerts)."""
        return self.deal_handler.partitions

    @property
    def reader_caught_up(self) -> bool:
        return self.partials_reader.caught_up

    async def handle_deal_batch(self, stream: Any, events: Any) -> None:
        """One fetched batch of the deal agent (also driven by the benchmark)."""
        await self.deal_handler.handle_batch(stream, events)

    def now_ms(self) -> int:
        return self.intake.now_ms()

    def _active(self, topic: str) -> set[int]:
        return {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == topic}

    async def _rebuild_deal_views(self) -> None:
        self.deal_handler.rebuild(self._active(self.settings.deal_events_topic))

    async def _rebuild_survey_views(self) -> None:
        self.survey_handler.rebuild(self._active(self.settings.responses_topic))

    # ------------------------------------------------------------------ alerts
    async def deliver_alert(self, msg: Any) -> None:
        """Webhook delivery through the sink interface, at most one 2xx per (alert,
        status): the sink's ledger is a table."""
        decoded = self.intake.decode(self.alert_codec, msg)
        if isinstance(decoded, Rejection):
            await self.intake.dead_letter(msg, decoded.reason, decoded.detail)
            return
        record = {k: (to_epoch_ms(v, k) if isinstance(v, datetime) else v) for k, v in decoded.items()}
        assert self.webhook is not None  # the agent exists only with a webhook URL
        self.webhook.add(record)
        for _record, result in await self.webhook.flush():
            if result.delivered:
                self.metrics.alert_deliveries.labels(
                    "delivered" if result.attempts else "already_delivered"
                ).inc()
            else:
                self.metrics.alert_deliveries.labels("failed").inc()
                await self.intake.dead_letter(
                    msg, "webhook_failed", f"after {result.attempts} attempts: {result.last_error}"
                )

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
            await self.intake.emit_alert(record)
            # known once sent: a failed send is decided and sent again on the next pass
            self.enps_latest = enps_alerts.recover(self.enps_latest, record)

    # ------------------------------------------------------------------ publication
    async def _send(self, topic: str, key: bytes, value: bytes | None) -> Awaitable[Any]:
        """Enqueue one record; returns its delivery (the broker's acknowledgement)."""
        return await self.app.producer.send(topic, key, value, partition=None, timestamp=None, headers=None)

    def deal_partial(self, p: int, part: DealPartition) -> dict[str, Any]:
        return {
            "views": part.views.partial(),
            "stalled": sorted(part.firing.values(), key=lambda a: a["alert_id"]),
            "watermark": part.watermark.now_ms(),
        }

    def snapshot(self) -> Snapshot:
        """What the global outputs are a function of, at the global clock."""
        s = self.settings
        return Snapshot(
            deals=self.merged_deals(),
            pulse=self.merged_pulse(),
            now_ms=self.global_now_ms(),
            config=self.config,
            currency=self.rates.reporting_currency,
            tz=self.tz,
            trailing_windows_days=tuple(s.trailing_windows_days),
            anonymity_threshold=s.anonymity_threshold,
        )

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
        partitions = self.partitions
        owned = frozenset(partitions)
        deals_changed = owned != self._gauged_partitions
        if 0 in self._gauged_partitions and 0 not in owned:
            # the last pass published (deal partition 0), another worker does now
            self.publisher.forget()  # sinks/aggregate_topics.py
        for p, part in list(partitions.items()):
            if part.dirty:
                deals_changed = True
                part.dirty = False
                if not await self._publish_partial(f"deals:{p}", self.deal_partial(p, part)):
                    part.dirty = True
        for p, spart in list(self.survey_handler.partitions.items()):
            if spart.dirty:
                spart.dirty = False
                if not await self._publish_partial(f"pulse:{p}", spart.views.partial()):
                    spart.dirty = True
        if deals_changed:
            self._gauged_partitions = owned
            own = [self.book.latest[f"deals:{p}"] for p in owned if f"deals:{p}" in self.book.latest]
            firing = [a for part in partitions.values() for a in part.firing.values()]
            set_worker_gauges(self.metrics, [o["views"] for o in own], firing, self.rates.reporting_currency)
        if 0 in partitions and self.reader_caught_up:
            stale = time.monotonic() - self._published_at > REPUBLISH_S
            if self.book.version != self._published_version or stale:
                version = self.book.version
                try:
                    snap = self.snapshot()
                    # False until the clock has a value (watermark clock before any event)
                    # forecast, attainment, commission: computed on their own timer
                    if await self.publisher.publish(snap, self.targets.records()):
                        self.targets.update_gauges(self.metrics)
                        self._published_version, self._published_at = version, time.monotonic()
                        await self.check_enps_drops(snap.pulse, snap.now_ms)
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

    # ------------------------------------------------------------------ queries
    def merged_deals(self) -> dict[str, Any]:
        return merge_deal_partials(self.book.parts("deals"))

    def merged_pulse(self) -> dict[str, Any]:
        parts = self.book.parts("pulse")
        return pulse.merge_partials(parts) if parts else pulse.PulseViews(self.tz).partial()

    def global_now_ms(self) -> int:
        """The clock of the global outputs (module docstring, "Clocks")."""
        return self.global_clock.now_ms()


class HighestWatermark:
    """The global outputs' clock in replays: the highest watermark among the latest deal
    partials of every partition (module docstring, "Clocks")."""

    def __init__(self, book: PartialBook) -> None:
        self.book = book

    def now_ms(self) -> int:
        return max((p.get("watermark", 0) for p in self.book.parts("deals")), default=0)


# Python's cyclic garbage collector with its default thresholds (700, 10, 10) took 5-6 s
# of a 200,000-event backfill of about 40 s (timed with gc.callbacks): the worker creates
# and drops container objects (events, observations, view keys) at a high rate while
# holding many long-lived ones (views, stall index, Faust's own), so collections of the
# older generations, which traverse all of them, came often.  With the young generation
# collected every GC_THRESHOLDS[0] allocations and the objects of the started worker
# frozen (gc.freeze: never traversed again), the same backfill ran at 5,054-6,609 ev/s
# against 4,542-5,196 ev/s (README, Benchmarks).  Reference cycles are still collected,
# just in larger steps: at most a few MB of unreachable cycles wait for their collection.
GC_THRESHOLDS = (50_000, 20, 100)


def tune_garbage_collector() -> None:
    """Freeze what exists now (modules, the app, its configuration) and set
    :data:`GC_THRESHOLDS`; called once, just before the worker starts."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def run_worker(settings: Settings, on_started: Callable[[SalesopsWorker], None] | None = None) -> int:
    """``salesops worker``: create topics, then run until SIGTERM/SIGINT (graceful)."""
    from agents.kafka_io import BrokerUnavailable
    from agents.topics import ensure_topics

    # uvloop runs the event loop's own machinery (scheduling, sockets, timers) in C: every
    # fetched record costs a few loop iterations in Faust's consumer and conductor
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
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
    health = broker_health.install(worker.app, worker.metrics, settings.bootstrap_list)
    shutdown.install(worker.app, settings.shutdown_flush_timeout_s, lambda: health.up)
    if on_started:
        on_started(worker)
    tune_garbage_collector()
    faust_worker = faust.Worker(worker.app, loglevel=settings.log_level, redirect_stdouts=False)
    faust_worker.execute_from_commandline()
    return 0
