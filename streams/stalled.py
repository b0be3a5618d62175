"""Stalled-deal alerts: when an open deal has sat in its stage past the stage's threshold.

A deal is *stalled* when ``now - entered_at`` of its current stage visit reaches the
``stalled_after_days`` of that (pipeline, stage) (Pipedrive's "rotting in N days").  The
alert fires once per stage visit and resolves when the deal moves, closes or is deleted.

Detection never scans every deal: each partition keeps a :class:`StallIndex`, a min-heap
of due times, so a timer tick costs ``O(k log n)`` for ``k`` due deals.  The decisions are
pure functions (:func:`on_check`, :func:`on_deal_change`) from (deal, alert state, time,
config) to (new alert state, transitions); the worker stores the :class:`AlertState` in the
deal's table record, so deal and alert state are recovered together after a crash and
reprocessing a check or a change produces no second transition.

Identity: an alert is one stage visit, ``stalled:{deal_id}:{stage}:{entered_at}``.  A deal
that re-enters a stage gets a new ``entered_at``, hence a new alert that can fire again;
a visit whose alert has fired (and possibly resolved) never fires again -- receivers drop
repeats of ``(alert_id, status)`` anyway.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, Protocol

from streams.events import DAY_MS
from streams.pipelines import PipelineConfig

KIND = "STALLED_DEAL"
UNIT = "days"  # of an alert record's value and threshold
FIRING = "FIRING"
RESOLVED = "RESOLVED"
ALERT_STATUSES = (FIRING, RESOLVED)


class StageVisitLike(Protocol):
    """A deal's stay in one stage (``streams.deals.StageVisit``)."""

    @property
    def stage(self) -> str: ...
    @property
    def entered_at(self) -> int: ...
    @property
    def exited_at(self) -> int | None: ...


class DealLike(Protocol):
    """What this module reads of a deal (``streams.deals.Deal``), read-only."""

    @property
    def deal_id(self) -> str: ...
    @property
    def pipeline(self) -> str: ...
    @property
    def stage(self) -> str: ...
    @property
    def status(self) -> str: ...  # "open" | "won" | "lost" | "deleted"
    @property
    def amount(self) -> Decimal: ...
    @property
    def currency(self) -> str: ...
    @property
    def owner_id(self) -> str | None: ...
    @property
    def is_open(self) -> bool: ...
    def current_visit(self) -> StageVisitLike | None: ...


# --------------------------------------------------------------------------- thresholds


def alert_id(deal_id: str, stage: str, entered_at: int) -> str:
    """Stable identity of the stalled alert of one stage visit."""
    return f"stalled:{deal_id}:{stage}:{entered_at}"


def threshold_days(config: PipelineConfig, pipeline: str, stage: str) -> float | None:
    """The stage's ``stalled_after_days``; None for closed stages, unknown pipelines or
    stages, and open stages without a threshold (they never stall)."""
    p = config.get(pipeline)
    s = p.stage(stage) if p is not None else None
    return s.stalled_after_days if s is not None else None


def due_at(config: PipelineConfig, pipeline: str, stage: str, entered_at: int) -> int | None:
    """Epoch ms at which a visit that began at ``entered_at`` becomes stalled, or None.

    Fractional days are rounded to the nearest millisecond; the deal is stalled *at* this
    instant (``now >= due``), not only after it.
    """
    days = threshold_days(config, pipeline, stage)
    if days is None:
        return None
    return int(entered_at) + round(days * DAY_MS)


# --------------------------------------------------------------------------- alert state


