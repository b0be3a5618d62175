"""Global outputs: nothing before the clock has a value, exact money on the topics, and a
failed or impossible row never stops the rest (sink errors are counted and retried)."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from prometheus_client import CollectorRegistry

from agents.outputs import (
    MOVEMENT_CHANGES,
    Publisher,
    Snapshot,
    aging_records,
    enps_records,
    funnel_records,
    movement_records,
    pipeline_records,
    pulse_records,
    view_codecs,
)
from sinks.aggregate_topics import AggregateTopicSink
from sinks.base import Sink, SinkUnavailable, ViewRows
from sinks.metrics import SalesopsMetrics
from streams import pulse
from streams.deals import fold
from streams.events import DealEvent
from streams.pipeline_views import PipelineViews
from streams.pipelines import load_pipelines, load_rates

CONFIG = load_pipelines()
RATES = load_rates()
UTC = ZoneInfo("UTC")
T0 = 1_709_294_400_000  # 2024-03-01 12:00 UTC


class RecordingSink(Sink):
    """A sink that keeps what it was given; ``down`` makes its flush fail (retryable)."""

    name = "redis"

    def __init__(self) -> None:
        self.added: list[ViewRows] = []
        self.flushed: list[list[ViewRows]] = []
        self.down = False

    def setup(self) -> None:
        pass

    def add(self, item: ViewRows) -> None:
        self.added.append(item)

    async def flush(self) -> None:
        if self.down:
            raise SinkUnavailable("down")
        self.flushed.append(self.added)
        self.added = []


def snapshot(
    deals_partial: dict[str, Any], now_ms: int, pulse_partial: dict[str, Any] | None = None
) -> Snapshot:
    return Snapshot(
        deals={"views": deals_partial, "stalled": [], "watermark": now_ms},
        pulse=pulse_partial or pulse.PulseViews(UTC).partial(),
        now_ms=now_ms,
        config=CONFIG,
        currency="USD",
        tz=UTC,
        trailing_windows_days=(30, 90),
        anonymity_threshold=5,
    )


def _one_open_deal() -> dict[str, Any]:
    views = PipelineViews(CONFIG, RATES, UTC)
    event = DealEvent("e1", "crm", "D1", "CREATED", T0, "default", "contractsent", Decimal("10.00"), "USD")
    views.replace(None, fold([event], CONFIG))
    return views.partial()


def test_nothing_is_published_before_the_clock_has_a_value() -> None:
    # watermark clock before the first event: 0, the epoch -> no "1970-01", "1970-Q1" rows
    sink = RecordingSink()
    publisher = Publisher(SalesopsMetrics(CollectorRegistry()), [sink])
    assert asyncio.run(publisher.publish(snapshot(_one_open_deal(), 0))) is False
    assert sink.added == [] and sink.flushed == []
    # once the watermark has a value, the periods are those of the event time
    assert asyncio.run(publisher.publish(snapshot(_one_open_deal(), T0 + 3_600_000))) is True
    keys = {(rows.view, key) for rows in sink.flushed[0] for key in rows.rows}
    assert ("funnel", "2024-03:default") in keys and ("movement", "2024-Q1:default") in keys
    assert not any("1970" in key for _, key in keys)


def test_every_sink_is_driven_alike_and_a_failed_one_is_counted_and_kept() -> None:
    metrics = SalesopsMetrics(CollectorRegistry())
    ok, down = RecordingSink(), RecordingSink()
    ok.name, down.name, down.down = "aggregate-topics", "redis", True
    publisher = Publisher(metrics, [ok, down])
    extra = {"forecast": {"k": {"x": 1}}}
    assert asyncio.run(publisher.publish(snapshot(_one_open_deal(), T0), extra)) is True
    # both got one ViewRows per view (the six views and the extra one), at the snapshot's clock
    for sink in (ok, down):
        views = [r.view for r in (sink.flushed[0] if sink.flushed else sink.added)]
        assert views == ["pipeline", "funnel", "stage-aging", "movement", "enps", "pulse", "forecast"]
    assert {r.as_of for r in ok.flushed[0]} == {T0}
    r = metrics.registry
    assert r.get_sample_value("salesops_sink_flushes_total", {"sink": "aggregate-topics"}) == 1
    assert r.get_sample_value("salesops_sink_errors_total", {"sink": "redis"}) == 1
    assert len(down.added) == 7  # kept for the next flush


# ----------------------------------------------------------------------------- mappers
# Each mapper turns one view's result into its rows; values below are worked by hand.


def test_pipeline_records_key_each_stage_and_dimension_with_exact_money() -> None:
    rows = {
        "by_stage": [{"pipeline": "p", "stage": "s", "deals": 2, "value_cents": 1050, "weighted_cents": 525}],
        "by_owner": [{"owner": "u1", "deals": 1, "value_cents": 1, "weighted_cents": 0}],
        "by_team": [],
        "by_region": [{"region": "emea", "deals": 2, "value_cents": 1050, "weighted_cents": 525}],
    }
    out = pipeline_records(rows, "EUR")
    assert set(out) == {"stage:p:s", "owner:u1", "region:emea"}
    assert out["stage:p:s"] == {
        "dimension": "stage",
        "pipeline": "p",
        "value_of": "s",
        "deals": 2,
        "value": Decimal("10.50"),
        "weighted_value": Decimal("5.25"),
        "currency": "EUR",
    }
    assert out["owner:u1"]["pipeline"] is None and out["owner:u1"]["value"] == Decimal("0.01")


def test_funnel_records_one_row_per_period_and_pipeline() -> None:
    stage = {
        "stage": "s",
        "entered": 4,
        "exited": 2,
        "advanced": 1,
        "regressed": 1,
        "cohort_entered": 4,
        "cohort_advanced": 1,
        "window_conversion": 0.5,
        "cohort_conversion": 0.25,
        "extra": "not published",
    }
    result = {
        "period": "2024-03",
        "pipelines": [
            {
                "pipeline": "p",
                "stages": [stage],
                "won_count": 1,
                "won_cents": 300,
                "lost_count": 3,
                "lost_cents": 100,
                "win_rate_count": 0.25,
                "win_rate_value": 0.75,
                "avg_deal_size_cents": 300,
                "avg_cycle_days": 2.5,
                "open_deals": 7,
                "sales_velocity_per_day": 1.5,
            }
        ],
    }
    row = funnel_records(result, "USD")["2024-03:p"]
    assert "extra" not in row["stages"][0] and row["stages"][0]["cohort_conversion"] == 0.25
    assert (row["won_value"], row["lost_value"]) == (Decimal("3.00"), Decimal("1.00"))
    assert row["avg_deal_size"] == 3.0  # 300 cents = 3.00 units, a double on the topic
    assert (row["period"], row["pipeline"], row["open_deals"]) == ("2024-03", "p", 7)


def test_movement_records_carry_every_change_in_exact_money() -> None:
    cents = dict(zip(MOVEMENT_CHANGES, range(1, 10), strict=True))  # start 1 cent .. end 9 cents
    out = movement_records(
        "2024-Q1", [{"pipeline": "p", **{f"{k}_cents": v for k, v in cents.items()}}], "USD"
    )
    row = out["2024-Q1:p"]
    assert row["start"] == Decimal("0.01") and row["end"] == Decimal("0.09") and row["won"] == Decimal("0.06")


def test_aging_records_count_the_stalled_deals_of_each_stage() -> None:
    rows = [
        {"pipeline": "p", "stage": "a", "open": 3, "median_days": 1.0, "p90_days": 2.0, "max_days": 4.0},
        {"pipeline": "p", "stage": "b", "open": 1, "median_days": 0.5, "p90_days": 0.5, "max_days": 0.5},
    ]
    stalled = [{"pipeline": "p", "stage": "a"}, {"pipeline": "p", "stage": "a"}]
    out = aging_records(rows, stalled)
    assert out["p:a"]["stalled"] == 2 and out["p:b"]["stalled"] == 0
    assert out["p:a"]["max_days"] == 4.0 and out["p:a"]["open"] == 3


def test_enps_records_keep_a_suppressed_group_as_hidden_not_missing() -> None:
    rows = [
        {"group": "org", "responses": 10, "suppressed": False, "promoters": 5, "passives": 3,
         "detractors": 2, "enps": 30.0, "margin_of_error": 25.0},
        {"group": "team:tiny", "responses": 3, "suppressed": True},
    ]  # fmt: skip
    out = enps_records("30d", rows)
    assert out["30d:org"]["enps"] == 30.0 and out["30d:org"]["window"] == "30d"
    hidden = out["30d:team:tiny"]
    assert hidden["suppressed"] is True and hidden["responses"] == 3
    assert hidden["enps"] is None and hidden["promoters"] is None and hidden["margin_of_error"] is None


def test_pulse_records_one_row_per_question_and_group() -> None:
    org = {"group": "org", "responses": 6, "suppressed": False, "mean_score": 4.0, "favourable_ratio": 0.5}
    hidden = {"group": "team:a", "responses": 2, "suppressed": True}
    view = {"survey_id": "s1", "questions": [{"question_id": "q1", "groups": [org, hidden]}]}
    out = pulse_records("s1", view)
    assert set(out) == {"s1:q1:org", "s1:q1:team:a"}
    assert out["s1:q1:org"]["mean_score"] == 4.0
    assert out["s1:q1:team:a"]["mean_score"] is None and out["s1:q1:team:a"]["suppressed"] is True


ROW = {
    "dimension": "stage",
    "pipeline": "p",
    "value_of": "s",
    "deals": 1,
    "value": Decimal("1.00"),
    "weighted_value": Decimal("0.50"),
    "currency": "USD",
}


async def delivered(error: Exception | None = None) -> None:
    """A record's delivery: acknowledged, or failed with ``error``."""
    if error is not None:
        raise error


