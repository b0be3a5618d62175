"""The wire format: single-object encoding, byte-compatible implementations, evolution."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from schemas.codec import HEADER_LEN, MAGIC, Codec, DecodeError, ReferenceCodec, fingerprint, load_schema_json

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
