"""Kafka producer and admin helpers shared by the command line tools (kafka-python).

The worker talks to Kafka through Faust/aiokafka; the CLI tools (``import``,
``simulate``, ``topics``) are short synchronous programs and use kafka-python.  Both
helpers fail fast: an unreachable broker raises :class:`BrokerUnavailable` naming the
bootstrap address after ``connect_timeout_s`` instead of retrying for minutes, and a
record the broker did not acknowledge surfaces as :class:`DeliveryError` at
:meth:`DeliveryTracker.flush`.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from kafka import KafkaAdminClient, KafkaProducer
from kafka.codec import has_lz4
from kafka.errors import KafkaError

from agents.settings import Settings

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
BATCH_SIZE = 256 * 1024


class BrokerUnavailable(RuntimeError):
    """No broker answered at the bootstrap address."""


class DeliveryError(RuntimeError):
    """The broker did not acknowledge every record produced."""


def describe_error(exc: BaseException) -> str:
    """``Type: message`` once (kafka-python's messages already start with the type); a
    :class:`DeliveryError`, our own summary, is its message alone."""
    if isinstance(exc, DeliveryError):
        return str(exc)
    name = type(exc).__name__
    text = str(exc)
    return text if text.startswith(name) else f"{name}: {text}" if text else name


def _unavailable(settings: Settings, exc: BaseException) -> BrokerUnavailable:
    return BrokerUnavailable(
        f"cannot reach Kafka at {settings.kafka_bootstrap} ({describe_error(exc)}); "
        "is the broker running? (SALESOPS_KAFKA_BOOTSTRAP)"
    )


def quiet_client_logs(settings: Settings) -> None:
    """Silence kafka-python's own logging in the CLI tools unless SALESOPS_LOG_LEVEL=DEBUG.

    At INFO it narrates every connection, and an unreachable broker produces a screenful
    of retries; the tools report failures themselves in one line.
    """
    if settings.log_level.upper() != "DEBUG":
        logging.getLogger("kafka").setLevel(logging.CRITICAL)


def make_admin(settings: Settings, connect_timeout_s: float = CONNECT_TIMEOUT_S) -> KafkaAdminClient:
    """An admin client, or :class:`BrokerUnavailable` within ``connect_timeout_s``."""
    timeout_ms = int(connect_timeout_s * 1000)
    try:
        return KafkaAdminClient(
            bootstrap_servers=settings.bootstrap_list,
            client_id=f"{settings.app_id}-admin",
            bootstrap_timeout_ms=timeout_ms,
            request_timeout_ms=max(timeout_ms, 15_000),
        )
    except (KafkaError, OSError) as exc:
        raise _unavailable(settings, exc) from None


def make_producer(settings: Settings, connect_timeout_s: float = CONNECT_TIMEOUT_S) -> KafkaProducer:
    """A producer for bytes keys and values, or :class:`BrokerUnavailable`.

    ``acks=all`` with idempotence so retries neither lose nor duplicate records;
    ``linger_ms=20`` and 256 KiB batches because the tools send bursts; lz4 only when the
    codec library is installed (it is optional in kafka-python).
    """
    timeout_ms = int(connect_timeout_s * 1000)
    try:
        return KafkaProducer(
            bootstrap_servers=settings.bootstrap_list,
            client_id=f"{settings.app_id}-cli",
            acks="all",
            linger_ms=20,
            batch_size=BATCH_SIZE,
            compression_type="lz4" if has_lz4() else None,
            retries=5,
            bootstrap_timeout_ms=timeout_ms,
            # send() blocks at most this long for metadata or buffer space, so a broker that
            # disappears mid-run ends the tool with an error rather than a hang.
            max_block_ms=max(timeout_ms, 15_000),
            delivery_timeout_ms=60_000,
        )
    except (KafkaError, OSError) as exc:
        raise _unavailable(settings, exc) from None


class DeliveryTracker:
    """Counts acknowledged records and keeps the first delivery error.

    ``send(topic, key, value)`` is non-blocking; :meth:`flush` waits for every record
    and raises :class:`DeliveryError` if any was not acknowledged.
    """

    def __init__(self, producer: KafkaProducer) -> None:
        self.producer = producer
        self.sent = 0
        self.delivered = 0
        self.failed = 0
        self.first_error: BaseException | None = None
        self._lock = threading.Lock()  # callbacks run on the producer's I/O thread

    def send(self, topic: str, key: bytes, value: bytes) -> None:
        future = self.producer.send(topic, key=key, value=value)
        self.sent += 1
        future.add_callback(self._ok)
        future.add_errback(self._failed)

    def _ok(self, _metadata: Any) -> None:
        with self._lock:
            self.delivered += 1

    def _failed(self, exc: BaseException) -> None:
        with self._lock:
            self.failed += 1
            if self.first_error is None:
                self.first_error = exc
        log.error("delivery failed error=%r", exc)

    def flush(self, timeout_s: float = 60.0) -> None:
        try:
            self.producer.flush(timeout=timeout_s)
        except KafkaError as exc:
            raise DeliveryError(f"flush did not complete: {describe_error(exc)}") from None
        with self._lock:
            if self.first_error is not None:
                raise DeliveryError(
                    f"{self.failed} of {self.sent} records were not acknowledged; first error: "
                    f"{describe_error(self.first_error)}"
                )

    def close(self, timeout_s: float = 10.0) -> None:
        try:
            self.producer.close(timeout=timeout_s)
        except KafkaError as exc:  # closing after a failure must not hide the real error
            log.warning("producer close failed error=%r", exc)
