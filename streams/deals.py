"""Deal state: an idempotent, order-independent fold of a deal's events.

Every :class:`~streams.events.DealEvent` carries the deal's *full* state after the change,
and delivery is at-least-once and unordered (CDC, webhooks, HubSpot's non-unique event
ids).  So a :class:`Deal` is defined as a pure function of the **set** of distinct events
seen for it, never of their arrival order:

* each distinct event becomes one :class:`Observation`, identified by
  ``(occurred_at, event_key)`` with ``event_key = f"{source}:{event_id}"``; the same event
  twice is one observation, while one event id at two instants is two observations
  (HubSpot reuses event ids);
* observations are kept sorted by ``(occurred_at, event_key)``;
* the deal's current attributes are those of the newest observation's event.

Two *different* payloads under one identity (a source bug) are resolved by keeping the
greater payload in a fixed total order (:func:`_payload_rank`), so even that case does not
depend on arrival order.

Stage history (:meth:`Deal.history`) is derived from the observations on demand: a new
:class:`StageVisit` starts whenever an observation's stage differs from the previous
observation's stage.  Closed and deleted observations still carry a stage and take part
in the history like any other; the *status* of each observation (open/won/lost/deleted)
is kept next to it, so views can tell a close from a stage move.

:meth:`Deal.to_bytes` is the compact, deterministic encoding for the Kafka-backed deals
table: two folds of the same event set serialize to identical bytes.
"""

from __future__ import annotations

import json
import sys
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from streams.events import CENT, DealEvent
from streams.pipelines import PipelineConfig

OPEN = "open"
WON = "won"
LOST = "lost"
DELETED = "deleted"
STATUSES = (OPEN, WON, LOST, DELETED)
CLOSED_STATUSES = (WON, LOST)

_FORMAT_VERSION = 1
# A deal keeps every distinct event it has seen, and its table record must fit one Kafka
# message (1 MB by default): at the field limits of streams/validation an observation
# takes well under 1 KB, so 1,000 of them stay far below it.  Events past the limit are
# rejected (dead letter ``deal_history_full``), never a record the broker refuses.
MAX_OBSERVATIONS = 1000


@dataclass(frozen=True, slots=True)
class Observation:
    """What one distinct event says about the deal: where it stood and what it was worth."""

    occurred_at: int
    event_key: str
    stage: str
    status: str
    amount: Decimal
    currency: str


@dataclass(frozen=True, slots=True)
class StageVisit:
    """A maximal run of consecutive observations in one stage; ``exited_at`` is the time
    of the first observation in another stage, None while this is the current visit."""

    stage: str
    entered_at: int
    exited_at: int | None


