"""The wire format: single-object encoding, byte-compatible implementations, evolution."""

from __future__ import annotations

import json
import random
from datetime import UTC, date, datetime, timedelta
from decimal import Context, Decimal
from zoneinfo import ZoneInfo

import pytest

from schemas.codec import (
    HEADER_LEN,
    MAGIC,
    Codec,
    DecodeError,
    ReferenceCodec,
    fingerprint,
    load_schema_json,
    writer_versions,
)

DEAL = {
    "event_id": "e1",
    "source": "hubspot",
    "deal_id": "D1",
    "event_type": "STAGE_CHANGED",
    "occurred_at": datetime(2017, 11, 3, 12, 30, tzinfo=UTC),
    "pipeline": "default",
    "stage": "contractsent",
    "amount": Decimal("12000.50"),
    "currency": "EUR",
    "owner_id": "u-3",
    "team": None,
    "region": "EMEA",
    "expected_close_date": date(2017, 12, 31),
    "probability": 0.75,
}
ALL = [
    "DealEvent",
    "SurveyResponse",
    "SurveyInvitation",
    "DeadLetter",
    "Alert",
    "PipelineAggregate",
    "FunnelAggregate",
    "StageAgingAggregate",
    "MovementAggregate",
    "EnpsAggregate",
    "PulseAggregate",
]


@pytest.mark.parametrize("name", ALL)
def test_every_field_of_every_contract_is_documented(name: str) -> None:
    def fields(schema: dict) -> list[dict]:
        out = list(schema.get("fields", []))
        for f in schema.get("fields", []):
            t = f["type"]
            if isinstance(t, dict) and t.get("type") == "array" and isinstance(t["items"], dict):
                out += fields(t["items"])
        return out

    schema = json.loads(load_schema_json(name))
    assert schema["doc"]
    assert all(f.get("doc") for f in fields(schema)), [f["name"] for f in fields(schema) if not f.get("doc")]


def test_header_is_magic_plus_crc64_fingerprint_of_the_canonical_form() -> None:
    data = Codec.for_record("DealEvent").encode(DEAL)
    assert data[:2] == MAGIC == b"\xc3\x01"
    assert data[2:HEADER_LEN] == fingerprint(load_schema_json("DealEvent"))


def test_hot_path_and_reference_codecs_write_the_same_bytes_and_read_each_other() -> None:
    fast, ref = Codec.for_record("DealEvent"), ReferenceCodec(load_schema_json("DealEvent"))
    a, b = fast.encode(DEAL), ref.encode(DEAL)
    assert a == b
    assert fast.decode(b)["amount"] == Decimal("12000.50")
    back = ref.decode(a)
    assert back["deal_id"] == "D1" and back["expected_close_date"] == date(2017, 12, 31)
    assert int(back["occurred_at"].timestamp() * 1000) == int(DEAL["occurred_at"].timestamp() * 1000)


