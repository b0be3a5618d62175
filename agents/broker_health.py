"""Broker connection state, and a log that stays readable through a broker outage.

While the Kafka broker is unreachable, the client libraries under the worker (aiokafka,
used by Faust and by the partials reader) retry in loops and log every failed attempt:
a 30 s outage used to write ~100,000 "Unable connect to node" / "Unable to update
metadata" lines.  Two things keep that in bounds:

* **Backoff at the cause.**  aiokafka refreshes metadata again as soon as a refresh
  fails when a loop asks for it (the producer's sender with a partition whose leader is
  unknown asks in a loop with no pause at all), so a refused connection turns into a
  busy loop.  :func:`install_metadata_backoff` makes a metadata refresh that follows a
  failed one wait first, exponentially longer (capped) with jitter; every loop that waits
  for fresh metadata is paced by it.  The loops that sleep a fixed ``retry_backoff_ms``
  keep their own pace.
* **A log filter.**  :class:`BrokerHealth` is a :class:`logging.Filter` on the client
  loggers.  While the broker is known to be down, their warnings and errors are counted
  instead of written; the worker logs the loss once (``broker_unreachable broker=...
  since=...``), a summary every ``summary_interval_s`` and one line when the broker is
  back.  While it is up, a repeated client warning (same logger and message template)
  is written once per ``repeat_window_s`` and its repeats are counted in a summary.
  Records below WARNING and records of other loggers always pass.

Whether the broker is up is decided by a probe (:class:`BrokerProbe`): a metadata
request on a fresh connection to the bootstrap servers, once per ``PROBE_INTERVAL_S``.
Its result drives ``salesops_broker_up`` and ``salesops_broker_disconnects_total``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agents.client_patches import Method, wrap_coroutine_method

log = logging.getLogger(__name__)

#: Logger name prefixes of the Kafka clients whose repeated warnings are rate-limited.
CLIENT_LOGGERS = ("aiokafka", "faust.transport")
PROBE_INTERVAL_S = 1.0
PROBE_TIMEOUT_S = 5.0
SUMMARY_INTERVAL_S = 30.0


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with "equal jitter": the n-th consecutive failure (n >= 1)
    waits a uniform time in [d/2, d], d = min(cap_s, base_s * 2**(n-1)).  Half of the
    delay is random, so clients that failed together do not retry in step; the other
    half keeps a floor, so a retry never follows a failure at once."""

    base_s: float = 0.25
    cap_s: float = 4.0

    def delay(self, failures: int, rng: Callable[[], float] = random.random) -> float:
        if failures <= 0:
            return 0.0
        d = min(self.cap_s, self.base_s * 2 ** min(failures - 1, 32))
        return d / 2 + d / 2 * rng()


#: The pacing of metadata refreshes after failures (see install_metadata_backoff).
METADATA_BACKOFF = Backoff(base_s=0.25, cap_s=4.0)
#: The pacing of the worker's own retries of a failed Kafka call (the partials reader).
RETRY_BACKOFF = Backoff(base_s=0.5, cap_s=8.0)


