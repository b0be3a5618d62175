"""The bench's data sets, and the worker's own batch handler run in-process.

:func:`build_dataset` makes a simulated CRM feed (``generate_deals`` + ``deliver`` with the
``salesops simulate`` defaults: 2% duplicates, 5% reordering), validated and encoded once
with the simulator's :class:`~agents.simulator.RecordEncoder`, each record already given
the partition Kafka's default partitioner picks for its key.  :func:`created_deals` makes
many open deals fast (one CREATED event each) for the memory and restart runs.

:class:`InProcessWorker` does not re-implement the worker's deal handling: it builds a real
:class:`~agents.app.SalesopsWorker` from bench settings, never starts it, and feeds fetched
records to the worker's own ``handle_batch`` (decode, validate, deal step, table write
through the batch's ``TableWriter``, views, stall index, alerts, dead letters).  Only what
Faust and Kafka hand that method is stood in for: the stream, the events' messages and
the producer the ``TableWriter`` flushes to (which acknowledges at once).  So its rate and
its profile are the worker's code minus Kafka I/O and Faust's stream machinery.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from aiokafka.partitioner import murmur2
from faust.types import TP

from agents.app import BATCH_MAX_EVENTS, SalesopsWorker
from agents.settings import Secret, Settings
from agents.simulator import RecordEncoder, deliver, generate_deals
from schemas.codec import Codec
from streams.deal_step import DealPartition, StoredDeal, apply_batch
from streams.events import DAY_MS, DealEvent
from streams.pipelines import (
    DEFAULT_PIPELINES_FILE,
    DEFAULT_RATES_FILE,
    PipelineConfig,
    Rates,
    load_pipelines,
    load_rates,
)
from streams.validation import Rejection, validate_deal

HISTORY_DAYS = 120  # `salesops simulate`'s default span: a backfill of four months
LIVE_MS = 3_600_000  # a live feed: the CRM's last hour
DUPLICATE_RATE = 0.02  # the `salesops simulate` defaults
REORDER_RATE = 0.05


def partition_of(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner (murmur2), as the producers and the importer use it."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


@dataclass(frozen=True, slots=True)
class Record:
    partition: int
    key: bytes
    value: bytes


@dataclass
class Dataset:
    records: list[Record]
    deals: int
    event_types: dict[str, int] = field(default_factory=dict)

    @property
    def value_bytes(self) -> int:
        return sum(len(r.value) for r in self.records)


def core_config() -> tuple[PipelineConfig, Rates]:
    """The built-in pipelines and rates: what the bench's worker runs with."""
    settings = Settings()
    return (
        load_pipelines(settings.pipelines_file or DEFAULT_PIPELINES_FILE),
        load_rates(settings.rates_file or DEFAULT_RATES_FILE),
    )


def squeeze(events: list[dict[str, Any]], now_ms: int, window_ms: int) -> list[dict[str, Any]]:
    """The same events with their times scaled linearly into ``[now - window, now]``.

    Replayed against the worker's wall clock, a simulated history makes every stage visit
    that started longer ago than its stall threshold look overdue until the deal's next
    event arrives: a stall check and a FIRING alert each, which a live CRM feed does not
    cause.  Squeezed into the last hour no visit is overdue: the deal path alone.
    """
    first = min(e["occurred_at"] for e in events)
    scale = window_ms / max(now_ms - first, 1)
    return [{**e, "occurred_at": now_ms - int((now_ms - e["occurred_at"]) * scale)} for e in events]