def test_round_trip_keeps_every_field() -> None:
    codec = Codec.for_record("DealEvent")
    assert codec.decode(codec.encode(DEAL)) == DEAL


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"deal_id": "D1"}', "single-object"),
        (b"\xc3\x01" + b"\x00" * 8 + b"\x02", "unknown writer schema"),
        (b"\xc3", "single-object"),
    ],
)
def test_bytes_that_are_not_a_known_record_raise_decode_error(data: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        Codec.for_record("DealEvent").decode(data)


def test_truncated_and_padded_bodies_are_decode_errors() -> None:
    codec = Codec.for_record("DealEvent")
    good = codec.encode(DEAL)
    with pytest.raises(DecodeError, match="corrupt"):
        codec.decode(good[:-5])
    with pytest.raises(DecodeError, match="trailing"):
        codec.decode(good + b"\x00")


def test_a_reader_with_an_added_optional_field_reads_old_records() -> None:
    old_json = load_schema_json("DealEvent")
    new = json.loads(old_json)
    new["fields"].append(
        {"name": "forecast_category", "type": ["null", "string"], "default": None, "doc": "new"}
    )
    new_json = json.dumps(new)
    old_bytes = Codec(old_json).encode(DEAL)
    reader = Codec(new_json, writer_versions=[old_json])
    record = reader.decode(old_bytes)
    assert record["forecast_category"] is None
    assert record["deal_id"] == "D1" and record["amount"] == Decimal("12000.50")
    # and its own records carry the new fingerprint
    assert (
        reader.decode(reader.encode({**DEAL, "forecast_category": "commit"}))["forecast_category"] == "commit"
    )
    # a reader that was not told about the old version refuses it clearly
    with pytest.raises(DecodeError, match="unknown writer schema"):
        Codec(new_json).decode(old_bytes)


# -- money aggregates: decimal(38,2), evolved from decimal(18,2) --------------------------

MONEY_AGGREGATES = ["PipelineAggregate", "FunnelAggregate", "MovementAggregate"]


def _decimal_fields(schema: dict) -> list[dict]:
    return [
        f["type"]
        for f in schema["fields"]
        if isinstance(f["type"], dict) and f["type"].get("logicalType") == "decimal"
    ]


@pytest.mark.parametrize("name", MONEY_AGGREGATES)
def test_aggregate_money_is_decimal_38_2_and_version_1_is_registered(name: str) -> None:
    current = json.loads(load_schema_json(name))
    assert {(d["precision"], d["scale"]) for d in _decimal_fields(current)} == {(38, 2)}
    (v1,) = writer_versions(name)
    assert {(d["precision"], d["scale"]) for d in _decimal_fields(json.loads(v1))} == {(18, 2)}
    # only the decimal precision (and docs) changed: same Parsing Canonical Form
    assert fingerprint(v1) == fingerprint(load_schema_json(name))


PIPELINE_ROW = {
    "dimension": "stage",
    "pipeline": "default",
    "value_of": "contractsent",
    "deals": 2,
    "value": Decimal("9999999999999999.99"),  # the largest decimal(18,2)
    "weighted_value": Decimal("0.01"),
    "currency": "USD",
    "as_of": datetime(2026, 11, 3, tzinfo=UTC),
}


def test_records_written_with_version_1_are_read_by_the_current_version() -> None:
    # written by a version-1 producer, with either library, read by both current readers
    v1 = writer_versions("PipelineAggregate")[0]
    for old_bytes in (Codec(v1).encode(PIPELINE_ROW), ReferenceCodec(v1).encode(PIPELINE_ROW)):
        for reader in (Codec.for_record("PipelineAggregate"), ReferenceCodec.for_record("PipelineAggregate")):
            record = reader.decode(old_bytes)
            assert record["value"] == Decimal("9999999999999999.99")
            assert record["weighted_value"] == Decimal("0.01") and record["deals"] == 2


def test_two_maximum_amounts_publish_exactly_where_decimal_18_2_failed() -> None:
    # The largest legal amount in USD and in JPY (validation allows decimal(18,2)), open in
    # one stage: 999,999,999,999,999,999 + 6,700,000,000,000,000 cents (JPY at 0.0067,
    # half-even) = 1,006,699,999,999,999,999 cents; weighted at the stage's 0.9:
    # 899,999,999,999,999,999.1 -> ...999 and 6,030,000,000,000,000 -> 906,029,999,999,999,999
    from agents.outputs import pipeline_records
    from sinks.redis_snapshot import _exact
    from streams.deals import fold
    from streams.events import DealEvent
    from streams.pipeline_views import PipelineViews, pipeline_rows
    from streams.pipelines import load_pipelines, load_rates

    config, rates = load_pipelines(), load_rates()
    views = PipelineViews(config, rates, ZoneInfo("UTC"))
    for deal_id, currency in (("M1", "USD"), ("M2", "JPY")):
        event = DealEvent(
            "e1", "crm", deal_id, "CREATED", 1_700_000_000_000, "default", "contractsent",
            Decimal("9999999999999999.99"), currency,
        )  # fmt: skip
        views.replace(None, fold([event], config))
    rows = pipeline_rows(views.partial())
    records = pipeline_records(rows, "USD")
    rec = records["stage:default:contractsent"]
    assert rec["value"] == Decimal("10066999999999999.99")
    assert rec["weighted_value"] == Decimal("9060299999999999.99")
    # the contract holds it, both libraries agree, and it reads back to the cent
    codec = Codec.for_record("PipelineAggregate")
    data = codec.encode({**rec, "as_of": 1_700_000_000_000})
    assert data == ReferenceCodec.for_record("PipelineAggregate").encode(
        {**rec, "as_of": datetime.fromtimestamp(1_700_000_000, tz=UTC)}
    )
    back = codec.decode(data)
    assert (back["value"], back["weighted_value"]) == (
        Decimal("10066999999999999.99"),
        Decimal("9060299999999999.99"),
    )
    # version 1 could not: this is the "decimal precision is bigger than allowed" failure
    with pytest.raises(ValueError, match="precision"):
        Codec(writer_versions("PipelineAggregate")[0]).encode({**rec, "as_of": 1_700_000_000_000})
    # the API / Redis JSON: exact decimal strings and integer cents, never a float
    api_row = next(r for r in rows["by_stage"] if r["stage"] == "contractsent")
    assert json.loads(json.dumps(api_row))["value"] == "10066999999999999.99"
    assert api_row["value_cents"] == 1_006_699_999_999_999_999
    assert json.loads(json.dumps(rec, default=_exact))["value"] == "10066999999999999.99"


def test_money_sums_far_beyond_decimal_18_2_fit_the_contract() -> None:
    # 10**20 maximum amounts at rate 1: 10**20 x 999,999,999,999,999,999 cents < 10**38
    huge = (10**20) * 999_999_999_999_999_999
    from agents.outputs import _money

    value = _money(huge)
    assert value == Decimal(huge) / 100 and len(value.as_tuple().digits) == 38
    codec = Codec.for_record("MovementAggregate")
    names = ("start", "new", "reopened", "increased", "decreased", "won", "lost", "deleted", "end")
    record = {"period": "2026-11", "pipeline": "p", "currency": "USD", "as_of": 0}
    record.update({n: value for n in names})
    assert codec.decode(codec.encode(record))["end"] == value


# -- Alert: version 2 adds value and unit --------------------------------------------------

ALERT_V1_RECORD = {
    "alert_id": "stalled:D-17:proposal:1700000000000",
    "kind": "STALLED_DEAL",
    "status": "FIRING",
    "subject": "D-17",
    "pipeline": "enterprise",
    "stage": "proposal",
    "owner_id": "u-3",
    "amount": "12000",
    "currency": "EUR",
    "days_in_stage": 23.4,
    "threshold": 21.0,
    "fired_at": datetime(2023, 12, 8, tzinfo=UTC),
    "resolved_at": None,
    "summary": "Deal D-17 stalled",
}
ALERT_V2_RECORD = {**ALERT_V1_RECORD, "value": 23.4, "unit": "days"}


def test_alert_version_2_adds_value_and_unit_with_defaults_and_keeps_version_1() -> None:
    (v1,) = writer_versions("Alert")
    old, new = json.loads(v1), json.loads(load_schema_json("Alert"))
    added = [f for f in new["fields"] if f["name"] not in {g["name"] for g in old["fields"]}]
    assert [(f["name"], f["type"], f["default"]) for f in added] == [
        ("value", ["null", "double"], None),
        ("unit", ["null", "string"], None),
    ]
    assert fingerprint(v1) != fingerprint(load_schema_json("Alert"))  # a new writer version
    fast, ref = Codec.for_record("Alert"), ReferenceCodec.for_record("Alert")
    assert fast.encode(ALERT_V2_RECORD) == ref.encode(ALERT_V2_RECORD)


def test_alert_records_of_version_1_are_read_by_the_current_version() -> None:
    v1 = writer_versions("Alert")[0]
    for old_bytes in (Codec(v1).encode(ALERT_V1_RECORD), ReferenceCodec(v1).encode(ALERT_V1_RECORD)):
        for reader in (Codec.for_record("Alert"), ReferenceCodec.for_record("Alert")):
            assert reader.decode(old_bytes) == {**ALERT_V1_RECORD, "value": None, "unit": None}


def test_alert_records_of_version_2_are_read_by_a_version_1_reader_given_the_new_schema() -> None:
    # a consumer still on version 1 that ships the new .avsc as a writer version resolves
    # new records into its own shape (value and unit dropped)
    v1, v2 = writer_versions("Alert")[0], load_schema_json("Alert")
    new_bytes = Codec.for_record("Alert").encode(ALERT_V2_RECORD)
    for reader in (Codec(v1, writer_versions=[v2]), ReferenceCodec(v1, writer_versions=[v2])):
        assert reader.decode(new_bytes) == ALERT_V1_RECORD
    # without it the fingerprint is unknown: refused clearly, not misread
    with pytest.raises(DecodeError, match="unknown writer schema"):
        Codec(v1).decode(new_bytes)


# -- the hot path: decode_plain equals the reference decode --------------------------------

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MS = timedelta(milliseconds=1)


def random_value(t: object, rng: random.Random) -> object:
    """A random value of Avro type ``t`` (the types the salesops contracts use), with
    logical types as the reference library takes them."""
    if isinstance(t, list):
        return random_value(rng.choice(t), rng)
    if isinstance(t, str):
        t = {"type": t}
    assert isinstance(t, dict)
    kind, logical = t["type"], t.get("logicalType")
    if logical == "timestamp-millis":
        # up to 9999-12-31: every instant both libraries can represent
        return EPOCH + rng.randrange(0, 253_402_300_800_000) * MS
    if logical == "date":
        return date.fromordinal(rng.randrange(1, date.max.toordinal()))
    if logical == "decimal":
        digits = rng.randrange(1, t["precision"] + 1)
        unscaled = rng.randrange(-(10**digits) + 1, 10**digits)
        return Decimal(unscaled).scaleb(-t.get("scale", 0), Context(prec=t["precision"]))
    if kind == "null":
        return None
    if kind == "string":
        return "".join(rng.choice("ab-é€😀 ") for _ in range(rng.randrange(0, 12)))
    if kind == "bytes":
        return rng.randbytes(rng.randrange(0, 12))
    if kind in ("int", "long"):
        bits = 31 if kind == "int" else 63
        return rng.randrange(-(2**bits), 2**bits)
    if kind == "double":
        return rng.choice([0.0, 1.0, 0.35, -1e300, rng.random()])
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "enum":
        return rng.choice(t["symbols"])
    if kind == "array":
        return [random_value(t["items"], rng) for _ in range(rng.randrange(0, 4))]
    if kind == "record":
        return {f["name"]: random_value(f["type"], rng) for f in t["fields"]}
    raise AssertionError(f"no generator for {t}")


def timestamp_fields(schema: dict) -> list[str]:
    def is_ts(t: object) -> bool:
        if isinstance(t, list):
            return any(is_ts(x) for x in t)
        return isinstance(t, dict) and t.get("logicalType") == "timestamp-millis"

    return [f["name"] for f in schema["fields"] if is_ts(f["type"])]


@pytest.mark.parametrize("name", ALL)
def test_decode_plain_equals_the_reference_decode_over_random_records(name: str) -> None:
    schema_json = load_schema_json(name)
    schema = json.loads(schema_json)
    fast, ref = Codec.for_record(name), ReferenceCodec.for_record(name)
    stamps = timestamp_fields(schema)
    rng = random.Random(name)
    for _ in range(400):
        record = random_value(schema, rng)
        data = ref.encode(record)
        assert fast.encode(record) == data
        expected = ref.decode(data)
        plain = fast.decode_plain(data)
        # timestamps are the exact epoch ms of the reference's datetime; the rest is equal
        for field in stamps:
            if expected[field] is not None:
                expected[field] = (expected[field] - EPOCH) // MS
        assert plain == expected
        assert all(type(plain[k]) is type(expected[k]) for k in expected)


def test_decode_plain_timestamps_are_exact_where_float_seconds_lose_a_millisecond() -> None:
    # 2004-01-26T19:05:41.396Z: datetime.timestamp() * 1000 is 1075143941395.9999 (float
    # seconds cannot hold .396 exactly), so going through a datetime truncates to ...395
    ms = 1_075_143_941_396
    at = EPOCH + ms * MS
    assert int(at.timestamp() * 1000) == ms - 1
    codec = Codec.for_record("DealEvent")
    assert codec.decode_plain(codec.encode({**DEAL, "occurred_at": at}))["occurred_at"] == ms


def test_decode_plain_reads_older_writer_versions_and_rejects_bad_bytes() -> None:
    v1 = writer_versions("PipelineAggregate")[0]
    record = Codec.for_record("PipelineAggregate").decode_plain(Codec(v1).encode(PIPELINE_ROW))
    assert record["value"] == Decimal("9999999999999999.99")
    assert record["as_of"] == (PIPELINE_ROW["as_of"] - EPOCH) // MS
    codec = Codec.for_record("DealEvent")
    good = codec.encode(DEAL)
    for bad, message in ((good[:-5], "corrupt"), (good + b"\x00", "trailing"), (b"{}", "single-object")):
        with pytest.raises(DecodeError, match=message):
            codec.decode_plain(bad)


def test_decode_plain_refuses_a_logical_type_it_does_not_convert() -> None:
    schema = {
        "type": "record",
        "name": "Odd",
        "fields": [{"name": "id", "type": {"type": "string", "logicalType": "uuid"}}],
    }
    with pytest.raises(TypeError, match="uuid"):
        Codec(json.dumps(schema)).decode_plain(b"")