@dataclass(frozen=True, slots=True)
class AlertState:
    """The alert of a deal's latest alerted stage visit, kept in the deal's table record.

    Besides the alert id, status and times it carries the visit it is about (pipeline, stage,
    entered_at), so a RESOLVED transition describes exactly what FIRING described even when
    the deal has since moved to another stage or pipeline.
    """

    alert_id: str
    status: str  # FIRING | RESOLVED
    pipeline: str
    stage: str
    entered_at: int
    fired_at: int
    resolved_at: int | None = None

    def __post_init__(self) -> None:
        if self.status not in ALERT_STATUSES:
            raise ValueError(f"alert status must be one of {ALERT_STATUSES}, got {self.status!r}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (str and int values only)."""
        return {
            "alert_id": self.alert_id,
            "status": self.status,
            "pipeline": self.pipeline,
            "stage": self.stage,
            "entered_at": self.entered_at,
            "fired_at": self.fired_at,
            "resolved_at": self.resolved_at,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> AlertState | None:
        """Inverse of :meth:`to_dict`; None in, None out (a deal that never alerted)."""
        if raw is None:
            return None
        resolved = raw.get("resolved_at")
        return cls(
            alert_id=str(raw["alert_id"]),
            status=str(raw["status"]),
            pipeline=str(raw["pipeline"]),
            stage=str(raw["stage"]),
            entered_at=int(raw["entered_at"]),
            fired_at=int(raw["fired_at"]),
            resolved_at=None if resolved is None else int(resolved),
        )


def _visit_alert_id(deal: DealLike) -> str | None:
    """Alert id of the deal's current visit, None when it is closed/deleted or has no visit."""
    if not deal.is_open:
        return None
    visit = deal.current_visit()
    if visit is None:
        return None
    return alert_id(deal.deal_id, visit.stage, visit.entered_at)


# --------------------------------------------------------------------------- transitions


def _fmt_days(days: float) -> str:
    return f"{days:g}"


@dataclass(frozen=True, slots=True)
class AlertTransition:
    """One alert event to publish (alerts topic, webhook); ``to_record`` is the Avro record."""

    alert_id: str
    status: str
    deal_id: str
    pipeline: str
    stage: str
    owner_id: str | None
    amount: Decimal
    currency: str
    days_in_stage: float
    threshold_days: float | None
    fired_at: int
    resolved_at: int | None
    summary: str
    kind: str = KIND

    def to_record(self) -> dict[str, Any]:
        """The ``schemas/Alert.avsc`` record; money as a decimal string, times in epoch ms.

        ``value`` and ``days_in_stage`` both hold the days in stage (``days_in_stage`` for
        readers of version 1 of the contract); ``threshold`` and ``unit`` say days."""
        return {
            "alert_id": self.alert_id,
            "kind": self.kind,
            "status": self.status,
            "subject": self.deal_id,
            "pipeline": self.pipeline,
            "stage": self.stage,
            "owner_id": self.owner_id,
            "amount": str(self.amount),
            "currency": self.currency,
            "days_in_stage": self.days_in_stage,
            "threshold": self.threshold_days,
            "value": self.days_in_stage,
            "unit": UNIT,
            "fired_at": self.fired_at,
            "resolved_at": self.resolved_at,
            "summary": self.summary,
        }


def _describe(deal: DealLike, pipeline: str, stage: str) -> str:
    owner = f"owner {deal.owner_id}" if deal.owner_id else "no owner"
    return f"Deal {deal.deal_id} ({pipeline}/{stage}, {deal.amount:,.2f} {deal.currency}, {owner})"


def _resolution_reason(deal: DealLike | None) -> str:
    if deal is None or deal.status == "deleted":
        return "deleted"
    if not deal.is_open:
        return deal.status
    return f"moved to {deal.stage}"


def _transition(
    state: AlertState, deal: DealLike, now_ms: int, config: PipelineConfig, summary: str
) -> AlertTransition:
    return AlertTransition(
        alert_id=state.alert_id,
        status=state.status,
        deal_id=deal.deal_id,
        pipeline=state.pipeline,
        stage=state.stage,
        owner_id=deal.owner_id,
        amount=deal.amount,
        currency=deal.currency,
        days_in_stage=round((now_ms - state.entered_at) / DAY_MS, 3),
        threshold_days=threshold_days(config, state.pipeline, state.stage),
        fired_at=state.fired_at,
        resolved_at=state.resolved_at,
        summary=summary,
    )


def _resolve(
    state: AlertState, old: DealLike | None, new: DealLike | None, now_ms: int, config: PipelineConfig
) -> tuple[AlertState, AlertTransition]:
    resolved = replace(state, status=RESOLVED, resolved_at=now_ms)
    # amount/owner as last known: the new snapshot unless the deal is gone
    deal = new if new is not None else old
    assert deal is not None, "a FIRING state always lives in a deal record"
    days = (now_ms - state.entered_at) / DAY_MS
    summary = (
        f"{_describe(deal, state.pipeline, state.stage)} no longer stalled: "
        f"{_resolution_reason(new)} after {days:.1f} days in stage"
    )
    return resolved, _transition(resolved, deal, now_ms, config, summary)


@dataclass(frozen=True, slots=True)
class DueCheck:
    """A deal whose current visit was due for a stall check; ``StallIndex.pop_due`` output."""

    deal_id: str
    stage: str
    entered_at: int
    due_at: int


def on_check(
    deal: DealLike | None,
    state: AlertState | None,
    check: DueCheck,
    now_ms: int,
    config: PipelineConfig,
) -> tuple[AlertState | None, list[AlertTransition]]:
    """Decide whether a popped check fires; pure.

    Fires (FIRING, ``fired_at = now_ms``) exactly when the deal is still open in the checked
    visit (same stage and ``entered_at``), ``now_ms >= due`` under the *current* config
    (a threshold raised since the check was scheduled postpones it; the worker re-tracks),
    and this visit's alert has not fired yet.  Anything else -- deal gone, moved, closed,
    not yet due, already FIRING/RESOLVED (a duplicate after a restart) -- returns the state
    unchanged and no transition.  If the state still holds a FIRING alert of an *earlier*
    visit (a missed change), that one is resolved first, so no alert is left open forever.
    """
    if deal is None:
        return state, []
    aid = alert_id(check.deal_id, check.stage, check.entered_at)
    if _visit_alert_id(deal) != aid or (state is not None and state.alert_id == aid):
        return state, []
    due = due_at(config, deal.pipeline, check.stage, check.entered_at)
    if due is None or now_ms < due:
        return state, []
    transitions: list[AlertTransition] = []
    if state is not None and state.status == FIRING:
        _, resolved = _resolve(state, deal, deal, now_ms, config)
        transitions.append(resolved)
    fired = AlertState(
        alert_id=aid,
        status=FIRING,
        pipeline=deal.pipeline,
        stage=check.stage,
        entered_at=check.entered_at,
        fired_at=now_ms,
    )
    days = (now_ms - check.entered_at) / DAY_MS
    threshold = threshold_days(config, deal.pipeline, check.stage)
    assert threshold is not None  # due is not None
    summary = (
        f"{_describe(deal, deal.pipeline, check.stage)} stalled: "
        f"{days:.1f} days in stage, threshold {_fmt_days(threshold)}"
    )
    transitions.append(_transition(fired, deal, now_ms, config, summary))
    return fired, transitions


def on_deal_change(
    old_deal: DealLike | None,
    new_deal: DealLike | None,
    state: AlertState | None,
    now_ms: int,
    config: PipelineConfig,
) -> tuple[AlertState | None, list[AlertTransition]]:
    """Resolve a FIRING alert whose visit the deal has left; pure.

    ``new_deal`` is None when the deal was removed from the table.  RESOLVED
    (``resolved_at = now_ms``; pass the change's event time for deterministic replays) when
    the state is FIRING and the new deal is closed, deleted, gone, or in another visit
    (other stage, or the same stage re-entered).  A change within the visit (amount, owner)
    and any change when nothing is FIRING -- including reprocessing the same change after a
    restart, when the state is already RESOLVED -- return the state unchanged and no
    transition.  Firing is never decided here: only :func:`on_check` fires.
    """
    if state is None or state.status != FIRING:
        return state, []
    if new_deal is not None and _visit_alert_id(new_deal) == state.alert_id:
        return state, []
    resolved, transition = _resolve(state, old_deal, new_deal, now_ms, config)
    return resolved, [transition]


# --------------------------------------------------------------------------- index

#: (deal, its alert state) pairs as read back from the deals table after recovery.
DealsWithStates = Iterable[tuple[DealLike, AlertState | None]]


@dataclass(frozen=True, slots=True)
class _Entry:
    stage: str
    entered_at: int
    due_at: int


class StallIndex:
    """Due times of the stall-checkable deals of one partition.

    A min-heap of ``(due_at, deal_id, stage, entered_at)`` with lazy deletion: ``_entries``
    maps each indexed deal to its one live entry, heap items that no longer match it are
    skipped when they reach the top, and the heap is compacted when stale items outnumber
    live ones (so memory stays ``O(n)`` under constant churn).

    Contract: call :meth:`track` after every change of a deal and after applying
    :func:`on_check`; a deal is indexed iff it is open, its stage has a threshold and its
    current visit's alert has not fired.  :meth:`pop_due` hands each due deal out once and
    un-indexes it.
    """

    def __init__(self, config: PipelineConfig) -> None:
        self.config = config
        self._heap: list[tuple[int, str, str, int]] = []
        self._entries: dict[str, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, deal_id: object) -> bool:
        return deal_id in self._entries

    def due_of(self, deal_id: str) -> int | None:
        """When the deal's current visit is due, None if it is not indexed."""
        entry = self._entries.get(deal_id)
        return entry.due_at if entry is not None else None

    def track(self, deal: DealLike, state: AlertState | None) -> None:
        """(Re)index a deal after a change: scheduled, or removed when it cannot stall."""
        aid = _visit_alert_id(deal)
        visit = deal.current_visit()
        if aid is None or visit is None or (state is not None and state.alert_id == aid):
            self.untrack(deal.deal_id)
            return
        due = due_at(self.config, deal.pipeline, visit.stage, visit.entered_at)
        if due is None:
            self.untrack(deal.deal_id)
            return
        entry = _Entry(visit.stage, visit.entered_at, due)
        if self._entries.get(deal.deal_id) == entry:
            return  # an amount or owner change: keep the heap item, push no duplicate
        self._entries[deal.deal_id] = entry
        heapq.heappush(self._heap, (due, deal.deal_id, visit.stage, visit.entered_at))
        self._maybe_compact()

    def untrack(self, deal_id: str) -> None:
        """Forget a deal; its heap item becomes stale and is skipped later."""
        if self._entries.pop(deal_id, None) is not None:
            self._maybe_compact()

    def _is_live(self, item: tuple[int, str, str, int]) -> bool:
        due, deal_id, stage, entered_at = item
        return self._entries.get(deal_id) == _Entry(stage, entered_at, due)

    def pop_due(self, now_ms: int) -> list[DueCheck]:
        """Checks due at ``now_ms`` (``due_at <= now_ms``), earliest first, ties by deal id.

        Each is removed from the index; ``O(k log n)`` for ``k`` due plus the stale items met.
        """
        out: list[DueCheck] = []
        while self._heap and self._heap[0][0] <= now_ms:
            item = heapq.heappop(self._heap)
            if self._is_live(item):
                due, deal_id, stage, entered_at = item
                del self._entries[deal_id]
                out.append(DueCheck(due_at=due, deal_id=deal_id, stage=stage, entered_at=entered_at))
        return out

    def _maybe_compact(self) -> None:
        if len(self._heap) > 64 and len(self._heap) > 2 * len(self._entries):
            self._heap = [(e.due_at, d, e.stage, e.entered_at) for d, e in self._entries.items()]
            heapq.heapify(self._heap)
