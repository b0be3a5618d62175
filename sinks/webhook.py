"""Alert delivery to an HTTP webhook (Slack-compatible by default).

One POST per alert record (``schemas/Alert.avsc``, e.g. ``AlertTransition.to_record()``),
with a JSON body and the header ``Idempotency-Key: {alert_id}:{status}`` so a receiver can
drop repeats.  Outcomes:

* 2xx -- delivered; the ``(alert_id, status)`` pair is marked in the :class:`DeliveryLedger`
  and never sent again by any sink sharing that ledger (the worker backs it with a table,
  so the promise survives restarts);
* 5xx, 408, 429, connection errors, timeouts -- retried with exponential backoff and full
  jitter (:class:`~sinks.base.Backoff`; a ``Retry-After`` in seconds is honoured up to the
  backoff maximum) until ``retry_budget`` attempts are used, then ``delivered=False``;
* any other status (400, 401, 404, a redirect, ...) -- not retryable: the same request
  would fail the same way, so ``delivered=False`` at once.

Failures are data, not exceptions (:class:`DeliveryResult`): the worker dead-letters an
undelivered alert with ``last_error`` as the reason and goes on consuming, so a webhook
outage neither stops the stream nor loses an alert.  For the same reason ``flush`` does
not raise :class:`~sinks.base.SinkUnavailable`: the retry budget bounds the wait instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from string import Template
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp

from sinks.base import Backoff, Sink, SinkError

log = logging.getLogger(__name__)

COLOR_FIRING = "#E01E5A"  # Slack's red
COLOR_RESOLVED = "#2EB67D"  # Slack's green
COLOR_OTHER = "#9E9E9E"

#: A record with every field filled, used by ``setup`` to try a custom template.
SAMPLE_RECORD: dict[str, Any] = {
    "alert_id": "stalled:D-1:proposal:0",
    "kind": "STALLED_DEAL",
    "status": "FIRING",
    "subject": "D-1",
    "pipeline": "default",
    "stage": "proposal",
    "owner_id": "u-1",
    "amount": "1000.00",
    "currency": "EUR",
    "days_in_stage": 22.5,
    "threshold": 21.0,
    "value": 22.5,
    "unit": "days",
    "fired_at": 0,
    "resolved_at": None,
    "summary": 'Deal D-1 "sample" stalled',
}


class DeliveryLedger(Protocol):
    """Which ``(alert_id, status)`` pairs a receiver has acknowledged with a 2xx."""

    def already_delivered(self, alert_id: str, status: str) -> bool: ...
    def mark_delivered(self, alert_id: str, status: str) -> None: ...


class InMemoryLedger:
    """A ledger that lives as long as the process: for tests and the demo."""

    def __init__(self) -> None:
        self._delivered: set[tuple[str, str]] = set()

    def already_delivered(self, alert_id: str, status: str) -> bool:
        return (alert_id, status) in self._delivered

    def mark_delivered(self, alert_id: str, status: str) -> None:
        self._delivered.add((alert_id, status))

    def __len__(self) -> int:
        return len(self._delivered)


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """Outcome of one alert: ``attempts`` is the number of HTTP requests made (0 when the
    ledger says it was already delivered -- then ``delivered`` is True -- or when it was not
    attempted because an earlier alert of the same flush exhausted its budget)."""

    delivered: bool
    attempts: int
    last_error: str | None = None


def idempotency_key(record: dict[str, Any]) -> str:
    return f"{record['alert_id']}:{record['status']}"


def _fmt_amount(amount: str | None, currency: str | None) -> str | None:
    if amount is None:
        return None
    try:
        text = f"{Decimal(amount):,.2f}"
    except InvalidOperation:
        text = amount
    return f"{text} {currency}" if currency else text


#: kind -> (title of the subject, of the value, of the threshold) in the default body
WORDS: dict[str, tuple[str, str, str]] = {
    "STALLED_DEAL": ("Deal", "Days in stage", "Threshold (days)"),
    "ENPS_DROP": ("Group", "eNPS drop (points)", "Threshold (points)"),
}


def _words(record: dict[str, Any]) -> tuple[str, str, str]:
    """The field titles of a record's kind; an unknown kind gets generic ones with its unit."""
    if record.get("kind") in WORDS:
        return WORDS[record["kind"]]
    unit = f" ({record['unit']})" if record.get("unit") else ""
    return "Subject", f"Value{unit}", f"Threshold{unit}"