@dataclass(frozen=True, slots=True)
class Deal:
    """The state of one deal: its current attributes plus every distinct observation.

    The current attributes (``pipeline`` … ``probability``) are those of the newest event
    by ``(occurred_at, event_key)``; ``stage``, ``status``, ``amount`` and ``currency``
    always equal those of ``observations[-1]``.  Build deals with :func:`apply` or
    :func:`fold`, never by hand, so that these invariants hold.
    """

    deal_id: str
    pipeline: str
    stage: str
    status: str
    amount: Decimal
    currency: str
    owner_id: str | None
    team: str | None
    region: str | None
    expected_close_date: date | None
    probability: float | None
    observations: tuple[Observation, ...]

    @property
    def created_at(self) -> int:
        """Event time of the oldest observation (the first thing we know of the deal)."""
        return self.observations[0].occurred_at

    @property
    def is_open(self) -> bool:
        return self.status == OPEN

    @property
    def closed_at(self) -> int | None:
        """Time of :meth:`closing_observation`, None unless the deal is won or lost."""
        o = self.closing_observation()
        return None if o is None else o.occurred_at

    def closing_observation(self) -> Observation | None:
        """For a won or lost deal, the observation where it entered its final status: the
        first of the trailing run of observations with the current status (a deal won,
        then corrected to lost, closed when it was marked lost).  None otherwise."""
        if self.status not in CLOSED_STATUSES:
            return None
        obs = self.observations
        i = len(obs) - 1
        while i > 0 and obs[i - 1].status == self.status:
            i -= 1
        return obs[i]

    def history(self) -> tuple[StageVisit, ...]:
        """Stage visits in event-time order; the last one is the current visit."""
        visits: list[StageVisit] = []
        obs = self.observations
        start = obs[0]
        for o in obs[1:]:
            if o.stage != start.stage:
                visits.append(StageVisit(start.stage, start.occurred_at, o.occurred_at))
                start = o
        visits.append(StageVisit(start.stage, start.occurred_at, None))
        return tuple(visits)

    def current_visit(self) -> StageVisit:
        """The visit of the current stage (``history()[-1]``, without building the rest)."""
        obs = self.observations
        i = len(obs) - 1
        while i > 0 and obs[i - 1].stage == self.stage:
            i -= 1
        return StageVisit(self.stage, obs[i].occurred_at, None)

    def to_bytes(self) -> bytes:
        """Compact JSON, sorted keys, no whitespace; None attributes are omitted; Decimal as
        its exact string, date as ISO.  ``stage``/``status``/``amount``/``currency`` are not
        written: they are those of the newest observation.  Deterministic: equal deals give
        equal bytes."""
        doc: dict[str, object] = {
            "v": _FORMAT_VERSION,
            "deal_id": self.deal_id,
            "pipeline": self.pipeline,
            "obs": [
                [o.occurred_at, o.event_key, o.stage, o.status, str(o.amount), o.currency]
                for o in self.observations
            ],
        }
        if self.owner_id is not None:
            doc["owner_id"] = self.owner_id
        if self.team is not None:
            doc["team"] = self.team
        if self.region is not None:
            doc["region"] = self.region
        if self.expected_close_date is not None:
            doc["expected_close_date"] = self.expected_close_date.isoformat()
        if self.probability is not None:
            doc["probability"] = self.probability
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Deal:
        """Inverse of :meth:`to_bytes`; raises ValueError on an unknown format version."""
        doc = json.loads(data)
        if doc.get("v") != _FORMAT_VERSION:
            raise ValueError(f"unsupported deal encoding version {doc.get('v')!r}")
        amounts: dict[str, Decimal] = {}  # an amount usually repeats: share one object
        obs = []
        for t, k, s, st, a, c in doc["obs"]:
            amount = amounts.get(a)
            if amount is None:
                amount = amounts[a] = Decimal(a)
            obs.append(Observation(t, k, sys.intern(s), sys.intern(st), amount, sys.intern(c)))
        last = obs[-1]
        close = doc.get("expected_close_date")
        return cls(
            deal_id=doc["deal_id"],
            pipeline=sys.intern(doc["pipeline"]),
            stage=last.stage,
            status=last.status,
            amount=last.amount,
            currency=last.currency,
            owner_id=doc.get("owner_id"),
            team=doc.get("team"),
            region=doc.get("region"),
            expected_close_date=date.fromisoformat(close) if close is not None else None,
            probability=doc.get("probability"),
            observations=tuple(obs),
        )


def event_status(event: DealEvent, config: PipelineConfig) -> str:
    """Status after ``event``: DELETED -> deleted; WON or the pipeline's won stage -> won;
    LOST or its lost stage -> lost; anything else (CREATED, UPDATED, STAGE_CHANGED,
    RESTORED in an open or unknown stage) -> open.  The checks run in that order."""
    et = event.event_type
    if et == "DELETED":
        return DELETED
    pipeline = config.pipelines.get(event.pipeline)
    if et == "WON" or (pipeline is not None and event.stage == pipeline.won_stage):
        return WON
    if et == "LOST" or (pipeline is not None and event.stage == pipeline.lost_stage):
        return LOST
    return OPEN


