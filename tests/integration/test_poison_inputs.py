"""Poison inputs: oversized ids and dimensions are dead-lettered, and valid input with very
many distinct dimension values never grows a record past the broker's message size."""

from __future__ import annotations

import time
from decimal import Decimal

from schemas.codec import Codec
from streams.validation import MAX_DIMENSION_LENGTH, MAX_ID_LENGTH
from tests.integration.conftest import (
    Names,
    consume_all,
    consume_until_quiet,
    create_topic,
    encoded_deal,
    poll,
    produce,
)

DEAD = Codec.for_record("DeadLetter")
NOW = int(time.time() * 1000)
MESSAGE_LIMIT = 1_048_576  # the broker's default max.message.bytes (1 MiB)


def deal(i: int, **over: object) -> tuple[bytes, bytes]:
    fields: dict[str, object] = {
        "event_id": f"e{i}",
        "deal_id": f"D{i}",
        "event_type": "CREATED",
        "occurred_at": NOW - 3_600_000,
        "pipeline": "default",
        "stage": "qualifiedtobuy",
        "amount": Decimal("100.00"),
        "currency": "USD",
    }
    return encoded_deal(**{**fields, **over})


def test_oversized_owner_is_dead_lettered_and_many_distinct_dimensions_publish_in_chunks(
    names: Names, start_worker
) -> None:
    # one partition, so a single partial holds everything below
    names.partitions = 1
    create_topic(names.deal_events, 1)
    # the reported poison: four DealEvents with a 300,000-character owner_id (before the
    # limits they grew the partial past 1 MB and the worker crashed after every restart)
    poison = [deal(900_000 + i, owner_id="o" * 300_000) for i in range(4)]
    # then 2,000 valid deals, each with its own owner, team and region at the maximum
    # lengths (256, 128, 128): about 1.4 MB of partial, more than one message may hold
    many = [
        deal(
            i,
            owner_id=f"{i:06d}".ljust(MAX_ID_LENGTH, "o"),
            team=f"{i:06d}".ljust(MAX_DIMENSION_LENGTH, "t"),
            region=f"{i:06d}".ljust(MAX_DIMENSION_LENGTH, "r"),
        )
        for i in range(2_000)
    ]
    produce(names.deal_events, poison + many)

    worker = start_worker(names.env(SALESOPS_REDIS_URL=""))
    poll(
        lambda: worker.sample("salesops_dead_letter_total", reason="field_too_long") == 4.0,
        90,
        what="4 field_too_long dead letters",
    )
    letters = [DEAD.decode(r.value) for r in consume_all(names.dead_letter, 4)]
    assert {d["reason"] for d in letters} == {"field_too_long"}
    assert {d["detail"] for d in letters} == {"owner_id is 300000 characters long, the limit is 256"}
    assert all(d["original_value"] == v for d, (_, v) in zip(letters, poison, strict=True))

    # every valid deal is counted: 2,000 x 100.00 USD, one row per owner, team and region
    def pipeline() -> dict | None:
        body = worker.json("/api/pipeline")
        stage = [r for r in body["by_stage"] if r["stage"] == "qualifiedtobuy"]
        return body if stage and stage[0]["deals"] == 2_000 else None

    body = poll(pipeline, 120, what="2,000 open deals on /api/pipeline")
    stage = next(r for r in body["by_stage"] if r["stage"] == "qualifiedtobuy")
    assert (stage["value_cents"], stage["value"]) == (20_000_000, "200000.00")
    for dim in ("owner", "team", "region"):
        assert len(body[f"by_{dim}"]) == 2_000
        assert sum(r["value_cents"] for r in body[f"by_{dim}"]) == 20_000_000

    # the partition's partial went out in chunks, every record under the message size
    partials = consume_until_quiet(names.output("partials"), quiet_s=2.0)
    assert partials and all(len(r.key) + len(r.value or b"") < MESSAGE_LIMIT for r in partials)
    assert any(r.key.startswith(b"deals:0#") for r in partials)
    assert worker.sample("salesops_sink_errors_total", sink="partials") in (None, 0.0)

    assert worker.proc is not None and worker.proc.poll() is None  # still running
    assert worker.stop() == 0


def test_a_deal_past_its_event_limit_is_dead_lettered_and_its_record_still_fits(
    names: Names, start_worker
) -> None:
    from streams.deals import MAX_OBSERVATIONS

    names.partitions = 1
    create_topic(names.deal_events, 1)
    # one deal with MAX_OBSERVATIONS + 1 distinct events, maximum-length ids: the last
    # one (newest) is refused, the deal's record keeps the first MAX_OBSERVATIONS
    big = "B".ljust(MAX_ID_LENGTH, "b")
    events = [
        encoded_deal(
            event_id=f"{i:06d}".ljust(MAX_ID_LENGTH, "e"),
            deal_id=big,
            event_type="UPDATED",
            occurred_at=NOW - 3_600_000 + i,
            pipeline="default",
            stage="qualifiedtobuy",
            amount=Decimal(i),
            currency="USD",
        )
        for i in range(MAX_OBSERVATIONS + 1)
    ]
    produce(names.deal_events, events)
    worker = start_worker(names.env(SALESOPS_REDIS_URL=""))
    poll(
        lambda: worker.sample("salesops_dead_letter_total", reason="deal_history_full") == 1.0,
        90,
        what="1 deal_history_full dead letter",
    )
    (letter,) = [DEAD.decode(r.value) for r in consume_all(names.dead_letter, 1)]
    assert letter["source_offset"] == MAX_OBSERVATIONS
    # the deal stands at its last accepted event: amount 999.00
    deal = poll(lambda: worker.json(f"/api/deals/{big}"), 60, what="the deal in the API")
    assert deal["amount"] == f"{MAX_OBSERVATIONS - 1}.00"
    changelog = consume_until_quiet(f"{names.uid}-deals-changelog", quiet_s=2)
    assert changelog and max(len(r.value) for r in changelog) < MESSAGE_LIMIT
    assert worker.stop() == 0
