"""Validation of canonical input records: a valid event or a rejection with a reason.

Errors are data: an expected bad record is never an exception.  The same functions check
records decoded from Avro in the worker and lines parsed by the importer, so the CLI and
the dead-letter topic give the same reason codes (README, "Rejection reasons").

Inputs are loosely typed mappings: timestamps may be epoch milliseconds, ISO-8601 strings
or ``datetime`` objects (what Avro decoders return); amounts may be numbers, strings or
``Decimal``.  Output events are strictly typed (:mod:`streams.events`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from streams.events import (
    CENT,
    DAY_MS,
    DEAL_EVENT_TYPES,
    MAX_PULSE_QUESTIONS,
    DealEvent,
    PulseAnswer,
    SurveyInvitation,
    SurveyResponse,
)
from streams.pipelines import PipelineConfig, Rates

# Active ISO 4217 alphabetic codes (list one, 2024), plus the funds/precious-metal codes
# a CRM may legitimately carry are left out on purpose: deals are priced in currencies.
ISO_4217 = frozenset(
    [
        "AED",
        "AFN",
        "ALL",
        "AMD",
        "ANG",
        "AOA",
        "ARS",
        "AUD",
        "AWG",
        "AZN",
        "BAM",
        "BBD",
        "BDT",
        "BGN",
        "BHD",
        "BIF",
        "BMD",
        "BND",
        "BOB",
        "BRL",
        "BSD",
        "BTN",
        "BWP",
        "BYN",
        "BZD",
        "CAD",
        "CDF",
        "CHF",
        "CLP",
        "CNY",
        "COP",
        "CRC",
        "CUP",
        "CVE",
        "CZK",
        "DJF",
        "DKK",
        "DOP",
        "DZD",
        "EGP",
        "ERN",
        "ETB",
        "EUR",
        "FJD",
        "FKP",
        "GBP",
        "GEL",
        "GHS",
        "GIP",
        "GMD",
        "GNF",
        "GTQ",
        "GYD",
        "HKD",
        "HNL",
        "HTG",
        "HUF",
        "IDR",
        "ILS",
        "INR",
        "IQD",
        "IRR",
        "ISK",
        "JMD",
        "JOD",
        "JPY",
        "KES",
        "KGS",
        "KHR",
        "KMF",
        "KPW",
        "KRW",
        "KWD",
        "KYD",
        "KZT",
        "LAK",
        "LBP",
        "LKR",
        "LRD",
        "LSL",
        "LYD",
        "MAD",
        "MDL",
        "MGA",
        "MKD",
        "MMK",
        "MNT",
        "MOP",
        "MRU",
        "MUR",
        "MVR",
        "MWK",
        "MXN",
        "MYR",
        "MZN",
        "NAD",
        "NGN",
        "NIO",
        "NOK",
        "NPR",
        "NZD",
        "OMR",
        "PAB",
        "PEN",
        "PGK",
        "PHP",
        "PKR",
        "PLN",
        "PYG",
        "QAR",
        "RON",
        "RSD",
        "RUB",
        "RWF",
        "SAR",
        "SBD",
        "SCR",
        "SDG",
        "SEK",
        "SGD",
        "SHP",
        "SLE",
        "SOS",
        "SRD",
        "SSP",
        "STN",
        "SVC",
        "SYP",
        "SZL",
        "THB",
        "TJS",
        "TMT",
        "TND",
        "TOP",
        "TRY",
        "TTD",
        "TWD",
        "TZS",
        "UAH",
        "UGX",
        "USD",
        "UYU",
        "UZS",
        "VES",
        "VND",
        "VUV",
        "WST",
        "XAF",
        "XCD",
        "XCG",
        "XOF",
        "XPF",
        "YER",
        "ZAR",
        "ZMW",
        "ZWG",
    ]
)

# Reason codes; each is a label value of salesops_dead_letter_total{reason}.
REASONS = (
    "undecodable",
    "missing_field",
    "invalid_type",
    "invalid_enum",
    "negative_amount",
    "invalid_currency",
    "unknown_rate",
    "invalid_probability",
    "future_timestamp",
    "unknown_pipeline",
    "unknown_stage",
    "score_out_of_range",
    "invalid_scale",
    "too_many_questions",
    "negative_count",
    "field_too_long",
    "internal_error",
    "webhook_failed",
)
MAX_AMOUNT = Decimal("9999999999999999.99")  # decimal(18, 2)

# Maximum lengths (characters) of identifiers and dimensions: the contract that keeps every
# record, partial, aggregate row and API answer built from them bounded.  A longer value
# is rejected as ``field_too_long`` (README "Limits").  Every string field of an input
# record is listed; a field not listed here must not be added without a limit.
MAX_ID_LENGTH = 256  # identifiers: event, deal, response, respondent, owner
MAX_DIMENSION_LENGTH = 128  # dimensions and names: source, pipeline, stage, team, ...
MAX_CODE_LENGTH = 16  # short codes: event_type, currency (checked against their sets after)
DEAL_FIELD_LIMITS: dict[str, int] = {
    "event_id": MAX_ID_LENGTH,
    "deal_id": MAX_ID_LENGTH,
    "owner_id": MAX_ID_LENGTH,
    "source": MAX_DIMENSION_LENGTH,
    "pipeline": MAX_DIMENSION_LENGTH,
    "stage": MAX_DIMENSION_LENGTH,
    "team": MAX_DIMENSION_LENGTH,
    "region": MAX_DIMENSION_LENGTH,
    "event_type": MAX_CODE_LENGTH,
    "currency": MAX_CODE_LENGTH,
}
RESPONSE_FIELD_LIMITS: dict[str, int] = {
    "response_id": MAX_ID_LENGTH,
    "respondent": MAX_ID_LENGTH,
    "survey_id": MAX_DIMENSION_LENGTH,
    "team": MAX_DIMENSION_LENGTH,
    "department": MAX_DIMENSION_LENGTH,
}
ANSWER_FIELD_LIMITS: dict[str, int] = {"question_id": MAX_DIMENSION_LENGTH}
INVITATION_FIELD_LIMITS: dict[str, int] = {
    "survey_id": MAX_DIMENSION_LENGTH,
    "team": MAX_DIMENSION_LENGTH,
    "department": MAX_DIMENSION_LENGTH,
}
# how much of a bad value a rejection's detail quotes (details go to logs and dead letters)
_SHOWN_CHARS = 80


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class Limits:
    """What "plausible" means; built from settings."""

    now_ms: int
    max_future_ms: int = DAY_MS


class _Invalid(Exception):
    """Internal short-cut inside one validator; never escapes this module."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.rejection = Rejection(reason, detail)


