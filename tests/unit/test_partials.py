"""Partials exchange: any partial fits the broker's message size once chunked, and the
reader reassembles exactly the latest complete publication."""

from __future__ import annotations

import json
from decimal import Decimal
from zoneinfo import ZoneInfo

from agents.partials import CHUNK_BYTES, PartialExchange, chunk_key, partition_for, split_key
from streams.deals import fold
from streams.events import DealEvent
from streams.pipeline_views import PipelineViews, merge_partials, pipeline_rows
from streams.pipelines import load_pipelines, load_rates
from streams.validation import MAX_DIMENSION_LENGTH, MAX_ID_LENGTH

CONFIG = load_pipelines()
RATES = load_rates()
KAFKA_MESSAGE_LIMIT = 1_000_000  # the producer's max_request_size; the broker allows 1 MB
T0 = 1_709_294_400_000  # 2024-03-01 12:00 UTC


def _views(first: int, count: int) -> PipelineViews:
    """``count`` open deals, each with its own owner, team and region at their maximum
    lengths, 100.00 USD each, entered one minute apart."""
    views = PipelineViews(CONFIG, RATES, ZoneInfo("UTC"))
    for i in range(first, first + count):
        tag = f"{i:08d}"
        event = DealEvent(
            "e1", "crm", f"D{i}", "CREATED", T0 + i * 60_000, "default", "qualifiedtobuy",
            Decimal("100.00"), "USD",
            owner_id=tag.ljust(MAX_ID_LENGTH, "o"),
            team=tag.ljust(MAX_DIMENSION_LENGTH, "t"),
            region=tag.ljust(MAX_DIMENSION_LENGTH, "r"),
        )  # fmt: skip
        views.replace(None, fold([event], CONFIG))
    return views


def _through_topic(exchange: PartialExchange, records: list[tuple[str, bytes | None]]) -> list:
    reader = PartialExchange()
    done = [reader.receive(k, v) for k, v in records]
    return [d for d in done if d is not None]


def test_a_partial_with_many_distinct_dimensions_is_chunked_under_the_limit_and_merges_exactly() -> None:
    # 6,000 deals x (256 + 128 + 128 characters of dimension values, each appearing in the
    # open section with its counters): about 5 MB of JSON, 5 x the broker's message limit
    a, b = _views(0, 6_000), _views(6_000, 1_500)
    partial_a = a.partial()
    size = len(json.dumps(partial_a, separators=(",", ":")))
    assert size > 4 * KAFKA_MESSAGE_LIMIT

    exchange = PartialExchange()
    published = {"views": partial_a, "watermark": 0}
    records = exchange.encode("deals:0", published)
    body = len(json.dumps(published, separators=(",", ":")).encode())
    assert len(records) == -(-body // CHUNK_BYTES) == 16  # ceil(4.1 MB / 256 KiB) chunks
    assert all(len(k.encode()) + len(v or b"") < KAFKA_MESSAGE_LIMIT // 2 for k, v in records)
    assert [k for k, _ in records][:3] == ["deals:0", "deals:0#1", "deals:0#2"]

    ((base, back),) = _through_topic(exchange, records)
    assert base == "deals:0" and back["views"] == partial_a

    # merge of the reassembled partial with another partition's: exact totals
    # 7,500 deals x 10,000 cents; every owner, team and region holds one deal
    merged = merge_partials([back["views"], b.partial()])
    rows = pipeline_rows(merged)
    stage = next(r for r in rows["by_stage"] if r["stage"] == "qualifiedtobuy")
    assert (stage["deals"], stage["value_cents"]) == (7_500, 75_000_000)
    for dim in ("owner", "team", "region"):
        assert len(rows[f"by_{dim}"]) == 7_500
        assert sum(r["value_cents"] for r in rows[f"by_{dim}"]) == 75_000_000
    # aging of the 7,500 deals stays one bounded summary
    assert merged["aging"]["default"]["qualifiedtobuy"]["open"] == 7_500
    assert len(merged["aging"]["default"]["qualifiedtobuy"]["cells"]) <= 1024


def test_a_smaller_publication_tombstones_the_chunk_keys_it_no_longer_uses() -> None:
    exchange = PartialExchange(chunk_bytes=10)
    big = exchange.encode("pulse:2", {"x": "a" * 35})  # 44 bytes of JSON -> 5 chunks
    assert [k for k, _ in big] == ["pulse:2", "pulse:2#1", "pulse:2#2", "pulse:2#3", "pulse:2#4"]
    small = exchange.encode("pulse:2", {"x": 1})  # 7 bytes -> 1 chunk, 4 tombstones
    assert small[0][0] == "pulse:2" and small[0][1] is not None
    assert small[1:] == [("pulse:2#1", None), ("pulse:2#2", None), ("pulse:2#3", None), ("pulse:2#4", None)]
    assert exchange.encode("pulse:2", {"x": 2})[1:] == []  # nothing left to tombstone
    # the reader ends with the latest publication
    assert _through_topic(exchange, big + small)[-1] == ("pulse:2", {"x": 1})


def test_the_reader_takes_the_latest_complete_publication_and_never_mixes_chunks() -> None:
    one, two = PartialExchange(chunk_bytes=8, writer="one"), PartialExchange(chunk_bytes=8, writer="two")
    first = one.encode("deals:1", {"n": "first"})  # 15 bytes: 2 chunks
    second = two.encode("deals:1", {"n": "second"})  # 16 bytes: 2 chunks
    reader = PartialExchange()
    # a rebalance: both writers publish the base key at once, chunks interleaved
    got = [reader.receive(k, v) for k, v in (first[0], second[0], first[1], second[1])]
    assert got == [None, None, ("deals:1", {"n": "first"}), ("deals:1", {"n": "second"})]
    # a writer that died half-way (chunk 0 only), then compaction kept a newer chunk 0:
    # the half publication is never completed by another publication's chunk 1
    reader = PartialExchange()
    third = one.encode("deals:1", {"n": "third!"})
    assert reader.receive(*third[0]) is None
    assert reader.receive(*second[1]) is None  # chunk 1 of another publication
    assert reader.receive(*third[1]) == ("deals:1", {"n": "third!"})
    # a publisher continues numbering after the highest seq it has read
    # (the highest it read is "one"'s second publication, seq 2)
    assert json.loads(reader.encode("deals:1", {})[0][1].split(b"\n")[0])["seq"] == 3


def test_values_without_a_header_are_ignored() -> None:
    # the unchunked JSON partial of earlier versions, and garbage
    reader = PartialExchange()
    assert reader.receive("deals:0", json.dumps({"views": {"version": 1}}).encode()) is None
    assert reader.receive("deals:0", b"not json\nat all") is None
    assert reader.receive("deals:0", None) is None


def test_keys_and_partitions() -> None:
    assert [chunk_key("deals:3", i) for i in (0, 1, 12)] == ["deals:3", "deals:3#1", "deals:3#12"]
    assert [split_key(k) for k in ("deals:3", "deals:3#12")] == [("deals:3", 0), ("deals:3", 12)]
    # every chunk of a base key goes to the same partition, the same in every process
    assert partition_for("deals:3", 6) == partition_for("deals:3", 6)
    assert {partition_for(f"deals:{p}", 6) for p in range(6)} <= set(range(6))