def install_metadata_backoff(backoff: Backoff = METADATA_BACKOFF) -> bool:
    """Pace aiokafka's metadata refreshes after failures (process-wide, idempotent).

    aiokafka has no setting for this: ``retry_backoff_ms`` is slept by the fetcher and the
    coordinator, but the metadata synchronizer runs a refresh each time a caller forces
    one, and the producer's sender forces one in a loop with no pause while a partition's
    leader is unknown.  With the broker down every refresh fails at once, so that loop
    spins (measured: ~2,200 log lines/s).  Here a refresh that follows ``n`` failed ones
    first waits ``backoff.delay(n)``; a successful refresh resets the count.  Returns
    False when the installed aiokafka has no such method (nothing is changed then).
    """
    from aiokafka.client import AIOKafkaClient

    def wrap(original: Method) -> Method:
        async def paced(self: Any, cluster_metadata: Any, topics: Any) -> Any:
            failures = getattr(self, "_salesops_metadata_failures", 0)
            if failures:
                await asyncio.sleep(backoff.delay(failures))
            ok = await original(self, cluster_metadata, topics)
            self._salesops_metadata_failures = 0 if ok else failures + 1
            return ok

        return paced

    return wrap_coroutine_method(AIOKafkaClient, "_metadata_update", wrap, "metadata_backoff")


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class BrokerHealth(logging.Filter):
    """The broker's up/down state and the rate limit of the client loggers' repeats.

    Pure apart from its callbacks: ``clock`` (monotonic seconds) and ``wall`` (epoch
    seconds) are injected, ``emit(level, message)`` writes the worker's own lines and
    ``on_change(up)`` is told each transition (the metrics).  Thread-safe: a client may
    log from another thread.
    """

    def __init__(
        self,
        broker: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        emit: Callable[[int, str], None] | None = None,
        on_change: Callable[[bool], None] | None = None,
        on_suppressed: Callable[[], None] | None = None,
        summary_interval_s: float = SUMMARY_INTERVAL_S,
        repeat_window_s: float = SUMMARY_INTERVAL_S,
        client_loggers: Iterable[str] = CLIENT_LOGGERS,
    ) -> None:
        super().__init__()
        self.broker = broker
        self.clock, self.wall = clock, wall
        self.emit = emit or (lambda level, message: log.log(level, message))
        self.on_change = on_change
        self.on_suppressed = on_suppressed
        self.summary_interval_s = summary_interval_s
        self.repeat_window_s = repeat_window_s
        self.client_loggers = tuple(client_loggers)
        self.up = True
        self.disconnects = 0
        self.suppressed_total = 0
        self._lock = threading.Lock()
        self._down_at = 0.0  # clock time of the loss
        self._down_since = 0.0  # wall time of the loss
        self._outage_suppressed = 0  # client records held back during this outage
        self._window_start = clock()
        self._window_suppressed = 0  # held back since the last summary
        self._last_passed: dict[tuple[str, Any], float] = {}

    # ------------------------------------------------------------------ the filter
    def is_client_record(self, record: logging.LogRecord) -> bool:
        name = record.name
        return record.levelno >= logging.WARNING and any(
            name == p or name.startswith(p + ".") for p in self.client_loggers
        )

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.is_client_record(record):
            return True
        with self._lock:
            now = self.clock()
            lines = self._due_summary(now)  # covers the records before this one
            if self.up:
                key = (record.name, record.msg)
                last = self._last_passed.get(key)
                passes = last is None or now - last >= self.repeat_window_s
                if passes:
                    self._last_passed[key] = now
                else:
                    self._count_suppressed()
            else:
                passes = False
                self._count_suppressed()
                self._outage_suppressed += 1
        self._write(lines)
        if not passes and self.on_suppressed is not None:
            self.on_suppressed()
        return passes

    def _count_suppressed(self) -> None:
        self.suppressed_total += 1
        self._window_suppressed += 1

    # ------------------------------------------------------------------ the probe's verdicts
    def observe(self, reachable: bool, error: str = "") -> None:
        """The result of one probe: a transition is logged (and told to ``on_change``);
        any due summary is written."""
        with self._lock:
            now = self.clock()
            lines: list[tuple[int, str]] = []
            changed = reachable != self.up
            if changed and not reachable:
                self.up = False
                self.disconnects += 1
                self._down_at, self._down_since = now, self.wall()
                self._outage_suppressed = 0
                self._window_start, self._window_suppressed = now, 0
                detail = f" error={error!r}" if error else ""
                lines.append(
                    (
                        logging.WARNING,
                        f"broker_unreachable broker={self.broker} since={_iso(self._down_since)}{detail}",
                    )
                )
            elif changed:
                self.up = True
                self._last_passed.clear()  # a new outage starts with fresh first lines
                lines.append(
                    (
                        logging.WARNING,
                        f"broker_reachable broker={self.broker} down_s={now - self._down_at:.1f} "
                        f"since={_iso(self._down_since)} suppressed={self._outage_suppressed}",
                    )
                )
                self._window_start, self._window_suppressed = now, 0
            else:
                lines = self._due_summary(now)
        self._write(lines)
        if changed and self.on_change is not None:
            self.on_change(reachable)

    def _due_summary(self, now: float) -> list[tuple[int, str]]:
        """The periodic summary line, when one is due (called with the lock held)."""
        if now - self._window_start < self.summary_interval_s:
            return []
        count, self._window_start, self._window_suppressed = self._window_suppressed, now, 0
        if not self.up:
            return [
                (
                    logging.WARNING,
                    f"broker_unreachable broker={self.broker} for_s={now - self._down_at:.0f} "
                    f"since={_iso(self._down_since)} suppressed={count} client messages",
                )
            ]
        if count:
            return [
                (
                    logging.WARNING,
                    f"client_messages_suppressed count={count} window_s={self.summary_interval_s:.0f} "
                    "(repeats of Kafka client warnings already logged)",
                )
            ]
        return []

    def _write(self, lines: list[tuple[int, str]]) -> None:
        for level, message in lines:
            self.emit(level, message)

    # ------------------------------------------------------------------ wiring
    def install(self) -> list[str]:
        """Attach this filter to every client logger (a logger's filters see only its
        own records, not its children's).  Returns the names it was attached to."""
        import aiokafka  # noqa: F401  (creates the aiokafka.* loggers)
        import faust.transport.drivers.aiokafka  # noqa: F401

        names = [
            name
            for name in list(logging.root.manager.loggerDict)
            if any(name == p or name.startswith(p + ".") for p in self.client_loggers)
        ]
        for name in [*self.client_loggers, *names]:
            logger = logging.getLogger(name)
            if self not in logger.filters:
                logger.addFilter(self)
        return sorted(set(names) | set(self.client_loggers))