def test_a_failed_send_is_retried_at_the_next_flush_without_resending_what_went_out() -> None:
    sent: list[tuple[str, bytes]] = []
    fail_at = {"stage:b"}

    async def send(topic: str, key: bytes, value: bytes | None) -> Any:
        if key.decode() in fail_at:
            raise RuntimeError("MessageSizeTooLargeError")
        sent.append((topic, key))
        return delivered()

    sink = AggregateTopicSink(send, view_codecs(), lambda view: f"out.{view}")
    rows = {k: {**ROW, "value_of": k} for k in ("stage:a", "stage:b", "stage:c")}
    sink.add(ViewRows("pipeline", T0, rows))
    with pytest.raises(SinkUnavailable, match=r"out\.pipeline"):
        asyncio.run(sink.flush())
    assert sent == [("out.pipeline", b"stage:a")]
    # next flush (same rows): only what is still missing goes out
    fail_at.clear()
    sink.add(ViewRows("pipeline", T0, rows))
    assert asyncio.run(sink.flush()) == 2
    assert sent[1:] == [("out.pipeline", b"stage:b"), ("out.pipeline", b"stage:c")]


def test_a_row_counts_as_published_only_once_its_delivery_is_acknowledged() -> None:
    """A send the producer accepted but whose delivery failed later (a batch it gave up
    on, a record abandoned at a stop) is sent again at the next flush, tombstones too."""
    sent: list[tuple[bytes, bool]] = []
    lost = {"stage:b", "stage:c"}

    async def send(topic: str, key: bytes, value: bytes | None) -> Any:
        sent.append((key, value is None))
        return delivered(RuntimeError("KafkaTimeoutError") if key.decode() in lost else None)

    sink = AggregateTopicSink(send, view_codecs(), lambda view: f"out.{view}")
    rows = {k: {**ROW, "value_of": k} for k in ("stage:a", "stage:b", "stage:c")}
    sink.add(ViewRows("pipeline", T0, rows))
    with pytest.raises(SinkUnavailable, match=r"out\.pipeline failed: KafkaTimeoutError"):
        asyncio.run(sink.flush())
    assert sent == [(b"stage:a", False), (b"stage:b", False), (b"stage:c", False)]
    # stage:c disappears meanwhile: its row never reached the topic, so no tombstone is owed
    lost.clear()
    sink.add(ViewRows("pipeline", T0, {k: rows[k] for k in ("stage:a", "stage:b")}))
    assert asyncio.run(sink.flush()) == 1
    assert sent[3:] == [(b"stage:b", False)]
    # stage:b disappears and its tombstone is lost once: it is sent again
    lost.add("stage:b")
    sink.add(ViewRows("pipeline", T0, {"stage:a": rows["stage:a"]}))
    with pytest.raises(SinkUnavailable):
        asyncio.run(sink.flush())
    lost.clear()
    sink.add(ViewRows("pipeline", T0, {"stage:a": rows["stage:a"]}))
    assert asyncio.run(sink.flush()) == 1
    assert sent[4:] == [(b"stage:b", True), (b"stage:b", True)]