def observe(event: DealEvent, config: PipelineConfig) -> Observation:
    """The observation ``event`` contributes to its deal.  The amount is quantized to cents,
    so that events equal as values (``Decimal("100") == Decimal("100.00")``) give equal
    observations and equal bytes whichever of them arrived first."""
    return Observation(
        event.occurred_at,
        f"{event.source}:{event.event_id}",
        sys.intern(event.stage),
        event_status(event, config),
        event.amount.quantize(CENT),
        sys.intern(event.currency),
    )


def _order_key(o: Observation) -> tuple[int, str]:
    return (o.occurred_at, o.event_key)


def _observation_payload(o: Observation) -> tuple[str, str, str, str]:
    return (o.stage, o.status, str(o.amount), o.currency)


def _attribute_payload(x: DealEvent | Deal) -> str:
    # repr gives one total order over None/str/date/float mixes without special cases.
    return repr((x.pipeline, x.owner_id, x.team, x.region, x.expected_close_date, x.probability))


def _payload_rank(o: Observation, attributes: str) -> tuple[tuple[str, str, str, str], str]:
    """Total order used only when two different payloads share one identity: the greater
    one wins, whichever arrived first."""
    return (_observation_payload(o), attributes)


def apply(deal: Deal | None, event: DealEvent, config: PipelineConfig) -> Deal | None:
    """Fold ``event`` into ``deal`` (None for a deal not seen yet).

    Returns the new state, or None when the event changes nothing: an exact duplicate, or
    a colliding payload that loses the tie-break.  The result depends only on the set of
    distinct events folded so far, so callers may store it without any ordering care.
    Raises ValueError if the event belongs to another deal.
    """
    new = observe(event, config)
    if deal is None:
        return _with(event, (new,))
    if event.deal_id != deal.deal_id:
        raise ValueError(f"event for deal {event.deal_id!r} applied to deal {deal.deal_id!r}")
    obs = deal.observations
    key = (new.occurred_at, new.event_key)
    i = bisect_left(obs, key, key=_order_key)
    n = len(obs)
    if i < n and _order_key(obs[i]) == key:
        # Same identity seen before: a duplicate, or (rarely) a conflicting payload.
        old = obs[i]
        if i == n - 1:
            ev_attrs, deal_attrs = _attribute_payload(event), _attribute_payload(deal)
            if _payload_rank(new, ev_attrs) <= _payload_rank(old, deal_attrs):
                return None
            return _with(event, (*obs[:i], new))
        if _observation_payload(new) <= _observation_payload(old):
            return None
        return _replace_observations(deal, (*obs[:i], new, *obs[i + 1 :]))
    if i == n:
        return _with(event, (*obs, new))
    return _replace_observations(deal, (*obs[:i], new, *obs[i:]))


def fold(events: Iterable[DealEvent], config: PipelineConfig) -> Deal:
    """The deal made of ``events`` (any order, duplicates allowed); ValueError if empty."""
    deal: Deal | None = None
    for ev in events:
        deal = apply(deal, ev, config) or deal
    if deal is None:
        raise ValueError("fold() needs at least one event")
    return deal


def _with(event: DealEvent, observations: tuple[Observation, ...]) -> Deal:
    """A deal whose current attributes come from ``event`` (the newest one)."""
    last = observations[-1]
    return Deal(
        event.deal_id,
        sys.intern(event.pipeline),
        last.stage,
        last.status,
        last.amount,
        last.currency,
        event.owner_id,
        event.team,
        event.region,
        event.expected_close_date,
        event.probability,
        observations,
    )


def _replace_observations(deal: Deal, observations: tuple[Observation, ...]) -> Deal:
    """``deal`` with an older observation added or replaced; the newest is unchanged."""
    return Deal(
        deal.deal_id,
        deal.pipeline,
        deal.stage,
        deal.status,
        deal.amount,
        deal.currency,
        deal.owner_id,
        deal.team,
        deal.region,
        deal.expected_close_date,
        deal.probability,
        observations,
    )