def _shown(value: Any) -> str:
    """``repr`` of a bad value for a rejection detail, cut to a readable length."""
    text = repr(value)
    if len(text) <= _SHOWN_CHARS:
        return text
    return f"{text[:_SHOWN_CHARS]}... ({len(text)} characters)"


def _check_lengths(raw: Mapping[str, Any], limits: Mapping[str, int], prefix: str = "") -> None:
    """Reject the first string field longer than its limit (checked before anything else,
    so no other check quotes an oversized value)."""
    get = raw.get
    for name, limit in limits.items():
        value = get(name)
        if value.__class__ is str and len(value) > limit:
            raise _Invalid(
                "field_too_long",
                f"{prefix}{name} is {len(value)} characters long, the limit is {limit}",
            )


def _required(raw: Mapping[str, Any], name: str) -> Any:
    value = raw.get(name)
    # a blank string is missing: ``value.isspace()`` is ``value.strip() == ""`` for a
    # non-empty string, without building the stripped copy
    if value is None or (isinstance(value, str) and (value == "" or value.isspace())):
        raise _Invalid("missing_field", f"{name} is required")
    return value


def _optional_str(raw: Mapping[str, Any], name: str) -> str | None:
    value = raw.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _Invalid("invalid_type", f"{name} must be a string, got {type(value).__name__}")
    return value