def build_dataset(
    n_events: int, seed: int, partitions: int, live: bool = False, now_ms: int | None = None
) -> Dataset:
    """``n_events`` delivered deal events (a feed's first ``n_events``), encoded: a
    four-month backfill (``salesops simulate``'s default span), or ``live`` (:func:`squeeze`)."""
    config, rates = core_config()
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    encoder = RecordEncoder(config, rates)
    events: list[dict[str, Any]] = []
    n_deals = max(n_events // 4, 1)  # ~4.6 events per simulated deal
    while len(events) < n_events:
        canonical = generate_deals(seed, n_deals, now_ms - HISTORY_DAYS * DAY_MS, config, now_ms=now_ms)
        if live:
            canonical = squeeze(canonical, now_ms, LIVE_MS)
        events = deliver(canonical, seed, DUPLICATE_RATE, REORDER_RATE)
        n_deals = int(n_deals * 1.3) + 1
    events = events[:n_events]
    records = []
    types: dict[str, int] = {}
    for event in events:
        key, value = encoder.encode("deals", event, now_ms)
        records.append(Record(partition_of(key, partitions), key, value))
        types[event["event_type"]] = types.get(event["event_type"], 0) + 1
    return Dataset(records, len({e["deal_id"] for e in events}), types)


def created_deals(n_deals: int, seed: int, partitions: int, templates: int = 2000) -> list[Record]:
    """One CREATED event for each of ``n_deals`` distinct deals (ids ``B-<seed>-<n>``), all
    in the last hour: ``n_deals`` open deals, none overdue.

    Generating and validating 500,000 simulated lifecycles takes minutes and gigabytes, so
    ``templates`` simulated CREATED events are validated once (the simulator's
    :class:`~agents.simulator.RecordEncoder`) and re-encoded under fresh deal and event ids.
    """
    config, rates = core_config()
    now_ms = int(time.time() * 1000)
    encoder = RecordEncoder(config, rates)
    codec = Codec.for_record("DealEvent")
    canonical = generate_deals(seed, templates, now_ms - HISTORY_DAYS * DAY_MS, config, now_ms=now_ms)
    avro = [
        encoder.check("deals", e, now_ms)
        for e in squeeze(canonical, now_ms, LIVE_MS)
        if e["event_type"] == "CREATED"
    ]
    out = []
    for i in range(n_deals):
        deal_id = f"B-{seed}-{i}"
        value = codec.encode({**avro[i % len(avro)], "deal_id": deal_id, "event_id": f"bench-{seed}-{i}"})
        key = deal_id.encode()
        out.append(Record(partition_of(key, partitions), key, value))
    return out


# --------------------------------------------------------------------------- the worker, in-process


@dataclass(slots=True)
class Message:
    """The fields of a Faust message that the worker's handlers read."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float | None = None

    @property
    def tp(self) -> TP:
        """Faust's topic-partition of the message (the worker follows input positions by it)."""
        return TP(self.topic, self.partition)


@dataclass(slots=True)
class Event:
    message: Message

    def ack(self) -> bool:
        """Faust marks the offset committable once the event is acked; nothing commits here."""
        return True


class _Stream:
    """What the batch handler calls on Faust's stream: which event it handles (RocksDB
    picks the partition of a table write from it); here there is no RocksDB store."""

    def _set_current_event(self, event: Any) -> None:
        pass


@dataclass(slots=True)
class _Ack:
    topic_partition: tuple[str, int | None]
    offset: int


@dataclass
class AckingProducer:
    """What ``TableWriter.flush`` sends to, acknowledging every record at once."""

    records: int = 0

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, partition: int | None, *_: Any
    ) -> asyncio.Future[_Ack]:
        self.records += 1
        fut: asyncio.Future[_Ack] = asyncio.get_running_loop().create_future()
        fut.set_result(_Ack((topic, partition), self.records))
        return fut


