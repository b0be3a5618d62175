"""Broker health: the log filter and its summaries (injected clocks), the backoff policy
and the metadata pacing."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from agents import broker_health
from agents.broker_health import Backoff, BrokerHealth
from sinks.metrics import SalesopsMetrics

T0_WALL = 1_795_000_000.0  # 2026-11-18T11:06:40Z


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def make_health(clock: Clock, **kw: Any) -> tuple[BrokerHealth, list[tuple[int, str]], list[bool]]:
    lines: list[tuple[int, str]] = []
    changes: list[bool] = []
    health = BrokerHealth(
        "127.0.0.1:9092",
        clock=clock,
        wall=lambda: T0_WALL + clock.t,
        emit=lambda level, msg: lines.append((level, msg)),
        on_change=changes.append,
        **kw,
    )
    return health, lines, changes


def record(
    name: str = "aiokafka",
    level: int = logging.ERROR,
    msg: str = "Unable connect to node with id %s: %s",
    args: tuple[Any, ...] = (1, "refused"),
) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_repeats_of_a_client_warning_pass_once_per_window_while_the_broker_is_up() -> None:
    clock = Clock()
    health, lines, _ = make_health(clock)
    assert health.filter(record()) is True  # the first of its kind is written
    clock.t = 10.0
    assert health.filter(record(args=(1, "again"))) is False  # same template, same window
    assert (
        health.filter(record(msg="Unable to update metadata from %s", args=([1],))) is True
    )  # another template
    assert health.filter(record(name="aiokafka.consumer.fetcher", args=(1, "x"))) is True  # another logger
    clock.t = 30.0
    assert health.filter(record()) is True  # 30 s after it was last written: written again
    # the window that began at 0 closed at 30 with 1 repeat held back: one summary line
    assert lines == [
        (
            logging.WARNING,
            "client_messages_suppressed count=1 window_s=30 "
            "(repeats of Kafka client warnings already logged)",
        )
    ]
    assert health.suppressed_total == 1


def test_other_loggers_and_client_info_lines_always_pass() -> None:
    clock = Clock()
    health, lines, _ = make_health(clock)
    health.observe(False, "refused")
    for _ in range(100):
        assert health.filter(record(name="agents.app", level=logging.ERROR, msg="internal_error")) is True
        assert health.filter(record(level=logging.INFO, msg="Discovered coordinator %s", args=(1,))) is True
        assert health.filter(record(name="aiokafkax", level=logging.ERROR, msg="not a client")) is True
    assert health.suppressed_total == 0
    assert len(lines) == 1  # the loss only


def test_an_outage_is_logged_once_then_summarised_every_30_s_then_once_when_back() -> None:
    clock = Clock()
    health, lines, changes = make_health(clock)
    clock.t = 5.0
    health.observe(False, "KafkaConnectionError: refused")
    # 1,000 client errors/s for 65 s: none is written
    for i in range(65_000):
        clock.t = 5.0 + i / 1000
        assert health.filter(record()) is False
    clock.t = 71.0
    health.observe(False)  # still down
    clock.t = 72.5
    health.observe(True)
    assert changes == [False, True]
    assert health.disconnects == 1
    # written: the loss at t=5; summaries when due at t=35 and t=65 (each 30,000 held back:
    # 1,000/s x 30 s); 5,000 more held back in 65..70; back at 72.5 after 67.5 s down
    assert lines == [
        (
            logging.WARNING,
            "broker_unreachable broker=127.0.0.1:9092 since=2026-11-18T11:06:45Z "
            "error='KafkaConnectionError: refused'",
        ),
        (
            logging.WARNING,
            "broker_unreachable broker=127.0.0.1:9092 for_s=30 since=2026-11-18T11:06:45Z "
            "suppressed=30000 client messages",
        ),
        (
            logging.WARNING,
            "broker_unreachable broker=127.0.0.1:9092 for_s=60 since=2026-11-18T11:06:45Z "
            "suppressed=30000 client messages",
        ),
        (
            logging.WARNING,
            "broker_reachable broker=127.0.0.1:9092 down_s=67.5 since=2026-11-18T11:06:45Z suppressed=65000",
        ),
    ]
    # after the outage the first client error is written again (it may be a new problem)
    assert health.filter(record()) is True


def test_probe_results_without_a_change_write_nothing_until_a_summary_is_due() -> None:
    clock = Clock()
    health, lines, changes = make_health(clock)
    for t in range(100):
        clock.t = float(t)
        health.observe(True)
    assert lines == [] and changes == []
    health.observe(False)
    for t in range(100, 129):
        clock.t = float(t)
        health.observe(False)
    assert len(lines) == 1  # the loss; no summary before 30 s
    clock.t = 129.0
    health.observe(False)
    assert lines[-1][1].startswith("broker_unreachable broker=127.0.0.1:9092 for_s=30 ")
    assert lines[-1][1].endswith("suppressed=0 client messages")


# one step: advance the clock, then a client record (template index, level) or a probe result
_steps = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=20, allow_nan=False),
        st.one_of(
            st.tuples(st.just("client"), st.integers(0, 3), st.sampled_from([logging.INFO, logging.ERROR])),
            st.tuples(st.just("other"), st.integers(0, 3), st.just(logging.ERROR)),
            st.tuples(st.just("probe"), st.booleans(), st.just(0)),
        ),
    ),
    max_size=300,
)


@settings(max_examples=200, deadline=None)
@given(_steps)
def test_no_other_line_is_dropped_and_the_output_is_bounded(steps: list[tuple[float, Any]]) -> None:
    clock = Clock()
    health, lines, _ = make_health(clock)
    written = 0
    transitions = 0
    for dt, (kind, x, level) in steps:
        clock.t += dt
        if kind == "probe":
            before = health.up
            health.observe(x)
            transitions += before != health.up
            continue
        name = "aiokafka" if kind == "client" else "agents.app"
        passed = health.filter(record(name=name, level=level, msg=f"template {x} %s", args=(clock.t,)))
        if kind == "other" or level < logging.WARNING:
            assert passed  # never drop another logger's line, nor a client's INFO
        elif passed:
            written += 1
    # at most: each of the 4 templates once per 30 s window (and once more after each
    # outage), one line per transition, one summary per 30 s
    windows = clock.t / 30 + 1
    assert written <= 4 * (windows + transitions + 1)
    assert len(lines) <= transitions + windows
    assert health.suppressed_total >= 0


def test_backoff_is_exponential_capped_and_half_random() -> None:
    b = Backoff(base_s=0.25, cap_s=4.0)
    assert b.delay(0) == 0.0
    # n-th failure: d = min(4, 0.25 x 2^(n-1)); delay in [d/2, d]
    assert [b.delay(n, rng=lambda: 0.0) for n in range(1, 7)] == [0.125, 0.25, 0.5, 1.0, 2.0, 2.0]
    assert [b.delay(n, rng=lambda: 1.0) for n in range(1, 7)] == [0.25, 0.5, 1.0, 2.0, 4.0, 4.0]
    assert b.delay(10_000, rng=lambda: 0.5) == 3.0


def test_metadata_refreshes_after_failures_wait_and_a_success_resets(monkeypatch: pytest.MonkeyPatch) -> None:
    from aiokafka.client import AIOKafkaClient

    results = iter([False, False, False, True, False])

    async def fake_update(self: Any, cluster: Any, topics: Any) -> bool:
        return next(results)

    slept: list[float] = []

    async def fake_sleep(s: float) -> None:
        slept.append(s)

    monkeypatch.setattr(AIOKafkaClient, "_metadata_update", fake_update)
    monkeypatch.setattr(broker_health.asyncio, "sleep", fake_sleep)
    assert broker_health.install_metadata_backoff(Backoff(base_s=1.0, cap_s=8.0)) is True
    assert broker_health.install_metadata_backoff() is True  # idempotent: not wrapped twice

    class Client:
        pass

    client = Client()

    async def run() -> list[bool]:
        return [await AIOKafkaClient._metadata_update(client, None, set()) for _ in range(5)]

    assert asyncio.run(run()) == [False, False, False, True, False]
    # before: 1st (no failure yet) 0; after 1, 2, 3 failures: d = 1, 2, 4 with delay in [d/2, d];
    # after the success the 5th goes at once
    assert len(slept) == 3
    assert 0.5 <= slept[0] <= 1 and 1 <= slept[1] <= 2 and 2 <= slept[2] <= 4


def test_installed_filter_holds_back_real_client_records(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    health, _lines, _ = make_health(clock)
    names = health.install()
    try:
        # aiokafka.client logs as "aiokafka"; a logger's filter sees only its own records
        assert {"aiokafka", "aiokafka.consumer.fetcher", "faust.transport.drivers.aiokafka"} <= set(names)
        caplog.set_level(logging.INFO)
        client = logging.getLogger("aiokafka")
        for i in range(50):
            client.error("Unable connect to node with id %s: %s", 1, i)
        logging.getLogger("aiokafka.consumer.fetcher").error("Failed fetch messages from %s: %s", 1, "x")
        logging.getLogger("agents.app").error("internal_error topic=t")
        texts = [r.getMessage() for r in caplog.records]
        assert texts == [
            "Unable connect to node with id 1: 0",
            "Failed fetch messages from 1: x",
            "internal_error topic=t",
        ]
        assert health.suppressed_total == 49
    finally:
        for name in names:
            logging.getLogger(name).removeFilter(health)


def test_broker_metrics_exist_from_the_start() -> None:
    m = SalesopsMetrics(CollectorRegistry())
    r = m.registry
    assert r.get_sample_value("salesops_broker_up") == 0
    assert r.get_sample_value("salesops_broker_disconnects_total") == 0
    assert r.get_sample_value("salesops_client_log_suppressed_total") == 0


def test_the_probe_reports_a_closed_port_as_unreachable() -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    reachable, error = asyncio.run(broker_health.BrokerProbe([f"127.0.0.1:{port}"], timeout_s=2)())
    assert reachable is False
    assert error.startswith("KafkaConnectionError: Unable to bootstrap")
