"""Global outputs: nothing before the clock has a value, exact money on the topics, and a
failed or impossible row never stops the rest (sink errors are counted and retried)."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from agents.outputs import Publisher
from schemas.codec import Codec
from sinks.aggregate_topics import AggregateTopicSink
from sinks.base import SinkUnavailable
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


class FakeWorker:
    """What Publisher reads from the worker: settings, config, merged partials, clocks."""

    def __init__(self, deals_partial: dict[str, Any], clock_ms: int) -> None:
        self.settings = SimpleNamespace(
            topic=lambda view: f"out.{view}",
            trailing_windows_days=[30, 90],
            anonymity_threshold=5,
            redis_url="",
            redis_prefix="x",
        )
        self.config, self.rates, self.tz = CONFIG, RATES, UTC
        self.metrics = SalesopsMetrics()
        self.partitions: dict[int, Any] = {}
        self._deals = {"views": deals_partial, "stalled": [], "watermark": clock_ms}
        self.clock_ms = clock_ms
        self.sent: list[tuple[str, bytes, bytes | None]] = []

        async def send(topic: str, key: bytes, value: bytes | None, **_: Any) -> None:
            self.sent.append((topic, key, value))

        self.app = SimpleNamespace(producer=SimpleNamespace(send=send))

    def merged_deals(self) -> dict[str, Any]:
        return self._deals

    def merged_pulse(self) -> dict[str, Any]:
        return pulse.PulseViews(UTC).partial()

    def global_now_ms(self) -> int:
        return self.clock_ms

    def now_ms(self) -> int:
        return T0


def _one_open_deal() -> dict[str, Any]:
    views = PipelineViews(CONFIG, RATES, UTC)
    event = DealEvent("e1", "crm", "D1", "CREATED", T0, "default", "contractsent", Decimal("10.00"), "USD")
    views.replace(None, fold([event], CONFIG))
    return views.partial()


def test_nothing_is_published_before_the_clock_has_a_value() -> None:
    # watermark clock before the first event: 0, the epoch -> no "1970-01", "1970-Q1" rows
    worker = FakeWorker(_one_open_deal(), clock_ms=0)
    assert asyncio.run(Publisher(worker).publish_global()) is False  # type: ignore[arg-type]
    assert worker.sent == []
    # once the watermark has a value, the periods are those of the event time
    worker.clock_ms = T0 + 3_600_000
    assert asyncio.run(Publisher(worker).publish_global()) is True  # type: ignore[arg-type]
    keys = {(topic, key.decode()) for topic, key, _ in worker.sent}
    assert ("out.funnel", "2024-03:default") in keys and ("out.movement", "2024-Q1:default") in keys
    assert not any("1970" in key for _, key in keys)


ROW = {
    "dimension": "stage",
    "pipeline": "p",
    "value_of": "s",
    "deals": 1,
    "value": Decimal("1.00"),
    "weighted_value": Decimal("0.50"),
    "currency": "USD",
}


def test_a_failed_send_is_retried_at_the_next_flush_without_resending_what_went_out() -> None:
    sent: list[tuple[str, bytes]] = []
    fail_at = {"stage:b"}

    async def send(topic: str, key: bytes, value: bytes | None) -> None:
        if key.decode() in fail_at:
            raise RuntimeError("MessageSizeTooLargeError")
        sent.append((topic, key))

    sink = AggregateTopicSink(send)
    codec = Codec.for_record("PipelineAggregate")
    rows = {k: {**ROW, "value_of": k} for k in ("stage:a", "stage:b", "stage:c")}
    sink.add("out.pipeline", codec, T0, rows)
    with pytest.raises(SinkUnavailable, match=r"out\.pipeline"):
        asyncio.run(sink.aflush())
    assert sent == [("out.pipeline", b"stage:a")]
    # next flush (same rows): only what is still missing goes out
    fail_at.clear()
    sink.add("out.pipeline", codec, T0, rows)
    assert asyncio.run(sink.aflush()) == 2
    assert sent[1:] == [("out.pipeline", b"stage:b"), ("out.pipeline", b"stage:c")]


def test_a_row_the_schema_cannot_hold_is_skipped_and_the_rest_goes_out() -> None:
    sent: list[bytes] = []

    async def send(topic: str, key: bytes, value: bytes | None) -> None:
        sent.append(key)

    sink = AggregateTopicSink(send)
    # decimal(38,2) holds 36 integer digits: 10**36 does not fit
    rows = {"stage:big": {**ROW, "value": Decimal(f"{10**36}.00")}, "stage:ok": ROW}
    sink.add("out.pipeline", Codec.for_record("PipelineAggregate"), T0, rows)
    with pytest.raises(SinkUnavailable, match="stage:big"):
        asyncio.run(sink.aflush())
    assert sent == [b"stage:ok"]
