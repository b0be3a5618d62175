"""Canonical input events, as the core sees them after decoding and validation.

Timestamps are integer epoch milliseconds (UTC): Avro ``timestamp-millis`` without the
float-seconds detour Faust uses, so event-time arithmetic is exact.  Money stays a
:class:`~decimal.Decimal` until a view converts it to integer minor units of the
reporting currency.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

DEAL_EVENT_TYPES = ("CREATED", "UPDATED", "STAGE_CHANGED", "WON", "LOST", "DELETED", "RESTORED")
MAX_PULSE_QUESTIONS = 10
DAY_MS = 86_400_000
# amounts are decimal(18,2) on the wire: 100 and 100.00 are one amount, stored as 100.00
CENT = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class DealEvent:
    """One change of a deal, carrying the deal's full state after the change."""

    event_id: str
    source: str
    deal_id: str
    event_type: str
    occurred_at: int
    pipeline: str
    stage: str
    amount: Decimal
    currency: str
    owner_id: str | None = None
    team: str | None = None
    region: str | None = None
    expected_close_date: date | None = None
    probability: float | None = None


@dataclass(frozen=True, slots=True)
class PulseAnswer:
    question_id: str
    score: int
    scale_max: int


@dataclass(frozen=True, slots=True)
class SurveyResponse:
    """One submitted response; ``respondent`` is pseudonymous and must never be output."""

    response_id: str
    survey_id: str
    submitted_at: int
    respondent: str
    team: str
    department: str | None = None
    enps_score: int | None = None
    enps_scale_min: int = 0
    answers: tuple[PulseAnswer, ...] = ()


@dataclass(frozen=True, slots=True)
class SurveyInvitation:
    survey_id: str
    team: str
    department: str | None
    invited: int
    sent_at: int
