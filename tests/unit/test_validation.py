"""Every rejection reason of the validators, and the accepted shapes of loose input."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from streams.events import DealEvent, SurveyInvitation, SurveyResponse
from streams.pipelines import load_pipelines, load_rates
from streams.validation import (
    ANSWER_FIELD_LIMITS,
    DEAL_FIELD_LIMITS,
    INVITATION_FIELD_LIMITS,
    MAX_CODE_LENGTH,
    MAX_DIMENSION_LENGTH,
    MAX_ID_LENGTH,
    REASONS,
    RESPONSE_FIELD_LIMITS,
    Limits,
    Rejection,
    validate_deal,
    validate_invitation,
    validate_response,
)

CONFIG = load_pipelines()
RATES = load_rates()
NOW = 1_800_000_000_000
LIMITS = Limits(now_ms=NOW)


def deal(**over: object) -> dict:
    raw = {
        "event_id": "e1",
        "source": "import",
        "deal_id": "D1",
        "event_type": "CREATED",
        "occurred_at": NOW - 1000,
        "pipeline": "default",
        "stage": "qualifiedtobuy",
        "amount": "1200.5",
        "currency": "eur",
    }
    raw.update(over)
    return raw


def response(**over: object) -> dict:
    raw = {
        "response_id": "r1",
        "survey_id": "s1",
        "submitted_at": "2027-01-15T10:00:00Z",
        "respondent": "emp-1",
        "team": "a",
        "enps_score": 9,
        "enps_scale_min": 0,
        "answers": [{"question_id": "q1", "score": 4, "scale_max": 5}],
    }
    raw.update(over)
    return raw


def test_a_valid_deal_is_normalised() -> None:
    event = validate_deal(deal(), CONFIG, RATES, LIMITS)
    assert isinstance(event, DealEvent)
    assert event.amount == Decimal("1200.50") and event.currency == "EUR" and event.occurred_at == NOW - 1000


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"deal_id": None}, "missing_field"),
        ({"deal_id": ""}, "missing_field"),
        ({"amount": "abc"}, "invalid_type"),
        ({"occurred_at": "yesterday"}, "invalid_type"),
        ({"event_type": "MERGED"}, "invalid_enum"),
        ({"amount": "-0.01"}, "negative_amount"),
        ({"currency": "EURO"}, "invalid_currency"),
        ({"currency": "CHF"}, "unknown_rate"),
        ({"probability": 1.5}, "invalid_probability"),
        ({"occurred_at": NOW + 2 * 86_400_000}, "future_timestamp"),
    ],
)
def test_each_deal_rejection_reason(over: dict, reason: str) -> None:
    result = validate_deal(deal(**over), CONFIG, RATES, LIMITS)
    assert isinstance(result, Rejection)
    assert result.reason == reason
    assert result.reason in REASONS and result.detail


def test_unknown_pipeline_and_stage_follow_the_configured_rule() -> None:
    accepted = validate_deal(deal(pipeline="partners", stage="intro"), CONFIG, RATES, LIMITS)
    assert isinstance(accepted, DealEvent)
    strict = type(CONFIG)(pipelines=CONFIG.pipelines, unknown_stages="dead-letter")
    assert validate_deal(deal(pipeline="partners"), strict, RATES, LIMITS) == Rejection(
        "unknown_pipeline", "pipeline 'partners' is not configured"
    )
    rejected = validate_deal(deal(stage="intro"), strict, RATES, LIMITS)
    assert isinstance(rejected, Rejection) and rejected.reason == "unknown_stage"


def test_timestamps_accept_epoch_ms_iso_and_datetime() -> None:
    iso = validate_deal(deal(occurred_at="2027-01-15T08:00:00+00:00"), CONFIG, RATES, LIMITS)
    dt = validate_deal(deal(occurred_at=datetime(2027, 1, 15, 8, tzinfo=UTC)), CONFIG, RATES, LIMITS)
    ms = validate_deal(
        deal(occurred_at=str(int(datetime(2027, 1, 15, 8, tzinfo=UTC).timestamp() * 1000))),
        CONFIG,
        RATES,
        LIMITS,
    )
    assert isinstance(iso, DealEvent) and isinstance(dt, DealEvent) and isinstance(ms, DealEvent)
    assert iso.occurred_at == dt.occurred_at == ms.occurred_at


def test_a_valid_response_on_both_scales() -> None:
    assert isinstance(validate_response(response(), LIMITS), SurveyResponse)
    one_to_ten = validate_response(response(enps_score=1, enps_scale_min=1), LIMITS)
    assert isinstance(one_to_ten, SurveyResponse) and one_to_ten.enps_scale_min == 1


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"enps_score": 11}, "score_out_of_range"),
        ({"enps_score": 0, "enps_scale_min": 1}, "score_out_of_range"),
        ({"enps_scale_min": 2}, "invalid_scale"),
        ({"answers": [{"question_id": "q1", "score": 6, "scale_max": 5}]}, "score_out_of_range"),
        ({"answers": [{"question_id": "q1", "score": 1, "scale_max": 11}]}, "invalid_scale"),
        (
            {"answers": [{"question_id": f"q{i}", "score": 3, "scale_max": 5} for i in range(11)]},
            "too_many_questions",
        ),
        ({"respondent": None}, "missing_field"),
        ({"submitted_at": NOW + 3 * 86_400_000}, "future_timestamp"),
    ],
)
def test_each_response_rejection_reason(over: dict, reason: str) -> None:
    result = validate_response(response(**over), LIMITS)
    assert isinstance(result, Rejection) and result.reason == reason


def test_ten_questions_are_allowed() -> None:
    answers = [{"question_id": f"q{i}", "score": 3, "scale_max": 5} for i in range(10)]
    assert isinstance(validate_response(response(answers=answers), LIMITS), SurveyResponse)


def test_invitations() -> None:
    ok = validate_invitation({"survey_id": "s", "team": "a", "invited": 12, "sent_at": NOW}, LIMITS)
    assert isinstance(ok, SurveyInvitation) and ok.invited == 12
    bad = validate_invitation({"survey_id": "s", "team": "a", "invited": -1, "sent_at": NOW}, LIMITS)
    assert bad == Rejection("negative_count", "invited must be >= 0, got -1")


# -- limits: ids 256 characters, dimensions 128, codes 16 --------------------------------


@pytest.mark.parametrize(
    ("field", "limit"),
    [
        ("event_id", MAX_ID_LENGTH),
        ("deal_id", MAX_ID_LENGTH),
        ("owner_id", MAX_ID_LENGTH),
        ("source", MAX_DIMENSION_LENGTH),
        ("pipeline", MAX_DIMENSION_LENGTH),
        ("stage", MAX_DIMENSION_LENGTH),
        ("team", MAX_DIMENSION_LENGTH),
        ("region", MAX_DIMENSION_LENGTH),
        ("event_type", MAX_CODE_LENGTH),
        ("currency", MAX_CODE_LENGTH),
    ],
)
def test_deal_fields_longer_than_their_limit_are_field_too_long(field: str, limit: int) -> None:
    # one character over the limit is rejected, naming the field, its length and the limit
    result = validate_deal(deal(**{field: "x" * (limit + 1)}), CONFIG, RATES, LIMITS)
    assert result == Rejection(
        "field_too_long", f"{field} is {limit + 1} characters long, the limit is {limit}"
    )


@pytest.mark.parametrize("field", ["event_id", "deal_id", "owner_id", "source", "team", "region"])
def test_deal_fields_at_their_limit_are_accepted(field: str) -> None:
    limit = DEAL_FIELD_LIMITS[field]
    event = validate_deal(deal(**{field: "é" * limit}), CONFIG, RATES, LIMITS)
    assert isinstance(event, DealEvent) and getattr(event, field) == "é" * limit


def test_the_reported_poison_owner_is_rejected_before_any_other_check() -> None:
    # 300,000 characters: also an invalid currency, but the length is checked first and the
    # detail does not quote the value
    result = validate_deal(deal(owner_id="o" * 300_000, currency="?" * 300_000), CONFIG, RATES, LIMITS)
    assert isinstance(result, Rejection) and result.reason == "field_too_long"
    assert len(result.detail) < 100


@pytest.mark.parametrize(
    ("field", "limit"),
    [
        ("response_id", MAX_ID_LENGTH),
        ("respondent", MAX_ID_LENGTH),
        ("survey_id", MAX_DIMENSION_LENGTH),
        ("team", MAX_DIMENSION_LENGTH),
        ("department", MAX_DIMENSION_LENGTH),
    ],
)
def test_response_fields_longer_than_their_limit_are_field_too_long(field: str, limit: int) -> None:
    assert isinstance(validate_response(response(**{field: "x" * limit}), LIMITS), SurveyResponse)
    result = validate_response(response(**{field: "x" * (limit + 1)}), LIMITS)
    assert result == Rejection(
        "field_too_long", f"{field} is {limit + 1} characters long, the limit is {limit}"
    )


def test_question_ids_longer_than_the_limit_are_field_too_long() -> None:
    long_q = "q" * (MAX_DIMENSION_LENGTH + 1)
    answers = [
        {"question_id": "q1", "score": 3, "scale_max": 5},
        {"question_id": long_q, "score": 3, "scale_max": 5},
    ]
    result = validate_response(response(answers=answers), LIMITS)
    n, limit = MAX_DIMENSION_LENGTH + 1, MAX_DIMENSION_LENGTH
    assert result == Rejection(
        "field_too_long", f"answers[1].question_id is {n} characters long, the limit is {limit}"
    )


@pytest.mark.parametrize("field", ["survey_id", "team", "department"])
def test_invitation_fields_longer_than_their_limit_are_field_too_long(field: str) -> None:
    raw = {
        "survey_id": "s",
        "team": "a",
        "invited": 3,
        "sent_at": NOW,
        field: "x" * (MAX_DIMENSION_LENGTH + 1),
    }
    result = validate_invitation(raw, LIMITS)
    assert isinstance(result, Rejection) and result.reason == "field_too_long" and field in result.detail


def test_every_string_field_of_every_input_schema_has_a_limit() -> None:
    # a new string field in an .avsc must get a limit here, or it is an unbounded input
    import json

    from schemas.codec import load_schema_json

    def string_fields(fields: list[dict]) -> set[str]:
        out = set()
        for f in fields:
            types = f["type"] if isinstance(f["type"], list) else [f["type"]]
            if "string" in types:
                out.add(f["name"])
        return out

    def schema_fields(name: str) -> list[dict]:
        return list(json.loads(load_schema_json(name))["fields"])

    # event_type is an Avro enum, limited too because the importer hands over strings
    assert string_fields(schema_fields("DealEvent")) == set(DEAL_FIELD_LIMITS) - {"event_type"}
    response_fields = schema_fields("SurveyResponse")
    assert string_fields(response_fields) == set(RESPONSE_FIELD_LIMITS)
    answers = next(f for f in response_fields if f["name"] == "answers")["type"]["items"]["fields"]
    assert string_fields(answers) == set(ANSWER_FIELD_LIMITS)
    assert string_fields(schema_fields("SurveyInvitation")) == set(INVITATION_FIELD_LIMITS)


def test_details_quote_bad_values_shortened() -> None:
    result = validate_deal(deal(amount="1" * 10_000 + "x"), CONFIG, RATES, LIMITS)
    assert isinstance(result, Rejection) and result.reason == "invalid_type"
    assert len(result.detail) < 150 and "10003 characters" in result.detail


def test_timestamps_convert_to_exact_milliseconds() -> None:
    from datetime import UTC, datetime

    from streams.validation import to_epoch_ms

    # 2004-01-26T19:05:41.396Z is 1075143941396 ms; through float seconds it became ...395
    assert to_epoch_ms("2004-01-26T19:05:41.396Z", "t") == 1_075_143_941_396
    assert to_epoch_ms(datetime(2004, 1, 26, 19, 5, 41, 396_000, tzinfo=UTC), "t") == 1_075_143_941_396
    assert to_epoch_ms("1969-12-31T23:59:59.999Z", "t") == -1