def _str(raw: Mapping[str, Any], name: str) -> str:
    value = raw.get(name)
    if value.__class__ is str and value != "" and not value.isspace():
        return value  # the common case, decided without the calls below
    value = _required(raw, name)
    if not isinstance(value, str):
        raise _Invalid("invalid_type", f"{name} must be a string, got {type(value).__name__}")
    return value


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _datetime_ms(value: datetime) -> int:
    """Exact epoch ms of a datetime: integer arithmetic, since ``timestamp() * 1000`` goes
    through float seconds and loses 1 ms on some instants (2004-01-26T19:05:41.396Z)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // timedelta(milliseconds=1)


def to_epoch_ms(value: Any, name: str) -> int:
    """Epoch ms from an int/float (ms), a digit string, an ISO-8601 string or a datetime."""
    if isinstance(value, bool):
        raise _Invalid("invalid_type", f"{name} must be a timestamp, got a boolean")
    if isinstance(value, datetime):
        return _datetime_ms(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return int(text)
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise _Invalid("invalid_type", f"{name} is not ISO-8601 or epoch ms: {_shown(value)}") from None
        return _datetime_ms(parsed)
    raise _Invalid("invalid_type", f"{name} must be a timestamp, got {type(value).__name__}")


def _timestamp(raw: Mapping[str, Any], name: str, limits: Limits) -> int:
    ts = to_epoch_ms(_required(raw, name), name)
    if ts > limits.now_ms + limits.max_future_ms:
        raise _Invalid(
            "future_timestamp", f"{name} {ts} is more than {limits.max_future_ms} ms in the future"
        )
    if ts < 0:
        raise _Invalid("invalid_type", f"{name} {ts} is before 1970")
    return ts


def _int(raw: Mapping[str, Any], name: str, required: bool = True) -> int | None:
    value = raw.get(name)
    if value is None or value == "":
        if required:
            raise _Invalid("missing_field", f"{name} is required")
        return None
    if isinstance(value, bool):
        raise _Invalid("invalid_type", f"{name} must be an integer, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise _Invalid("invalid_type", f"{name} must be an integer, got {_shown(value)}")


def _amount(raw: Mapping[str, Any]) -> Decimal:
    value = _required(raw, "amount")
    if isinstance(value, bool):
        raise _Invalid("invalid_type", "amount must be a number, got a boolean")
    try:
        amount = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except InvalidOperation:
        raise _Invalid("invalid_type", f"amount is not a number: {_shown(value)}") from None
    if not amount.is_finite():
        raise _Invalid("invalid_type", f"amount is not finite: {_shown(value)}")
    if amount < 0:
        raise _Invalid("negative_amount", f"amount must be >= 0, got {amount}")
    if amount > MAX_AMOUNT:
        raise _Invalid("invalid_type", f"amount {amount} exceeds decimal(18,2)")
    return amount.quantize(CENT)


def _date(raw: Mapping[str, Any], name: str) -> date | None:
    value = raw.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip()[:10])
        except ValueError:
            raise _Invalid("invalid_type", f"{name} is not an ISO date: {_shown(value)}") from None
    raise _Invalid("invalid_type", f"{name} must be a date, got {type(value).__name__}")


def validate_deal(
    raw: Mapping[str, Any], config: PipelineConfig, rates: Rates, limits: Limits
) -> DealEvent | Rejection:
    """Check one deal event; unknown pipelines/stages follow ``config.unknown_stages``."""
    try:
        _check_lengths(raw, DEAL_FIELD_LIMITS)
        event_type = _str(raw, "event_type").upper()
        if event_type not in DEAL_EVENT_TYPES:
            raise _Invalid(
                "invalid_enum", f"event_type {event_type!r} is not one of {', '.join(DEAL_EVENT_TYPES)}"
            )
        currency = _str(raw, "currency").strip().upper()
        if currency not in ISO_4217:
            raise _Invalid("invalid_currency", f"currency {currency!r} is not an ISO 4217 code")
        if currency not in rates.rates:
            raise _Invalid("unknown_rate", f"no conversion rate for {currency} in the rates file")
        probability_raw = raw.get("probability")
        probability: float | None = None
        if probability_raw is not None and probability_raw != "":
            try:
                probability = float(probability_raw)
            except (TypeError, ValueError):
                raise _Invalid(
                    "invalid_type", f"probability is not a number: {_shown(probability_raw)}"
                ) from None
            if not 0.0 <= probability <= 1.0:
                raise _Invalid("invalid_probability", f"probability must be in 0..1, got {probability}")
        pipeline = _str(raw, "pipeline")
        stage = _str(raw, "stage")
        if config.unknown_stages == "dead-letter":
            known_pipeline, known_stage = config.knows(pipeline, stage)
            if not known_pipeline:
                raise _Invalid("unknown_pipeline", f"pipeline {pipeline!r} is not configured")
            if not known_stage:
                raise _Invalid("unknown_stage", f"stage {stage!r} is not configured in pipeline {pipeline!r}")
        return DealEvent(
            event_id=_str(raw, "event_id"),
            source=_str(raw, "source"),
            deal_id=_str(raw, "deal_id"),
            event_type=event_type,
            occurred_at=_timestamp(raw, "occurred_at", limits),
            pipeline=pipeline,
            stage=stage,
            amount=_amount(raw),
            currency=currency,
            owner_id=_optional_str(raw, "owner_id"),
            team=_optional_str(raw, "team"),
            region=_optional_str(raw, "region"),
            expected_close_date=_date(raw, "expected_close_date"),
            probability=probability,
        )
    except _Invalid as bad:
        return bad.rejection


def _answers(raw: Mapping[str, Any]) -> tuple[PulseAnswer, ...]:
    items = raw.get("answers") or []
    if not isinstance(items, list | tuple):
        raise _Invalid("invalid_type", "answers must be a list")
    if len(items) > MAX_PULSE_QUESTIONS:
        raise _Invalid(
            "too_many_questions", f"{len(items)} pulse answers, at most {MAX_PULSE_QUESTIONS} allowed"
        )
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise _Invalid("invalid_type", f"answers[{i}] must be an object")
        _check_lengths(item, ANSWER_FIELD_LIMITS, prefix=f"answers[{i}].")
        qid = _str(item, "question_id")
        score = _int(item, "score")
        scale_max = _int(item, "scale_max")
        assert score is not None and scale_max is not None
        if not 2 <= scale_max <= 10:
            raise _Invalid("invalid_scale", f"answers[{i}].scale_max must be 2..10, got {scale_max}")
        if not 1 <= score <= scale_max:
            raise _Invalid(
                "score_out_of_range", f"answers[{i}] ({qid}) score {score} is outside 1..{scale_max}"
            )
        out.append(PulseAnswer(qid, score, scale_max))
    if len({a.question_id for a in out}) != len(out):
        raise _Invalid("invalid_type", "answers name a question twice")
    return tuple(out)


def validate_response(raw: Mapping[str, Any], limits: Limits) -> SurveyResponse | Rejection:
    """Check one survey response (eNPS on 0-10 or 1-10, at most 10 pulse answers)."""
    try:
        _check_lengths(raw, RESPONSE_FIELD_LIMITS)
        scale_min = _int(raw, "enps_scale_min", required=False)
        scale_min = 0 if scale_min is None else scale_min
        if scale_min not in (0, 1):
            raise _Invalid("invalid_scale", f"enps_scale_min must be 0 or 1, got {scale_min}")
        score = _int(raw, "enps_score", required=False)
        if score is not None and not scale_min <= score <= 10:
            raise _Invalid("score_out_of_range", f"enps_score {score} is outside {scale_min}..10")
        return SurveyResponse(
            response_id=_str(raw, "response_id"),
            survey_id=_str(raw, "survey_id"),
            submitted_at=_timestamp(raw, "submitted_at", limits),
            respondent=_str(raw, "respondent"),
            team=_str(raw, "team"),
            department=_optional_str(raw, "department"),
            enps_score=score,
            enps_scale_min=scale_min,
            answers=_answers(raw),
        )
    except _Invalid as bad:
        return bad.rejection


def validate_invitation(raw: Mapping[str, Any], limits: Limits) -> SurveyInvitation | Rejection:
    try:
        _check_lengths(raw, INVITATION_FIELD_LIMITS)
        invited = _int(raw, "invited")
        assert invited is not None
        if invited < 0:
            raise _Invalid("negative_count", f"invited must be >= 0, got {invited}")
        return SurveyInvitation(
            survey_id=_str(raw, "survey_id"),
            team=_str(raw, "team"),
            department=_optional_str(raw, "department"),
            invited=invited,
            sent_at=_timestamp(raw, "sent_at", limits),
        )
    except _Invalid as bad:
        return bad.rejection


def deal_to_record(event: DealEvent) -> dict[str, Any]:
    """The Avro record (DealEvent.avsc field names) of a validated event."""
    return {
        "event_id": event.event_id,
        "source": event.source,
        "deal_id": event.deal_id,
        "event_type": event.event_type,
        "occurred_at": event.occurred_at,
        "pipeline": event.pipeline,
        "stage": event.stage,
        "amount": event.amount,
        "currency": event.currency,
        "owner_id": event.owner_id,
        "team": event.team,
        "region": event.region,
        "expected_close_date": event.expected_close_date,
        "probability": event.probability,
    }


def response_to_record(event: SurveyResponse) -> dict[str, Any]:
    return {
        "response_id": event.response_id,
        "survey_id": event.survey_id,
        "submitted_at": event.submitted_at,
        "respondent": event.respondent,
        "team": event.team,
        "department": event.department,
        "enps_score": event.enps_score,
        "enps_scale_min": event.enps_scale_min,
        "answers": [
            {"question_id": a.question_id, "score": a.score, "scale_max": a.scale_max} for a in event.answers
        ],
    }


def invitation_to_record(event: SurveyInvitation) -> dict[str, Any]:
    return {
        "survey_id": event.survey_id,
        "team": event.team,
        "department": event.department,
        "invited": event.invited,
        "sent_at": event.sent_at,
    }
