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
table: two folds of the same event set serialize to identical bytes.  Format 2 is binary
(see :meth:`Deal.to_bytes`); :meth:`Deal.from_bytes` still reads format 1, the JSON
document records already in changelogs hold, telling them apart by the first byte.
"""

from __future__ import annotations

import json
import struct
import sys
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import NamedTuple

from streams.events import CENT, DealEvent
from streams.pipelines import PipelineConfig

OPEN = "open"
WON = "won"
LOST = "lost"
DELETED = "deleted"
STATUSES = (OPEN, WON, LOST, DELETED)
CLOSED_STATUSES = (WON, LOST)

_JSON_VERSION = 1  # format 1: a JSON document (always starts with "{")
_BINARY_VERSION = 2  # format 2: binary, first byte 2
_HEAD = struct.Struct("<BBH")  # version, flags, observations
_OWNER, _TEAM, _REGION, _CLOSE_DATE, _PROBABILITY = 1, 2, 4, 8, 16  # flags: optional parts present
_OPTIONAL_TEXTS = [bin(f).count("1") for f in range(8)]  # strings present for flags & 7
_STATUS_CODE = {s: i for i, s in enumerate(STATUSES)}
_BODY_FORMATS: dict[tuple[int, int], struct.Struct] = {}
# A deal keeps every distinct event it has seen, and its table record must fit one Kafka
# message (1 MB by default): at the field limits of streams/validation an observation
# takes well under 1 KB, so 1,000 of them stay far below it.  Events past the limit are
# rejected (dead letter ``deal_history_full``), never a record the broker refuses.
MAX_OBSERVATIONS = 1000


class Observation(NamedTuple):
    """What one distinct event says about the deal: where it stood and what it was worth.

    A named tuple rather than a frozen dataclass: one is built for every observation of
    every deal read from the table, and a tuple is built three times faster."""

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
        """The deal's table bytes, format 2 (little-endian, no padding)::

            B version (2)  B flags  H observations n
            [i expected_close_date, proleptic ordinal]  (flag 8)
            [d probability]                             (flag 16)
            n x q occurred_at   n x B status (index in STATUSES)
            then UTF-8 text, its strings separated by NUL:
            deal_id, pipeline, [owner_id], [team], [region]   (flags 1, 2, 4: present)
            and per observation: event_key, stage, amount, currency

        An amount is its exact decimal string (``Decimal`` reads it back with its exponent);
        a stage, amount or currency equal to the previous observation's is written empty.
        ``stage``/``status``/``amount``/``currency`` of the deal are those of its newest
        observation and not written.  Deterministic: equal deals give equal bytes.  A deal
        this cannot hold (a NUL or empty string, a time beyond int64; never one built from
        validated events) is written in format 1."""
        try:
            return self._binary()
        except (struct.error, OverflowError, _Unrepresentable):
            return self._json()

    def _binary(self) -> bytes:
        obs = self.observations
        n = len(obs)
        texts = [self.deal_id, self.pipeline]
        numbers: list[object] = []
        flags = 0
        for flag, value in ((_OWNER, self.owner_id), (_TEAM, self.team), (_REGION, self.region)):
            if value is not None:
                flags |= flag
                texts.append(value)
        if self.expected_close_date is not None:
            flags |= _CLOSE_DATE
            numbers.append(self.expected_close_date.toordinal())
        if self.probability is not None:
            flags |= _PROBABILITY
            numbers.append(self.probability)
        numbers.extend(o.occurred_at for o in obs)
        numbers.extend(_STATUS_CODE[o.status] for o in obs)
        stage = amount = currency = ""
        for o in obs:
            a = str(o.amount)
            if not (o.stage and o.currency):
                raise _Unrepresentable("an empty stage or currency")
            texts += (
                o.event_key,
                "" if o.stage == stage else o.stage,
                "" if a == amount else a,
                "" if o.currency == currency else o.currency,
            )
            stage, amount, currency = o.stage, a, o.currency
        text = "\0".join(texts)
        if text.count("\0") != len(texts) - 1:
            raise _Unrepresentable("a NUL in a string")
        return b"".join((_body_format(flags, n).pack(_BINARY_VERSION, flags, n, *numbers), text.encode()))

    def _json(self) -> bytes:
        """Format 1: compact JSON, sorted keys, no whitespace; None attributes omitted;
        Decimal as its exact string, date as ISO; no stage/status/amount/currency."""
        doc: dict[str, object] = {
            "v": _JSON_VERSION,
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
        """Inverse of :meth:`to_bytes`, for format 2 and the JSON of format 1 alike;
        raises ValueError on anything else."""
        if data[:1] == b"{":
            return cls._from_json(data)
        if data[:1] != bytes((_BINARY_VERSION,)):
            raise ValueError(f"unsupported deal encoding version {data[:1]!r}")
        try:
            return cls._from_binary(data)
        except (struct.error, IndexError, UnicodeDecodeError) as exc:
            raise ValueError(f"corrupt deal record: {exc}") from exc

    @classmethod
    def _from_binary(cls, data: bytes) -> Deal:
        _, flags, n = _HEAD.unpack_from(data)
        body = _body_format(flags, n)
        numbers = body.unpack_from(data)
        texts = data[body.size :].decode().split("\0")
        n_optional = _OPTIONAL_TEXTS[flags & 7]
        if len(texts) != 2 + n_optional + 4 * n or n == 0:
            raise ValueError(f"corrupt deal record: {len(texts)} strings for {n} observations")
        optional = iter(texts[2 : 2 + n_optional])
        owner = next(optional) if flags & _OWNER else None
        team = next(optional) if flags & _TEAM else None
        region = next(optional) if flags & _REGION else None
        i = 3
        close = None
        if flags & _CLOSE_DATE:
            close = date.fromordinal(numbers[i])
            i += 1
        probability = None
        if flags & _PROBABILITY:
            probability = numbers[i]
            i += 1
        obs = []
        stage = currency = ""
        amount = Decimal(0)
        j = 2 + n_optional
        for t, status in zip(numbers[i : i + n], numbers[i + n :], strict=True):
            key, s, a, c = texts[j : j + 4]
            j += 4
            if s:
                stage = sys.intern(s)
            if a:
                amount = Decimal(a)
            if c:
                currency = sys.intern(c)
            obs.append(Observation(t, key, stage, STATUSES[status], amount, currency))
        last = obs[-1]
        return cls(
            deal_id=texts[0],
            pipeline=sys.intern(texts[1]),
            stage=last.stage,
            status=last.status,
            amount=last.amount,
            currency=last.currency,
            owner_id=owner,
            team=team,
            region=region,
            expected_close_date=close,
            probability=probability,
            observations=tuple(obs),
        )

    @classmethod
    def _from_json(cls, data: bytes) -> Deal:
        doc = json.loads(data)
        if doc.get("v") != _JSON_VERSION:
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


class _Unrepresentable(Exception):
    """A deal format 2 cannot hold; it is written in format 1."""


def _body_format(flags: int, n: int) -> struct.Struct:
    """The struct of a format-2 record's numbers (see :meth:`Deal.to_bytes`)."""
    key = (flags, n)
    fmt = _BODY_FORMATS.get(key)
    if fmt is None:
        optional = ("i" if flags & _CLOSE_DATE else "") + ("d" if flags & _PROBABILITY else "")
        fmt = struct.Struct(f"<BBH{optional}{n}q{n}B")
        if len(_BODY_FORMATS) >= 4096:
            _BODY_FORMATS.clear()
        _BODY_FORMATS[key] = fmt
    return fmt


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