class InProcessWorker:
    """A :class:`SalesopsWorker` that is never started, driven batch by batch.

    ``clock`` is the worker's ``SALESOPS_CLOCK``: ``watermark`` for a replayed backfill
    (as the bench's worker run), ``wall`` for live data.
    """

    TOPIC = "bench.in-process.deal-events"

    def __init__(self, clock: str = "wall") -> None:
        data_dir = tempfile.mkdtemp(prefix="salesops-bench-")
        weakref.finalize(self, shutil.rmtree, data_dir, True)
        self.settings = Settings(
            app_id="salesops-bench-in-process",
            data_dir=data_dir,
            deal_events_topic=self.TOPIC,
            respondent_secret=Secret("bench-in-process-respondent-secret-0123456789"),
            clock=clock,
        )
        self.worker = SalesopsWorker(self.settings)
        self.producer = AckingProducer()
        self.worker.deal_writer.producer = self.producer
        self._offsets: dict[int, int] = {}  # next offset per partition, as Kafka numbers them
        self._runner: asyncio.Runner | None = None

    def events(self, records: Iterable[tuple[int, bytes | None, bytes | None]]) -> list[Event]:
        out = []
        for partition, key, value in records:
            offset = self._offsets.get(partition, 0)
            out.append(Event(Message(self.TOPIC, partition, offset, key, value)))
            self._offsets[partition] = offset + 1
        return out

    async def handle_batch(self, events: Sequence[Event]) -> None:
        """One fetched batch through the worker's own deal batch handler."""
        await self.worker.handle_deal_batch(_Stream(), events)

    def batches(self, records: Sequence[Record]) -> list[list[Event]]:
        """``records`` as the worker's agent gets them when the topic has more than a batch
        waiting: events in batches of the worker's batch size."""
        return [
            self.events((r.partition, r.key, r.value) for r in records[i : i + BATCH_MAX_EVENTS])
            for i in range(0, len(records), BATCH_MAX_EVENTS)
        ]

    async def handle_batches(self, batches: Sequence[Sequence[Event]]) -> None:
        for batch in batches:
            await self.handle_batch(batch)

    def run(self, batches: Sequence[Sequence[Event]]) -> None:
        """:meth:`handle_batches` from synchronous code (one event loop per instance)."""
        if self._runner is None:
            self._runner = asyncio.Runner()
        self._runner.run(self.handle_batches(batches))

    def handle(self, records: Sequence[Record]) -> None:
        self.run(self.batches(records))

    def decode_validate(self, value: bytes) -> DealEvent | Rejection:
        """A deal event decoded as the worker decodes it (``Intake.decode``) and validated
        with the worker's pipelines, rates and limits: the input of the pure step alone
        (:class:`CoreStep`).  The batch handler does this itself (``DealHandler._item``)."""
        w = self.worker
        handler = w.deal_handler
        decoded = w.intake.decode(handler.codec, Message(self.TOPIC, 0, 0, None, value))
        if isinstance(decoded, Rejection):
            return decoded
        return validate_deal(decoded, w.config, w.rates, w.intake.limits())

    def counted(self, outcome: str) -> float:
        value = self.worker.metrics.registry.get_sample_value(
            "salesops_events_total", {"topic": self.TOPIC, "outcome": outcome}
        )
        return value or 0.0

    @property
    def rejected(self) -> int:
        return int(self.counted("dead_letter"))

    @property
    def alerts(self) -> int:
        r = self.worker.metrics.registry
        return int(
            sum(
                s.value
                for metric in r.collect()
                if metric.name == "salesops_alerts"
                for s in metric.samples
                if s.name == "salesops_alerts_total"
            )
        )

    def table_values(self) -> list[bytes]:
        return [v for _k, v in self.worker.deals.items() if v]

    @property
    def stall_indexed(self) -> int:
        return sum(len(p.index) for p in self.worker.partitions.values())


class CoreStep:
    """The pure step alone (:func:`streams.deal_step.apply_batch`), each partition's share
    of a batch in one call, the table a dict of :class:`StoredDeal` objects: what the core
    costs without decode, validation, table bytes, Faust's table and the batch barrier.
    Time is each partition's event-time watermark (``SALESOPS_CLOCK=watermark``)."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.config, self.rates = core_config()
        self.tz = ZoneInfo(self.settings.timezone)
        self.table: dict[str, StoredDeal] = {}
        self.partitions: dict[int, DealPartition] = {}
        self.problems = 0

    def apply(self, batch: Sequence[tuple[int, DealEvent]]) -> None:
        by_partition: dict[int, list[DealEvent]] = {}
        for p, event in batch:
            by_partition.setdefault(p, []).append(event)
        for p, events in by_partition.items():
            part = self.partitions.get(p)
            if part is None:
                lateness_ms = self.settings.allowed_lateness_s * 1000
                part = self.partitions[p] = DealPartition(self.config, self.rates, self.tz, lateness_ms)
            outcome = apply_batch(part, self.table.get, events)
            self.table.update(outcome.changed)
            self.problems += len(outcome.problems)
