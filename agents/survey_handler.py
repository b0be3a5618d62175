"""The survey agent's handler: a fetched batch of responses and invitations, decoded and
validated, per partition through the pure step (:func:`streams.survey_step.apply_batch`),
durable before the batch's offsets commit."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any
from zoneinfo import ZoneInfo

from agents.batches import Intake
from agents.changelog import DurableTable, TableWriter
from agents.records import FramedRecord, FramedTable
from schemas.codec import Codec
from streams.events import SurveyInvitation, SurveyResponse
from streams.survey_step import SurveyPartition, apply_batch
from streams.validation import validate_invitation, validate_response

log = logging.getLogger(__name__)


class SurveyHandler:
    """Owns the pulse views of this worker's survey partitions, rebuilt from the tables
    after a restart or a rebalance."""

    def __init__(
        self,
        intake: Intake,
        tz: ZoneInfo,
        secret: bytes,
        responses: Any,
        invitations: Any,
        writer: TableWriter,
    ) -> None:
        self.intake = intake
        self.settings = intake.settings
        self.metrics = intake.metrics
        self.tz = tz
        self.secret = secret
        self.responses, self.invitations = responses, invitations
        self.writer = writer
        self.response_store = DurableTable(responses, writer)
        self.invitation_store = DurableTable(invitations, writer)
        self.response_codec = Codec.for_record("SurveyResponse")
        self.invitation_codec = Codec.for_record("SurveyInvitation")
        self.partitions: dict[int, SurveyPartition] = {}

    def partition(self, p: int) -> SurveyPartition:
        part = self.partitions.get(p)
        if part is None:
            part = self.partitions[p] = SurveyPartition.empty(self.tz)
        return part

    async def _item(self, msg: Any) -> SurveyResponse | SurveyInvitation | None:
        if msg.topic == self.settings.responses_topic:
            return await self.intake.accept(msg, self.response_codec, validate_response)
        return await self.intake.accept(msg, self.invitation_codec, validate_invitation)

    async def handle_batch(self, stream: Any, events: Sequence[Any]) -> None:
        """Decode and validate the batch, then apply each partition's share in one step;
        an item the step reports as a problem is dead-lettered alone."""
        async with self.intake.durable(stream, events, self.writer):
            by_partition: dict[int, list[tuple[Any, SurveyResponse | SurveyInvitation]]] = {}
            for event in events:
                msg = event.message
                await self.intake.check_position(msg)
                item = await self.intake.guarded(self._item, msg)
                if item is not None:
                    by_partition.setdefault(msg.partition, []).append((event, item))
            for p, entries in by_partition.items():
                # a RocksDB store picks the partition of a write from Faust's current event
                stream._set_current_event(entries[-1][0])
                self.writer.partition = p
                outcome = apply_batch(
                    self.partition(p),
                    FramedTable(self.response_store, p),
                    FramedTable(self.invitation_store, p),
                    [item for _event, item in entries],
                    self.secret,
                )
                failed = {problem.index for problem in outcome.problems}
                await self.intake.step_problems(entries, outcome.problems)
                for i, (event, _item) in enumerate(entries):
                    if i not in failed:
                        self.metrics.events.labels(event.message.topic, "ok").inc()

    def rebuild(self, actives: set[int]) -> None:
        """The pulse views of the active partitions, from the recovered tables alone."""
        self.partitions = {p: SurveyPartition.empty(self.tz) for p in actives}
        for table, restore in (
            (self.responses, SurveyPartition.restore_response),
            (self.invitations, SurveyPartition.restore_invitation),
        ):
            for _key, value in list(table.items()):
                if value:
                    rec = FramedRecord.from_bytes(value)
                    part = self.partitions.get(rec.partition)
                    if part is not None:
                        restore(part, rec.body)
