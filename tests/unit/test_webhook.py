"""Webhook delivery against a real HTTP receiver on 127.0.0.1 (aiohttp.web, port 0).

Waits between retries go through an injected ``sleep`` that only records the delays, so
no test sleeps for real except the timeout test (0.1 s requests).
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
from collections.abc import Callable, Coroutine
from itertools import islice
from typing import Any

import pytest
from aiohttp import web

from sinks.base import Backoff, Sink, SinkError
from sinks.webhook import (
    COLOR_FIRING,
    COLOR_RESOLVED,
    DeliveryResult,
    InMemoryLedger,
    WebhookSink,
    default_payload,
)

FIRING_RECORD: dict[str, Any] = {
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
    "value": 23.4,
    "unit": "days",
    "fired_at": 1_700_000_000_000 + 23 * 86_400_000,
    "resolved_at": None,
    "summary": "Deal D-17 (enterprise/proposal, 12,000.00 EUR, owner u-3) stalled: "
    "23.4 days in stage, threshold 21",
}
RESOLVED_RECORD = {**FIRING_RECORD, "status": "RESOLVED", "resolved_at": FIRING_RECORD["fired_at"] + 1}


class Receiver:
    """A webhook receiver that answers the scripted statuses in turn, then 200."""

    def __init__(self, statuses: list[int] | None = None, delays_s: list[float] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.delays_s = list(delays_s or [])
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.retry_after: str | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append((dict(request.headers), body))
        if self.delays_s:
            await asyncio.sleep(self.delays_s.pop(0))
        status = self.statuses.pop(0) if self.statuses else 200
        headers = {"Retry-After": self.retry_after} if self.retry_after and status == 429 else None
        return web.Response(status=status, text="nope" if status >= 400 else "ok", headers=headers)

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/hook"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    def bodies(self) -> list[Any]:
        return [json.loads(b) for _, b in self.requests]


class Sleeps:
    """An injected ``sleep`` that records the delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def run(coro_fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(coro_fn())


def make_sink(url: str, sleeps: Sleeps, **kw: Any) -> WebhookSink:
    kw.setdefault("rng", random.Random(7))
    sink = WebhookSink(url, sleep=sleeps, **kw)
    sink.setup()
    return sink


# ----------------------------------------------------------------------------- happy path


def test_default_body_headers_and_single_attempt() -> None:
    async def scenario() -> None:
        async with Receiver() as rx:
            sink = make_sink(rx.url, Sleeps(), headers={"Authorization": "Bearer t0ken"})
            result = await sink.deliver(FIRING_RECORD)
            await sink.close()
        assert result == DeliveryResult(delivered=True, attempts=1, last_error=None)
        ((headers, _),) = rx.requests
        assert headers["Idempotency-Key"] == "stalled:D-17:proposal:1700000000000:FIRING"
        assert headers["Content-Type"] == "application/json"
        assert headers["Authorization"] == "Bearer t0ken"
        assert rx.bodies() == [
            {
                "text": FIRING_RECORD["summary"],
                "attachments": [
                    {
                        "fallback": FIRING_RECORD["summary"],
                        "color": COLOR_FIRING,
                        "fields": [
                            {"title": "Status", "value": "FIRING", "short": True},
                            {"title": "Deal", "value": "D-17", "short": True},
                            {"title": "Pipeline", "value": "enterprise", "short": True},
                            {"title": "Stage", "value": "proposal", "short": True},
                            {"title": "Owner", "value": "u-3", "short": True},
                            {"title": "Amount", "value": "12,000.00 EUR", "short": True},
                            {"title": "Days in stage", "value": "23.4", "short": True},
                            {"title": "Threshold (days)", "value": "21", "short": True},
                        ],
                    }
                ],
                "salesops_alert": FIRING_RECORD,
            }
        ]

    run(scenario)


def test_resolved_is_green_and_a_separate_delivery() -> None:
    async def scenario() -> None:
        async with Receiver() as rx:
            sink = make_sink(rx.url, Sleeps())
            assert (await sink.deliver(FIRING_RECORD)).delivered
            assert (await sink.deliver(RESOLVED_RECORD)).delivered
            await sink.close()
        keys = [h["Idempotency-Key"] for h, _ in rx.requests]
        assert keys == [
            "stalled:D-17:proposal:1700000000000:FIRING",
            "stalled:D-17:proposal:1700000000000:RESOLVED",
        ]
        assert rx.bodies()[1]["attachments"][0]["color"] == COLOR_RESOLVED

    run(scenario)


ENPS_RECORD: dict[str, Any] = {
    "alert_id": "enps_drop:team:sales:2026-11-03",
    "kind": "ENPS_DROP",
    "status": "FIRING",
    "subject": "team:sales",
    "pipeline": None,
    "stage": None,
    "owner_id": None,
    "amount": None,
    "currency": None,
    "days_in_stage": None,
    "threshold": 10.0,
    "value": 40.0,
    "unit": "points",
    "fired_at": 1_793_696_400_000,
    "resolved_at": None,
    "summary": "eNPS of team:sales fell 40.0 points in 30 days (60.0 -> 20.0), threshold 10",
}


def fields_of(record: dict[str, Any]) -> list[tuple[str, str]]:
    (attachment,) = default_payload(record)["attachments"]
    return [(f["title"], f["value"]) for f in attachment["fields"]]


def test_an_enps_drop_speaks_of_points_not_days() -> None:
    async def scenario() -> None:
        async with Receiver() as rx:
            sink = make_sink(rx.url, Sleeps())
            assert (await sink.deliver(ENPS_RECORD)).delivered
            await sink.close()
        (body,) = rx.bodies()
        assert body["text"] == ENPS_RECORD["summary"] and body["salesops_alert"] == ENPS_RECORD
        (attachment,) = body["attachments"]
        assert [(f["title"], f["value"]) for f in attachment["fields"]] == [
            ("Status", "FIRING"),
            ("Group", "team:sales"),
            ("eNPS drop (points)", "40.0"),
            ("Threshold (points)", "10"),
        ]

    run(scenario)


def test_records_of_version_1_show_their_value_in_their_own_words() -> None:
    # version 1 had no value or unit: both kinds kept the value in days_in_stage
    v1_enps = {**ENPS_RECORD, "days_in_stage": 40.0} | {"value": None, "unit": None}
    assert fields_of(v1_enps)[2:] == [("eNPS drop (points)", "40.0"), ("Threshold (points)", "10")]
    v1_stalled = {k: v for k, v in FIRING_RECORD.items() if k not in ("value", "unit")}
    assert fields_of(v1_stalled)[-2:] == [("Days in stage", "23.4"), ("Threshold (days)", "21")]


def test_value_wins_over_days_in_stage_and_an_unknown_kind_names_its_unit() -> None:
    assert ("Days in stage", "23.4") in fields_of({**FIRING_RECORD, "days_in_stage": None})
    assert fields_of({**ENPS_RECORD, "kind": "QUOTA_MISS", "unit": "percent"})[1:] == [
        ("Subject", "team:sales"),
        ("Value (percent)", "40.0"),
        ("Threshold (percent)", "10"),
    ]


def test_custom_template_renders_json_literals() -> None:
    template = '{"msg": $summary, "state": $status, "owner": $owner_id, "end": $resolved_at, "all": $record}'

    async def scenario() -> None:
        async with Receiver() as rx:
            record = {**FIRING_RECORD, "summary": 'Deal "D-17" stalled \\ badly'}
            sink = make_sink(rx.url, Sleeps(), template=template)
            assert (await sink.deliver(record)).delivered
            await sink.close()
        assert rx.bodies() == [
            {
                "msg": 'Deal "D-17" stalled \\ badly',
                "state": "FIRING",
                "owner": "u-3",
                "end": None,
                "all": record,
            }
        ]

    run(scenario)


# ----------------------------------------------------------------------------- retries


def test_retries_5xx_with_jittered_backoff_until_delivered() -> None:
    sleeps = Sleeps()
    backoff = Backoff(initial_s=0.5, maximum_s=30.0, factor=2.0)

    async def scenario() -> None:
        async with Receiver(statuses=[500, 503, 500]) as rx:
            sink = make_sink(rx.url, sleeps, backoff=backoff, rng=random.Random(42))
            result = await sink.deliver(FIRING_RECORD)
            await sink.close()
        assert result == DeliveryResult(True, 4, None)
        # the same body and idempotency key on every attempt
        assert len({(h["Idempotency-Key"], b) for h, b in rx.requests}) == 1
        assert len(rx.requests) == 4

    run(scenario)
    # 3 failures -> 3 waits, exactly the full-jitter delays of the same seed
    assert sleeps.delays == list(islice(backoff.delays(random.Random(42)), 3))
    assert all(0 <= d <= c for d, c in zip(sleeps.delays, [0.5, 1.0, 2.0], strict=True))


def test_budget_exhaustion_reports_the_last_error() -> None:
    sleeps = Sleeps()

    async def scenario() -> None:
        async with Receiver(statuses=[500] * 10) as rx:
            sink = make_sink(rx.url, sleeps, retry_budget=3)
            result = await sink.deliver(FIRING_RECORD)
            await sink.close()
        assert result == DeliveryResult(False, 3, "HTTP 500: nope")
        assert len(rx.requests) == 3
        assert not sink.ledger.already_delivered(FIRING_RECORD["alert_id"], "FIRING")

    run(scenario)
    assert len(sleeps.delays) == 2  # no wait after the last attempt


@pytest.mark.parametrize("status", [400, 401, 404, 410, 422])
def test_client_errors_are_not_retried(status: int) -> None:
    sleeps = Sleeps()

    async def scenario() -> None:
        async with Receiver(statuses=[status]) as rx:
            sink = make_sink(rx.url, sleeps)
            result = await sink.deliver(FIRING_RECORD)
            await sink.close()
        assert result == DeliveryResult(False, 1, f"HTTP {status}: nope")
        assert len(rx.requests) == 1

    run(scenario)
    assert sleeps.delays == []


@pytest.mark.parametrize("status", [408, 429, 502])
def test_408_429_and_5xx_are_retried(status: int) -> None:
    async def scenario() -> None:
        async with Receiver(statuses=[status]) as rx:
            sink = make_sink(rx.url, Sleeps())
            assert await sink.deliver(FIRING_RECORD) == DeliveryResult(True, 2, None)
            await sink.close()

    run(scenario)


def test_retry_after_is_honoured_up_to_the_backoff_maximum() -> None:
    sleeps = Sleeps()

    async def scenario() -> None:
        async with Receiver(statuses=[429, 429]) as rx:
            rx.retry_after = "3"
            sink = make_sink(rx.url, sleeps, backoff=Backoff(initial_s=0.5, maximum_s=30.0))
            assert (await sink.deliver(FIRING_RECORD)).attempts == 3
            await sink.close()

    run(scenario)
    assert sleeps.delays == [3.0, 3.0]  # jitter <= 0.5 and <= 1.0, Retry-After wins


def test_connection_refused_is_retried_then_given_up() -> None:
    with socket.socket() as s:  # a port nobody listens on once the socket is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sleeps = Sleeps()

    async def scenario() -> None:
        sink = make_sink(f"http://127.0.0.1:{port}/hook", sleeps, retry_budget=2)
        result = await sink.deliver(FIRING_RECORD)
        await sink.close()
        assert not result.delivered and result.attempts == 2
        assert result.last_error is not None and result.last_error.startswith("connection error:")

    run(scenario)
    assert len(sleeps.delays) == 1


def test_timeouts_are_retried() -> None:
    async def scenario() -> None:
        async with Receiver(delays_s=[0.3]) as rx:  # the first answer comes too late
            sink = make_sink(rx.url, Sleeps(), timeout_s=0.1)
            result = await sink.deliver(FIRING_RECORD)
            await sink.close()
        assert result == DeliveryResult(True, 2, None)
        assert len(rx.requests) == 2

    run(scenario)


# ----------------------------------------------------------------------------- no repeats


def test_an_acknowledged_alert_is_never_sent_again() -> None:
    ledger = InMemoryLedger()

    async def scenario() -> None:
        async with Receiver() as rx:
            sink = make_sink(rx.url, Sleeps(), ledger=ledger)
            assert await sink.deliver(FIRING_RECORD) == DeliveryResult(True, 1)
            assert await sink.deliver(FIRING_RECORD) == DeliveryResult(True, 0)  # skipped
            await sink.close()
            # a restarted worker: a new sink backed by the same ledger (table)
            again = make_sink(rx.url, Sleeps(), ledger=ledger)
            assert await again.deliver(dict(FIRING_RECORD)) == DeliveryResult(True, 0)
            assert (await again.deliver(RESOLVED_RECORD)).attempts == 1  # another status
            await again.close()
        assert [h["Idempotency-Key"].rsplit(":", 1)[1] for h, _ in rx.requests] == ["FIRING", "RESOLVED"]
        assert len(ledger) == 2

    run(scenario)


def test_a_failed_alert_is_not_marked_and_is_sent_on_a_later_try() -> None:
    ledger = InMemoryLedger()

    async def scenario() -> None:
        async with Receiver(statuses=[500, 500]) as rx:
            sink = make_sink(rx.url, Sleeps(), ledger=ledger, retry_budget=2)
            assert not (await sink.deliver(FIRING_RECORD)).delivered
            assert await sink.deliver(FIRING_RECORD) == DeliveryResult(True, 1)
            await sink.close()
        assert len(rx.requests) == 3

    run(scenario)


# ----------------------------------------------------------------------------- batches


def test_flush_delivers_in_order_and_stops_when_the_receiver_is_down() -> None:
    other = {**FIRING_RECORD, "alert_id": "stalled:D-18:proposal:1", "subject": "D-18"}

    async def scenario() -> None:
        async with Receiver(statuses=[200, 400, 200, 500, 500]) as rx:
            sink = make_sink(rx.url, Sleeps(), retry_budget=2)
            for r in (FIRING_RECORD, other, RESOLVED_RECORD, {**other, "status": "RESOLVED"}, other):
                sink.add(r)
            results = await sink.flush()
            await sink.close()
            assert await sink.flush() == []  # the buffer was taken
        assert [r.delivered for _, r in results] == [True, False, True, False, False]
        assert [r.attempts for _, r in results] == [1, 1, 1, 2, 0]
        assert results[1][1].last_error == "HTTP 400: nope"
        assert results[4][1].last_error == "not attempted: receiver down (HTTP 500: nope)"
        sent = [(b["salesops_alert"]["subject"], b["salesops_alert"]["status"]) for b in rx.bodies()]
        assert (
            sent
            == [("D-17", "FIRING"), ("D-18", "FIRING"), ("D-17", "RESOLVED")] + [("D-18", "RESOLVED")] * 2
        )

    run(scenario)


def test_the_sink_interface_delivers_a_batch_in_order() -> None:
    # the delivery agent drives the webhook like every sink: add the batch, then flush
    async def scenario() -> None:
        async with Receiver() as rx:
            sink = make_sink(rx.url, Sleeps())
            assert isinstance(sink, Sink)
            sink.add(FIRING_RECORD)
            sink.add(RESOLVED_RECORD)
            results = await sink.flush()
            await sink.close()
            received = rx.bodies()
        assert [r for _, r in results] == [DeliveryResult(True, 1), DeliveryResult(True, 1)]
        assert [b["salesops_alert"]["status"] for b in received] == ["FIRING", "RESOLVED"]

    run(scenario)


# ----------------------------------------------------------------------------- setup


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/hook", "http:// or https://"),
        ("example.com/hook", "http:// or https://"),
        ("", "http:// or https://"),
        ("http:///hook", "no host"),
        ("http://example.com:99999/hook", "invalid port"),
    ],
)
def test_setup_rejects_bad_urls(url: str, message: str) -> None:
    with pytest.raises(SinkError, match=message):
        WebhookSink(url).setup()


def test_setup_rejects_bad_limits_and_templates() -> None:
    with pytest.raises(SinkError, match="retry budget"):
        WebhookSink("https://hooks.example.com/x", retry_budget=0).setup()
    with pytest.raises(SinkError, match="timeout"):
        WebhookSink("https://hooks.example.com/x", timeout_s=0).setup()
    with pytest.raises(SinkError, match="template"):
        WebhookSink("https://hooks.example.com/x", template='{"text": $nosuchfield}').setup()
    with pytest.raises(SinkError, match="template"):
        WebhookSink("https://hooks.example.com/x", template='{"text": "$summary"}').setup()  # not JSON
    WebhookSink("https://hooks.example.com/x", template='{"text": $summary}').setup()
    WebhookSink("https://hooks.example.com/x", template="").setup()  # empty = default body
