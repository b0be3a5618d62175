"""Foundation: the worker consumes, validates, dead-letters and counts, on a real broker."""

from __future__ import annotations

import json
import time
from decimal import Decimal

from schemas.codec import Codec
from tests.integration.conftest import (
    Names,
    consume_all,
    create_topic,
    deal_record,
    poll,
    produce,
    run_cli,
)

DEAL = Codec.for_record("DealEvent")
RESPONSE = Codec.for_record("SurveyResponse")
DEAD = Codec.for_record("DeadLetter")
NOW = int(time.time() * 1000)


def deal(i: int, **over: object) -> dict:
    fields: dict[str, object] = {
        "event_id": f"e{i}",
        "deal_id": f"D{i % 7}",
        "event_type": "UPDATED",
        "occurred_at": NOW - 3_600_000 + i,
        "pipeline": "default",
        "stage": "qualifiedtobuy",
        "amount": Decimal("100.00"),
        "currency": "EUR",
        "owner_id": "u1",
        "team": "t1",
        "region": "EMEA",
    }
    return deal_record(**{**fields, **over})


def test_import_then_worker_counts_exactly_and_dead_letters_bad_records(
    names: Names, start_worker, tmp_path
) -> None:
    for t in (names.deal_events, names.responses, names.invitations):
        create_topic(t, names.partitions)
    # 40 valid deal events written through the real importer CLI
    lines = [
        json.dumps({**deal(i), "amount": "100.00", "occurred_at": NOW - 3_600_000 + i}) for i in range(40)
    ]
    path = tmp_path / "deals.jsonl"
    path.write_text("\n".join(lines) + "\n")
    imported = run_cli(
        "import", "deals", str(path), "--topic", names.deal_events, "--no-progress", env=names.env()
    )
    assert imported.returncode == 0, imported.stderr

    # bad records written straight to the topic, as a misbehaving connector would
    not_avro = b'{"deal_id": "D1"}'
    negative = DEAL.encode(deal(100, amount=Decimal("-5.00")))
    bad_currency = DEAL.encode(deal(101, currency="XXX"))
    future = DEAL.encode(deal(102, occurred_at=NOW + 30 * 86_400_000))
    produce(names.deal_events, [(b"D1", not_avro), (b"D2", negative), (b"D3", bad_currency), (b"D4", future)])
    # the worker keeps going after them: these valid events come later on the same keys
    produce(
        names.deal_events,
        [(b"D1", DEAL.encode(deal(200, deal_id="D1"))), (b"D2", DEAL.encode(deal(201, deal_id="D2")))],
    )
    bad_response = RESPONSE.encode(
        {
            "response_id": "r1",
            "survey_id": "s1",
            "submitted_at": NOW,
            "respondent": "emp-1",
            "team": "a",
            "department": None,
            "enps_score": 11,
            "enps_scale_min": 0,
            "answers": [],
        }
    )
    produce(names.responses, [(b"a", bad_response)])

    worker = start_worker(names.env(SALESOPS_REDIS_URL=""))
    poll(
        lambda: worker.sample("salesops_events_total", topic=names.deal_events, outcome="ok") == 42.0,
        90,
        what="42 ok deal events",
    )
    poll(
        lambda: worker.sample("salesops_events_total", topic=names.deal_events, outcome="dead_letter") == 4.0,
        30,
        what="4 dead-lettered deal events",
    )
    assert worker.sample("salesops_events_total", topic=names.responses, outcome="dead_letter") == 1.0
    assert worker.sample("salesops_dead_letter_total", reason="undecodable") == 1.0
    assert worker.sample("salesops_dead_letter_total", reason="negative_amount") == 1.0
    assert worker.sample("salesops_dead_letter_total", reason="invalid_currency") == 1.0
    assert worker.sample("salesops_dead_letter_total", reason="future_timestamp") == 1.0
    assert worker.sample("salesops_dead_letter_total", reason="score_out_of_range") == 1.0

    letters = [DEAD.decode(r.value) for r in consume_all(names.dead_letter, 5)]
    by_reason = {d["reason"]: d for d in letters}
    assert set(by_reason) == {
        "undecodable",
        "negative_amount",
        "invalid_currency",
        "future_timestamp",
        "score_out_of_range",
    }
    assert by_reason["undecodable"]["original_value"] == not_avro
    assert by_reason["undecodable"]["original_key"] == b"D1"
    assert by_reason["undecodable"]["source_topic"] == names.deal_events
    assert by_reason["negative_amount"]["original_value"] == negative
    assert "amount" in by_reason["negative_amount"]["detail"]
    assert by_reason["score_out_of_range"]["source_topic"] == names.responses
    assert all(d["source_offset"] >= 0 for d in letters)
    assert worker.stop() == 0  # SIGTERM: clean shutdown