def test_a_new_publisher_tombstones_the_rows_an_earlier_one_left_on_the_topic() -> None:
    """Before its first flush to a topic the sink reads the keys the topic holds: each is
    rewritten when it is still a row, tombstoned when it is not; after ``forget`` (another
    worker published meanwhile) it reads them again."""
    sent: list[tuple[str, bool]] = []
    held = {"out.pipeline": {b"stage:a", b"stage:gone"}}
    reads: list[str] = []

    async def send(topic: str, key: bytes, value: bytes | None) -> Any:
        sent.append((key.decode(), value is None))
        return delivered()

    async def existing(topic: str) -> set[bytes]:
        reads.append(topic)
        return set(held.get(topic, set()))

    sink = AggregateTopicSink(send, view_codecs(), lambda view: f"out.{view}", existing=existing)
    rows = {k: {**ROW, "value_of": k} for k in ("stage:a", "stage:b")}
    sink.add(ViewRows("pipeline", T0, rows))
    assert asyncio.run(sink.flush()) == 3
    assert sorted(sent) == [("stage:a", False), ("stage:b", False), ("stage:gone", True)]
    assert reads == ["out.pipeline"]
    # known now: the same rows again send nothing and read nothing
    sink.add(ViewRows("pipeline", T0, rows))
    assert asyncio.run(sink.flush()) == 0 and reads == ["out.pipeline"]
    # another worker published meanwhile and left stage:x; this one publishes again
    sink.forget()
    held["out.pipeline"] = {b"stage:a", b"stage:b", b"stage:x"}
    sent.clear()
    sink.add(ViewRows("pipeline", T0, rows))
    assert asyncio.run(sink.flush()) == 3
    assert sorted(sent) == [("stage:a", False), ("stage:b", False), ("stage:x", True)]