def _value(record: dict[str, Any]) -> float | None:
    """The record's measured value.  Records written by version 1 of the contract have no
    ``value``: both kinds kept it in ``days_in_stage`` (an eNPS drop's points too)."""
    value = record.get("value")
    return record.get("days_in_stage") if value is None else value


def default_payload(record: dict[str, Any]) -> dict[str, Any]:
    """Slack-compatible message: text + one colored attachment, and the whole record under
    ``salesops_alert`` for receivers that are not chat tools.  Each kind of alert names its
    subject, value and threshold in its own words (:data:`WORDS`)."""
    status = record["status"]
    color = {"FIRING": COLOR_FIRING, "RESOLVED": COLOR_RESOLVED}.get(status, COLOR_OTHER)
    subject_title, value_title, threshold_title = _words(record)
    value = _value(record)
    threshold = record.get("threshold")
    fields = [
        ("Status", status),
        (subject_title, record.get("subject")),
        ("Pipeline", record.get("pipeline")),
        ("Stage", record.get("stage")),
        ("Owner", record.get("owner_id")),
        ("Amount", _fmt_amount(record.get("amount"), record.get("currency"))),
        (value_title, None if value is None else f"{value:.1f}"),
        (threshold_title, None if threshold is None else f"{threshold:g}"),
    ]
    return {
        "text": record["summary"],
        "attachments": [
            {
                "fallback": record["summary"],
                "color": color,
                "fields": [{"title": t, "value": str(v), "short": True} for t, v in fields if v is not None],
            }
        ],
        "salesops_alert": record,
    }


def render_template(template: str, record: dict[str, Any]) -> str:
    """Render a custom body: each ``$field`` becomes the field's value *as a JSON literal*
    (strings quoted and escaped, None as ``null``), ``$record`` the whole record.

    JSON literals rather than raw text so that no summary, however quoted, can break the
    body: ``{"text": $summary, "alert": $record}`` is always valid JSON.  An unknown
    placeholder raises ``KeyError``/``ValueError`` (``setup`` reports it).
    """
    values = {k: json.dumps(v) for k, v in record.items()}
    values["record"] = json.dumps(record)
    return Template(template).substitute(values)