class BrokerProbe:
    """Asks the bootstrap servers for metadata on a fresh connection (the public
    ``AIOKafkaClient.bootstrap``): True when one answers."""

    def __init__(self, bootstrap_servers: list[str], timeout_s: float = PROBE_TIMEOUT_S) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.timeout_s = timeout_s

    async def __call__(self) -> tuple[bool, str]:
        from aiokafka import AIOKafkaClient

        client = AIOKafkaClient(
            bootstrap_servers=self.bootstrap_servers,
            request_timeout_ms=int(self.timeout_s * 1000),
            client_id="salesops-probe",
        )
        try:
            await asyncio.wait_for(client.bootstrap(), self.timeout_s)
        except Exception as exc:  # any failure to get metadata means "not reachable"
            name, text = type(exc).__name__, str(exc)
            return False, text if text.startswith(name) else f"{name}: {text}".rstrip(": ")
        finally:
            await client.close()
        return True, ""


def install(app: Any, metrics: Any, bootstrap_servers: list[str]) -> BrokerHealth:
    """Wire broker health into a worker: metadata backoff, the log filter on the client
    loggers, the metrics, and a probe timer on the Faust ``app``."""
    install_metadata_backoff()
    broker = ",".join(bootstrap_servers)

    def on_change(up: bool) -> None:
        metrics.broker_up.set(1 if up else 0)
        if not up:
            metrics.broker_disconnects.inc()

    health = BrokerHealth(broker, on_change=on_change, on_suppressed=metrics.client_log_suppressed.inc)
    attached = health.install()
    metrics.broker_up.set(1)  # the worker starts after ensure_topics talked to the broker
    probe = BrokerProbe(bootstrap_servers)

    async def probe_broker() -> None:
        reachable, error = await probe()
        health.observe(reachable, error)

    app.timer(PROBE_INTERVAL_S, name="broker-probe")(probe_broker)
    log.info("broker_health_installed broker=%s loggers=%s", broker, len(attached))
    return health