def test_keys_that_cannot_be_read_are_retried_and_nothing_is_sent_meanwhile() -> None:
    sent: list[str] = []
    broker_up = False

    async def send(topic: str, key: bytes, value: bytes | None) -> Any:
        sent.append(key.decode())
        return delivered()

    async def existing(topic: str) -> set[bytes]:
        if not broker_up:
            raise TimeoutError()
        return {b"stage:gone"}

    sink = AggregateTopicSink(send, view_codecs(), lambda view: f"out.{view}", existing=existing)
    sink.add(ViewRows("pipeline", T0, {"stage:a": ROW}))
    with pytest.raises(
        SinkUnavailable, match=r"cannot read which keys these topics hold: out\.pipeline: TimeoutError"
    ):
        asyncio.run(sink.flush())
    assert sent == []
    broker_up = True
    sink.add(ViewRows("pipeline", T0, {"stage:a": ROW}))
    assert asyncio.run(sink.flush()) == 2
    assert sorted(sent) == ["stage:a", "stage:gone"]


def test_a_row_the_schema_cannot_hold_is_skipped_and_the_rest_goes_out() -> None:
    sent: list[bytes] = []

    async def send(topic: str, key: bytes, value: bytes | None) -> Any:
        sent.append(key)
        return delivered()

    sink = AggregateTopicSink(send, view_codecs(), lambda view: f"out.{view}")
    # decimal(38,2) holds 36 integer digits: 10**36 does not fit
    rows = {"stage:big": {**ROW, "value": Decimal(f"{10**36}.00")}, "stage:ok": ROW}
    sink.add(ViewRows("pipeline", T0, rows))
    with pytest.raises(SinkUnavailable, match="stage:big"):
        asyncio.run(sink.flush())
    assert sent == [b"stage:ok"]