class WebhookSink(Sink):
    """Deliver alert records to one webhook URL.

    Stateless apart from the injected ledger (and a reusable HTTP connection pool): several
    workers may share one receiver as long as they share the ledger's backing table.
    """

    name = "webhook"

    def __init__(
        self,
        url: str,
        headers: dict[str, str] | None = None,
        template: str | None = None,
        timeout_s: float = 10.0,
        backoff: Backoff | None = None,
        retry_budget: int = 8,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        rng: random.Random | None = None,
        ledger: DeliveryLedger | None = None,
    ) -> None:
        self.url = url
        self.headers = dict(headers or {})
        self.template = template or None  # "" (the settings default) means the Slack-style body
        self.timeout_s = timeout_s
        self.backoff = backoff or Backoff()
        self.retry_budget = retry_budget
        self.ledger: DeliveryLedger = ledger if ledger is not None else InMemoryLedger()
        self._sleep = sleep
        self._rng = rng
        self._buffer: list[dict[str, Any]] = []
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ Sink interface

    def setup(self) -> None:
        """Check the URL, the limits and the template; raise :class:`SinkError` saying what to fix.

        No request is sent: a probe POST would be an alert of its own in a chat channel.
        Messages never quote the URL: its path is often the secret (Slack, Teams).
        """
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https"):
            raise SinkError(
                f"webhook URL must start with http:// or https://, got scheme {parts.scheme!r} "
                "(check SALESOPS_WEBHOOK_URL)"
            )
        if not parts.hostname:
            raise SinkError("webhook URL has no host (check SALESOPS_WEBHOOK_URL)")
        try:
            _ = parts.port
        except ValueError as exc:
            raise SinkError("webhook URL has an invalid port (check SALESOPS_WEBHOOK_URL)") from exc
        if self.retry_budget < 1:
            raise SinkError(f"webhook retry budget must be at least 1 attempt, got {self.retry_budget}")
        if self.timeout_s <= 0:
            raise SinkError(f"webhook timeout must be > 0 seconds, got {self.timeout_s}")
        if self.template is not None:
            try:
                json.loads(render_template(self.template, SAMPLE_RECORD))
            except (KeyError, ValueError) as exc:
                raise SinkError(
                    f"webhook template does not render to JSON ({type(exc).__name__}: {exc}); "
                    f"placeholders are {', '.join('$' + k for k in [*SAMPLE_RECORD, 'record'])}, "
                    'each replaced by a JSON value, e.g. {"text": $summary}'
                ) from exc

    def add(self, item: dict[str, Any]) -> None:
        """Buffer one alert record for the next flush."""
        self._buffer.append(item)

    async def flush(self) -> list[tuple[dict[str, Any], DeliveryResult]]:
        """Deliver the buffered records in order; return each with its result.

        Once a record has exhausted its budget on a retryable failure the receiver is taken
        to be down: the rest are returned undelivered without being attempted (attempts 0),
        which keeps a flush bounded and never sends a RESOLVED ahead of its FIRING.  A
        non-retryable failure concerns that record only; the next ones are still sent.
        """
        batch, self._buffer = self._buffer, []
        results: list[tuple[dict[str, Any], DeliveryResult]] = []
        down: str | None = None
        for record in batch:
            if down is not None:
                results.append((record, DeliveryResult(False, 0, f"not attempted: receiver down ({down})")))
                continue
            result = await self.deliver(record)
            results.append((record, result))
            if not result.delivered and result.attempts >= self.retry_budget:
                down = result.last_error
        return results

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------------ delivery

    def body(self, record: dict[str, Any]) -> bytes:
        """The exact request body for ``record``."""
        if self.template is not None:
            return render_template(self.template, record).encode()
        return json.dumps(default_payload(record), separators=(",", ":")).encode()

    def request_headers(self, record: dict[str, Any]) -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            **self.headers,
            "Idempotency-Key": idempotency_key(record),
        }

    async def deliver(self, record: dict[str, Any]) -> DeliveryResult:
        """POST one alert record, retrying within the budget; never raises for an outage."""
        aid, status = record["alert_id"], record["status"]
        if self.ledger.already_delivered(aid, status):
            log.debug("webhook skip alert_id=%s status=%s reason=already_delivered", aid, status)
            return DeliveryResult(True, 0)
        try:
            body = self.body(record)
        except (KeyError, ValueError, TypeError) as exc:
            return DeliveryResult(False, 0, f"cannot render body: {type(exc).__name__}: {exc}")
        headers = self.request_headers(record)
        delays: Iterator[float] = self.backoff.delays(self._rng)
        last_error: str | None = None
        for attempt in range(1, self.retry_budget + 1):
            retryable, last_error, retry_after = await self._attempt(body, headers)
            if last_error is None:
                self.ledger.mark_delivered(aid, status)
                log.info("webhook delivered alert_id=%s status=%s attempts=%d", aid, status, attempt)
                return DeliveryResult(True, attempt)
            if not retryable:
                log.warning("webhook rejected alert_id=%s status=%s error=%r", aid, status, last_error)
                return DeliveryResult(False, attempt, last_error)
            if attempt < self.retry_budget:
                delay = next(delays)
                if retry_after is not None:
                    delay = max(delay, min(retry_after, self.backoff.maximum_s))
                log.info(
                    "webhook retry alert_id=%s attempt=%d error=%r delay_s=%.3f",
                    aid,
                    attempt,
                    last_error,
                    delay,
                )
                await self._sleep(delay)
        log.warning(
            "webhook gave up alert_id=%s status=%s attempts=%d error=%r",
            aid,
            status,
            self.retry_budget,
            last_error,
        )
        return DeliveryResult(False, self.retry_budget, last_error)

    async def _attempt(self, body: bytes, headers: dict[str, str]) -> tuple[bool, str | None, float | None]:
        """One request: (retryable, error or None when delivered, Retry-After seconds)."""
        session = self._get_session()
        try:
            async with session.post(self.url, data=body, headers=headers, allow_redirects=False) as resp:
                if 200 <= resp.status < 300:
                    return False, None, None
                text = (await resp.text(errors="replace"))[:200]
                error = f"HTTP {resp.status}" + (f": {text}" if text else "")
                if resp.status >= 500 or resp.status in (408, 429):
                    return True, error, _retry_after_s(resp.headers.get("Retry-After"))
                return False, error, None
        except TimeoutError:
            return True, f"timeout after {self.timeout_s:g} s", None
        except (aiohttp.ClientError, OSError) as exc:
            return True, f"connection error: {type(exc).__name__}: {exc}", None

    def _get_session(self) -> aiohttp.ClientSession:
        # a session belongs to the loop it was made in; flush() runs a loop of its own
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._session_loop is not loop:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))
            self._session_loop = loop
        return self._session


def _retry_after_s(value: str | None) -> float | None:
    """``Retry-After`` given in seconds; the HTTP-date form is ignored (backoff applies)."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
