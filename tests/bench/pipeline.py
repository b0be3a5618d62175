"""The bench's data set and the worker's deal path without Faust.

:func:`build_dataset` makes a simulated CRM feed (``generate_deals`` + ``deliver`` with the
``salesops simulate`` defaults: 2% duplicates, 5% reordering), validated and encoded once
with the simulator's :class:`~agents.simulator.RecordEncoder`, each record already given
the partition Kafka's default partitioner picks for its key.

:class:`InProcessDeals` repeats ``SalesopsWorker.on_deal_message`` call for call
(decode, validate, watermark, table read, ``deals.apply``, stall state, table write,
``PipelineViews.replace``, ``StallIndex.track``) over a dict instead of a Faust table, so
its rate and its profile say what the pure core costs per event, and what is left of
the worker's rate is Kafka client and Faust overhead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from aiokafka.partitioner import murmur2

from agents.records import DealRecord
from agents.settings import Settings
from agents.simulator import RecordEncoder, deliver, generate_deals
from schemas.codec import Codec, DecodeError
from streams import deals as deal_core
from streams import stalled
from streams.clock import Watermark
from streams.events import DAY_MS, DealEvent
from streams.pipeline_views import PipelineViews
from streams.pipelines import (
    DEFAULT_PIPELINES_FILE,
    DEFAULT_RATES_FILE,
    PipelineConfig,
    Rates,
    load_pipelines,
    load_rates,
)
from streams.validation import Limits, Rejection, validate_deal

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


def created_only(n_deals: int, seed: int, partitions: int, now_ms: int | None = None) -> list[Record]:
    """One CREATED event for each of ``n_deals`` distinct deals, all in the last hour:
    ``n_deals`` open deals, none overdue."""
    config, rates = core_config()
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    encoder = RecordEncoder(config, rates)
    canonical = generate_deals(seed, n_deals, now_ms - HISTORY_DAYS * DAY_MS, config, now_ms=now_ms)
    out = []
    for event in squeeze(canonical, now_ms, LIVE_MS):
        if event["event_type"] == "CREATED":
            key, value = encoder.encode("deals", event, now_ms)
            out.append(Record(partition_of(key, partitions), key, value))
    return out


@dataclass
class _Partition:
    views: PipelineViews
    index: stalled.StallIndex
    watermark: Watermark
    firing: dict[str, dict[str, Any]] = field(default_factory=dict)


class InProcessDeals:
    """``SalesopsWorker.on_deal_message`` over a dict table; no Kafka, no Faust."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.config, self.rates = core_config()
        self.tz = ZoneInfo(self.settings.timezone)
        self.codec = Codec.for_record("DealEvent")
        self.alert_codec = Codec.for_record("Alert")
        self.table: dict[bytes, bytes] = {}
        self.partitions: dict[int, _Partition] = {}
        self.rejected = 0
        self.alerts = 0

    def limits(self) -> Limits:
        return Limits(now_ms=int(time.time() * 1000), max_future_ms=self.settings.max_future_s * 1000)

    def part(self, p: int) -> _Partition:
        state = self.partitions.get(p)
        if state is None:
            state = _Partition(
                PipelineViews(self.config, self.rates, self.tz),
                stalled.StallIndex(self.config),
                Watermark(self.settings.allowed_lateness_s * 1000),
            )
            self.partitions[p] = state
        return state

    def decode_validate(self, value: bytes) -> DealEvent | Rejection:
        try:
            decoded = self.codec.decode(value)
        except DecodeError as exc:
            return Rejection("undecodable", str(exc))
        return validate_deal(decoded, self.config, self.rates, self.limits())

    def handle(self, partition: int, value: bytes) -> None:
        result = self.decode_validate(value)
        if isinstance(result, Rejection):
            self.rejected += 1
            return
        self.apply(partition, result)

    def apply(self, partition: int, event: DealEvent) -> None:
        part = self.part(partition)
        part.watermark.observe(event.occurred_at)
        key = event.deal_id.encode()
        stored = self.table.get(key)
        old = DealRecord.from_bytes(stored) if stored else None
        new_deal = deal_core.apply(old.deal if old else None, event, self.config)
        if new_deal is None:
            return
        old_alert = stalled.AlertState.from_dict(old.alert) if old and old.alert else None
        alert, transitions = stalled.on_deal_change(
            old.deal if old else None, new_deal, old_alert, int(time.time() * 1000), self.config
        )
        alert_dict = alert.to_dict() if alert else None
        self.table[key] = DealRecord(partition, new_deal, alert_dict).to_bytes()
        part.views.replace(old.deal if old else None, new_deal)
        part.index.track(new_deal, alert)
        if alert_dict is not None and alert_dict["status"] == "FIRING":
            part.firing[new_deal.deal_id] = {"deal_id": new_deal.deal_id, **alert_dict}
        else:
            part.firing.pop(new_deal.deal_id, None)
        for t in transitions:
            self.alert_codec.encode(t.to_record())
            self.alerts += 1


class ObjectsOnly:
    """``deals.apply`` + ``PipelineViews.replace`` alone: Deal objects in a dict, no bytes."""

    def __init__(self) -> None:
        self.config, rates = core_config()
        self.rates = rates
        self.deals: dict[str, deal_core.Deal] = {}
        self.views: dict[int, PipelineViews] = {}

    def apply(self, partition: int, event: DealEvent) -> None:
        views = self.views.get(partition)
        if views is None:
            views = self.views[partition] = PipelineViews(self.config, self.rates, ZoneInfo("UTC"))
        old = self.deals.get(event.deal_id)
        new = deal_core.apply(old, event, self.config)
        if new is not None:
            self.deals[event.deal_id] = new
            views.replace(old, new)
