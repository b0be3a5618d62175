"""One deal partition's step: a batch of events and stall checks in, changes out.

The worker, the benchmark and the tests all call :func:`apply_batch`; nothing else
decides what a deal event or a stall check does.  Contract:

* ``items`` are one partition's validated :class:`~streams.events.DealEvent` s and
  :class:`~streams.stalled.DueCheck` s in offset order; ``stored(deal_id)`` reads the deals
  table as it was before the batch.  Later items of the batch see the earlier ones'
  results (the step keeps its own overlay), so a batch gives exactly the state the same
  items give one by one.
* The result holds each changed deal's *final* record of the batch once (the worker writes
  one table record per deal per batch), every alert transition in order, the number of
  late events, and per-item rejections and errors as data (item index, reason, detail):
  the worker dead-letters those items and goes on.
* The partition's derived state (:class:`DealPartition`: views, stall index, watermark,
  FIRING alerts) is updated in place as the items are applied; after a restart it is
  rebuilt from the table with :meth:`DealPartition.restore`, never from counters.
* Time comes from the partition's clock: the wall clock live, or the partition's own
  event-time watermark in replays (``SALESOPS_CLOCK=watermark``), chosen once when the
  partition is created.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from streams import deals as deal_core
from streams import stalled
from streams.clock import Clock, Watermark
from streams.deals import Deal
from streams.events import DealEvent
from streams.pipeline_views import PipelineViews
from streams.pipelines import PipelineConfig, Rates


@dataclass(frozen=True, slots=True)
class StoredDeal:
    """What the deals table holds for one deal: its state and its alert state."""

    deal: Deal
    alert: stalled.AlertState | None = None


@dataclass(frozen=True, slots=True)
class ItemProblem:
    """An item the step did not apply: ``reason`` is a dead-letter reason."""

    index: int
    reason: str
    detail: str


@dataclass
class BatchOutcome:
    changed: dict[str, StoredDeal] = field(default_factory=dict)
    transitions: list[stalled.AlertTransition] = field(default_factory=list)
    late: int = 0
    problems: list[ItemProblem] = field(default_factory=list)


class DealPartition:
    """The derived state a worker keeps for one deal partition it actively owns."""

    def __init__(
        self,
        config: PipelineConfig,
        rates: Rates,
        tz: ZoneInfo,
        allowed_lateness_ms: int,
        wall_clock: Clock | None = None,
    ) -> None:
        self.config = config
        self.views = PipelineViews(config, rates, tz)
        self.index = stalled.StallIndex(config)
        self.watermark = Watermark(allowed_lateness_ms)
        # live: the wall clock; replay (no wall clock given): this partition's watermark
        self.clock: Clock = wall_clock if wall_clock is not None else self.watermark
        self.firing: dict[str, dict[str, Any]] = {}
        self.dirty = True  # its partial has changed since it was last published

    def _track(self, deal: Deal, alert: stalled.AlertState | None) -> None:
        self.index.track(deal, alert)
        if alert is not None and alert.status == stalled.FIRING:
            self.firing[deal.deal_id] = {"deal_id": deal.deal_id, **alert.to_dict()}
        else:
            self.firing.pop(deal.deal_id, None)

    def restore(self, record: StoredDeal) -> None:
        """Fold one recovered table record into the views, index and watermark."""
        self.views.replace(None, record.deal)
        self._track(record.deal, record.alert)
        if record.deal.observations:
            self.watermark.observe(record.deal.observations[-1].occurred_at)
        self.dirty = True

    def due_checks(self) -> list[stalled.DueCheck]:
        """Stall checks due by this partition's clock (they come back as batch items)."""
        return self.index.pop_due(self.clock.now_ms())


def apply_batch(
    part: DealPartition,
    stored: Callable[[str], StoredDeal | None],
    items: Sequence[DealEvent | stalled.DueCheck],
) -> BatchOutcome:
    """Apply one partition's batch in order; see the module docstring for the contract."""
    out = BatchOutcome()
    config = part.config

    def current(deal_id: str) -> StoredDeal | None:
        return out.changed.get(deal_id) or stored(deal_id)

    for i, item in enumerate(items):
        try:
            if isinstance(item, stalled.DueCheck):
                _check(part, current(item.deal_id), item, out)
                continue
            if part.watermark.observe(item.occurred_at):
                out.late += 1
            old = current(item.deal_id)
            new = deal_core.apply(old.deal if old else None, item, config)
            if new is None:
                continue
            if len(new.observations) > deal_core.MAX_OBSERVATIONS:
                detail = f"deal {item.deal_id!r} already has {deal_core.MAX_OBSERVATIONS} distinct events"
                out.problems.append(ItemProblem(i, "deal_history_full", detail))
                continue
            alert, transitions = stalled.on_deal_change(
                old.deal if old else None,
                new,
                old.alert if old else None,
                part.clock.now_ms(),
                config,
            )
            part.views.replace(old.deal if old else None, new)
            _store(part, StoredDeal(new, alert), transitions, out)
        except Exception as exc:  # a bug on one item must not stop the partition
            out.problems.append(ItemProblem(i, "internal_error", f"{type(exc).__name__}: {exc}"))
    return out


def _check(part: DealPartition, rec: StoredDeal | None, check: stalled.DueCheck, out: BatchOutcome) -> None:
    if rec is None:
        return
    alert, transitions = stalled.on_check(rec.deal, rec.alert, check, part.clock.now_ms(), part.config)
    if transitions:
        _store(part, StoredDeal(rec.deal, alert), transitions, out)


def _store(
    part: DealPartition,
    record: StoredDeal,
    transitions: list[stalled.AlertTransition],
    out: BatchOutcome,
) -> None:
    out.changed[record.deal.deal_id] = record
    out.transitions.extend(transitions)
    part._track(record.deal, record.alert)
    part.dirty = True
