"""Table record framing round-trips, with and without an alert state."""

from __future__ import annotations

from decimal import Decimal

from agents.records import DealRecord, FramedRecord
from streams.deals import fold
from streams.events import DealEvent
from streams.pipelines import load_pipelines

DEAL = fold(
    [DealEvent("e1", "t", "D|1", "CREATED", 1000, "default", "contractsent", Decimal("5.00"), "USD")],
    load_pipelines(),
)


def test_deal_record_round_trip_without_and_with_alert() -> None:
    plain = DealRecord(3, DEAL)
    assert DealRecord.from_bytes(plain.to_bytes()) == plain
    alert = {"alert_id": "stalled:D|1:contractsent:1000", "status": "FIRING", "fired_at": 5}
    alerted = DealRecord(11, DEAL, alert)
    assert DealRecord.from_bytes(alerted.to_bytes()) == alerted


def test_framed_record_round_trip() -> None:
    rec = FramedRecord(4, b'{"a":1}\n')
    assert FramedRecord.from_bytes(rec.to_bytes()) == rec
