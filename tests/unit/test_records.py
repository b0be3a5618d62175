"""Table record framing round-trips, with and without an alert state."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from agents.records import DealRecord, FramedRecord
from streams import stalled
from streams.deals import fold
from streams.events import DealEvent
from streams.pipelines import load_pipelines

EVENTS = (DealEvent("e1", "t", "D|1", "CREATED", 1000, "default", "contractsent", Decimal("5.00"), "USD"),)
DEAL = fold(list(EVENTS), load_pipelines())


def test_deal_record_round_trip_without_and_with_alert() -> None:
    plain = DealRecord(3, DEAL)
    assert DealRecord.from_bytes(plain.to_bytes()) == plain
    alert = {"alert_id": "stalled:D|1:contractsent:1000", "status": "FIRING", "fired_at": 5}
    alerted = DealRecord(11, DEAL, alert)
    assert DealRecord.from_bytes(alerted.to_bytes()) == alerted


def test_framed_record_round_trip() -> None:
    rec = FramedRecord(4, b'{"a":1}\n')
    assert FramedRecord.from_bytes(rec.to_bytes()) == rec


# -- format 2 (binary) and format 1 (text header + JSON) ---------------------------------

FIRING = stalled.AlertState("stalled:D|1:contractsent:1000", "FIRING", "default", "contractsent", 1000, 5)
RESOLVED = stalled.AlertState("stalled:D|1:é:1000", "RESOLVED", "default", "é", 1000, 5, 9_999_999_999_999)


def test_format_2_round_trips_every_alert_shape_and_is_deterministic() -> None:
    for alert in (None, FIRING.to_dict(), RESOLVED.to_dict(), {"anything": [1, "else"]}):
        rec = DealRecord(65_535, DEAL, alert)
        data = rec.to_bytes()
        assert data[0] == 2
        back = DealRecord.from_bytes(data)
        assert back == rec and back.to_bytes() == data
        assert DealRecord(65_535, fold(list(EVENTS), load_pipelines()), alert).to_bytes() == data
    # the alert state of a deal is stored as binary fields, not as JSON
    assert b"FIRING" not in DealRecord(0, DEAL, FIRING.to_dict()).to_bytes()
    assert (
        stalled.AlertState.from_dict(
            DealRecord.from_bytes(DealRecord(0, DEAL, RESOLVED.to_dict()).to_bytes()).alert
        )
        == RESOLVED
    )


def test_format_1_records_are_still_read() -> None:
    # as the table held them before format 2: "<partition>[|<alert JSON>]\n<deal JSON>"
    deal_json = (
        b'{"deal_id":"D|1","obs":[[1000,"t:e1","contractsent","open","5.00","USD"]],'
        b'"pipeline":"default","v":1}'
    )
    assert DealRecord.from_bytes(b"3\n" + deal_json) == DealRecord(3, DEAL)
    alert = json.dumps(FIRING.to_dict(), separators=(",", ":")).encode()
    old = DealRecord.from_bytes(b"11|" + alert + b"\n" + deal_json)
    assert old == DealRecord(11, DEAL, FIRING.to_dict())
    assert DealRecord.from_bytes(old.to_bytes()) == old  # rewritten in format 2
    assert len(old.to_bytes()) < len(b"11|" + alert + b"\n" + deal_json) * 2 // 3


@pytest.mark.parametrize("data", [b"", b"\x09abc", b"\x02\x00", b"\x02" + bytes(5) + b"\x07"])
def test_unknown_or_corrupt_records_are_value_errors(data: bytes) -> None:
    with pytest.raises(ValueError):
        DealRecord.from_bytes(data)
