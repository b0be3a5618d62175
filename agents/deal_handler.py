"""The deal agent's handler: a fetched batch of deal events and stall checks, per partition
through the pure step (:func:`streams.deal_step.apply_batch`), each changed deal stored
once, alert transitions emitted, all of it durable before the batch's offsets commit."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import Any
from zoneinfo import ZoneInfo

from agents.batches import Intake
from agents.changelog import DurableTable, TableWriter
from agents.records import DealRecord
from schemas.codec import Codec
from sinks.metrics import observe_repeated
from streams import stalled
from streams.clock import Clock
from streams.deal_step import DealPartition, StoredDeal, apply_batch
from streams.events import DealEvent
from streams.pipelines import PipelineConfig, Rates
from streams.validation import validate_deal

log = logging.getLogger(__name__)
Item = DealEvent | stalled.DueCheck


class DealHandler:
    """Owns the derived state of this worker's deal partitions (:class:`DealPartition`:
    views, stall index, watermark, firing alerts), rebuilt from the table after a restart
    or a rebalance, never from counters."""

    def __init__(
        self,
        intake: Intake,
        config: PipelineConfig,
        rates: Rates,
        tz: ZoneInfo,
        table: Any,
        writer: TableWriter,
        stall_checks_topic: Any,
        clock: Clock | None,
    ) -> None:
        self.intake = intake
        self.settings = intake.settings
        self.metrics = intake.metrics
        self.config, self.rates, self.tz = config, rates, tz
        self.table = table
        self.writer = writer
        self.store = DurableTable(table, writer)
        self.stall_checks = stall_checks_topic
        self.clock = clock  # None: each partition's own watermark (replay)
        self.codec = Codec.for_record("DealEvent")
        self.partitions: dict[int, DealPartition] = {}

    def partition(self, p: int) -> DealPartition:
        part = self.partitions.get(p)
        if part is None:
            lateness_ms = self.settings.allowed_lateness_s * 1000
            part = DealPartition(self.config, self.rates, self.tz, lateness_ms, self.clock)
            self.partitions[p] = part
        return part

    def stored_deal(self, deal_id: str) -> StoredDeal | None:
        raw = self.store.get(deal_id.encode())
        if not raw:
            return None
        rec = DealRecord.from_bytes(raw)
        return StoredDeal(rec.deal, stalled.AlertState.from_dict(rec.alert))

    async def _item(self, msg: Any) -> Item | None:
        """The batch item of one record: a validated deal event or a stall check; None
        once a bad record is dead-lettered."""
        if msg.topic != self.settings.deal_events_topic:
            try:
                return stalled.DueCheck(**json.loads(msg.value))
            except (ValueError, TypeError) as exc:
                await self.intake.dead_letter(msg, "undecodable", f"bad stall check: {exc}")
                return None
        limits = self.intake.limits()
        return await self.intake.accept(
            msg, self.codec, lambda d, _: validate_deal(d, self.config, self.rates, limits)
        )

    async def handle_batch(self, stream: Any, events: Sequence[Any]) -> None:
        """Decode and validate the batch, apply each partition's share in one step, store
        each changed deal once, emit the alert transitions, and wait until all of it is
        acknowledged (:meth:`Intake.durable`)."""
        started = time.perf_counter()
        async with self.intake.durable(stream, events, self.writer):
            by_partition: dict[int, list[tuple[Any, Item]]] = {}
            for event in events:
                msg = event.message
                await self.intake.check_position(msg)
                try:
                    item = await self._item(msg)
                except Exception as exc:
                    await self.intake.internal_error(msg, exc)
                    continue
                if item is not None:
                    by_partition.setdefault(msg.partition, []).append((event, item))
            for p, entries in by_partition.items():
                await self._apply_partition(stream, p, entries)
        now = time.time()
        topic = self.settings.deal_events_topic
        per_event = (time.perf_counter() - started) / max(1, len(events))
        event_lag = self.metrics.event_lag.observe
        deal_events = 0
        for event in events:
            msg = event.message
            if msg.topic == topic:
                deal_events += 1
                if msg.timestamp:
                    event_lag(max(0.0, now - msg.timestamp))
        observe_repeated(self.metrics.processing.labels(topic), per_event, deal_events)

    async def _apply_partition(self, stream: Any, p: int, entries: list[tuple[Any, Item]]) -> None:
        outcome = apply_batch(self.partition(p), self.stored_deal, [item for _event, item in entries])
        await self.intake.step_problems(entries, outcome.problems)
        # a RocksDB store picks the partition of a write from Faust's current event
        stream._set_current_event(entries[-1][0])
        for deal_id, rec in outcome.changed.items():
            alert = rec.alert.to_dict() if rec.alert else None
            self.store.set(deal_id.encode(), DealRecord(p, rec.deal, alert).to_bytes(), p)
        for t in outcome.transitions:
            await self.intake.emit_alert(t.to_record())
        topic = self.settings.deal_events_topic
        if outcome.late:
            self.metrics.late_events.labels(topic).inc(outcome.late)
        ok = sum(1 for _e, item in entries if isinstance(item, DealEvent)) - sum(
            1 for pr in outcome.problems if isinstance(entries[pr.index][1], DealEvent)
        )
        if ok:
            self.metrics.events.labels(topic, "ok").inc(ok)

    async def emit_due_checks(self) -> None:
        """The stall checks that fell due, each to its deal's partition of the stall-check
        topic (the deal agent reads it with the deal events)."""
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

    def rebuild(self, actives: set[int]) -> None:
        """The derived state of the active partitions, from the recovered table alone."""
        self.partitions = {}
        for p in actives:
            self.partition(p)
        for _key, value in list(self.table.items()):
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
