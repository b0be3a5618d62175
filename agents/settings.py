"""The one typed settings object, read from ``SALESOPS_*`` environment variables.

Built once at start and passed down; no other module reads ``os.environ``.  Every field
has a default that works with the local stack (``make up``).  ``salesops settings``
prints the effective values (secrets masked) and the README's configuration table is
generated from :data:`FIELDS` docs.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qsl, urlsplit, urlunsplit


class SettingsError(ValueError):
    """An environment variable has a value that cannot be used."""


T = TypeVar("T")
MASK = "****"
MIN_RESPONDENT_SECRET_CHARS = 16


@dataclass(frozen=True)
class Secret(Generic[T]):
    """A value that must not appear in ``salesops settings``, logs or ``repr``.

    Masking is by type: ``str()`` and ``repr()`` show :meth:`masked`, and the raw value is
    read only where it is used (``.value``: the HMAC key, the client that connects).  A
    secret is falsy when its value is empty.
    """

    value: T = field(repr=False)

    def masked(self) -> str:
        return MASK if self.value else ""

    def __str__(self) -> str:
        return self.masked()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.masked()!r})"

    def __bool__(self) -> bool:
        return bool(self.value)


class SecretURL(Secret[str]):
    """A URL whose path or query is the secret (Slack, Teams and most webhook URLs):
    shown as ``scheme://host[:port]/****``."""

    def masked(self) -> str:
        if not self.value:
            return ""
        parts = urlsplit(self.value)
        host = parts.netloc.rpartition("@")[2]
        return f"{parts.scheme}://{host}/{MASK}" if parts.scheme and host else MASK


class CredentialURL(Secret[str]):
    """A service URL whose secret is its password (``redis://user:pass@host:port/0``, or
    ``?password=...``): shown with the password and every query value as ``****``."""

    def masked(self) -> str:
        if not self.value:
            return ""
        parts = urlsplit(self.value)
        userinfo, at, host = parts.netloc.rpartition("@")
        if at:
            user, colon, _password = userinfo.partition(":")
            host = (f"{user}:{MASK}" if colon else MASK) + "@" + host
        query = "&".join(f"{k}={MASK}" for k, _v in parse_qsl(parts.query, keep_blank_values=True))
        return urlunsplit((parts.scheme, host, parts.path, query, ""))


class SecretHeaders(Secret[Mapping[str, str]]):
    """HTTP headers (an Authorization header, an API key): names shown, values ``****``."""

    def masked(self) -> str:
        return json.dumps(dict.fromkeys(self.value, MASK), sort_keys=True)


def _f(default: Any, doc: str) -> Any:
    return field(default=default, metadata={"doc": doc})


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str = _f("127.0.0.1:9092", "Kafka bootstrap servers, comma-separated host:port")
    app_id: str = _f("salesops", "Faust app id = Kafka consumer group and changelog topic prefix")
    redis_url: CredentialURL = _f(
        CredentialURL("redis://127.0.0.1:6380/0"),
        "Redis URL for view snapshots; empty disables the Redis sink (its password is a secret)",
    )
    redis_prefix: str = _f("salesops", "Prefix of every Redis key")
    web_host: str = _f(
        "127.0.0.1",
        "Address the worker's web server (/metrics, /healthz, /readyz, /api) binds to; "
        "0.0.0.0 exposes it on every interface (set SALESOPS_API_TOKEN then)",
    )
    web_port: int = _f(6066, "Port of the worker's web server")
    api_token: Secret[str] = _f(
        Secret(""),
        "Bearer token every /api request must carry when set (a secret); "
        "/metrics, /healthz and /readyz stay open",
    )
    session_timeout_s: float = _f(
        30.0,
        "Consumer group session timeout: how long a crashed worker's partitions wait before "
        "the group moves them (broker bounds: group.min/max.session.timeout.ms)",
    )
    store: str = _f("memory://", "Faust table store: memory:// (state rebuilt from changelogs) or rocksdb://")
    data_dir: str = _f(".local/worker", "Faust data directory (RocksDB files)")
    topic_partitions: int = _f(6, "Partitions of the topics salesops creates")
    topic_replication: int = _f(1, "Replication factor of the topics salesops creates")
    deal_events_topic: str = _f("crm.deal-events", "Input: DealEvent, key deal_id")
    responses_topic: str = _f("hr.survey-responses", "Input: SurveyResponse, key team")
    invitations_topic: str = _f("hr.survey-invitations", "Input: SurveyInvitation, key team")
    dead_letter_topic: str = _f("salesops.dead-letter", "Output: DeadLetter records (bad input + reason)")
    alerts_topic: str = _f("salesops.alerts", "Output: Alert records (stalled deals, eNPS drops)")
    output_topic_prefix: str = _f("salesops.", "Prefix of the aggregate topics (pipeline, funnel, ...)")
    pipelines_file: str = _f("", "Pipeline/stage config (TOML); empty = the built-in default")
    rates_file: str = _f("", "Currency rates into the reporting currency (TOML); empty = built-in")
    timezone: str = _f("UTC", "Time zone of calendar days, months and quarters")
    trailing_windows_days: tuple[int, ...] = _f((30, 90), "Trailing windows in days, comma-separated")
    fiscal_year_start_month: int = _f(
        1, "Month (1..12) a fiscal year starts in; FY2018 is named by the calendar year it ends in"
    )
    quotas_file: str = _f(
        "",
        "Quotas and territories (TOML); empty = no attainment, coverage or commission "
        "(/api/attainment says so)",
    )
    plans_file: str = _f("", "Commission plans (TOML); empty = no commission statements")
    forecast_interval_s: float = _f(
        300.0, "Pause between two runs of the forecast, attainment and commission (from the end of one run)"
    )
    forecast_trials: int = _f(10_000, "Monte Carlo trials per forecast (at least 10000)")
    forecast_seed: int = _f(0, "Seed of the forecast's Monte Carlo (same state and seed, same quantiles)")
    forecast_window_days: int = _f(
        365, "Trailing window (days) the forecast learns stage transitions, creation rate and cycles from"
    )
    max_future_s: int = _f(86_400, "Reject events whose time is further than this in the future")
    flush_interval_s: float = _f(2.0, "At most one publication of changed views per this many seconds")
    clock: str = _f("wall", "Clock for stall detection: wall (live) or watermark (replay)")
    allowed_lateness_s: int = _f(3600, "Watermark = max event time seen minus this")
    stall_check_interval_s: float = _f(1.0, "How often due stall checks are looked for")
    anonymity_threshold: int = _f(5, "Groups with fewer responses show their count only")
    enps_drop_points: float = _f(10.0, "eNPS drop alert: 30-day eNPS fell by more than this many points")
    respondent_secret: Secret[str] = _f(
        Secret(""),
        "HMAC key pseudonymising respondents in table keys (a secret); the worker refuses to "
        f"start without one of at least {MIN_RESPONDENT_SECRET_CHARS} characters",
    )
    webhook_url: SecretURL = _f(
        SecretURL(""), "Alert webhook URL (Slack-compatible JSON; a secret); empty disables it"
    )
    webhook_headers: SecretHeaders = _f(
        SecretHeaders(MappingProxyType({})), "Extra webhook headers as a JSON object (values are secrets)"
    )
    webhook_template: str = _f("", "string.Template for the webhook body; empty = Slack-style default")
    webhook_retry_budget: int = _f(8, "Delivery attempts before an alert goes to the dead-letter topic")
    webhook_timeout_s: float = _f(10.0, "Timeout of one webhook request")
    shutdown_flush_timeout_s: float = _f(
        10.0,
        "On SIGTERM, how long the worker waits for the broker to acknowledge what it produced "
        "(and to commit); then it abandons the rest and stops (the input those records came "
        "from was not committed: the next worker processes it again)",
    )
    log_level: str = _f("INFO", "Log level")

    def __post_init__(self) -> None:
        if self.clock not in ("wall", "watermark"):
            raise SettingsError(f"SALESOPS_CLOCK must be wall or watermark, got {self.clock!r}")
        if self.topic_partitions < 1:
            raise SettingsError("SALESOPS_TOPIC_PARTITIONS must be >= 1")
        if not 6 <= self.session_timeout_s <= 1800:
            raise SettingsError("SALESOPS_SESSION_TIMEOUT_S must be within the broker defaults 6..1800")
        if not 1 <= self.fiscal_year_start_month <= 12:
            raise SettingsError("SALESOPS_FISCAL_YEAR_START_MONTH must be within 1..12")
        if self.forecast_trials < 10_000:
            raise SettingsError("SALESOPS_FORECAST_TRIALS must be >= 10000")
        if self.forecast_interval_s <= 0:
            raise SettingsError("SALESOPS_FORECAST_INTERVAL_S must be > 0")
        if self.forecast_window_days < 1:
            raise SettingsError("SALESOPS_FORECAST_WINDOW_DAYS must be >= 1")
        if self.shutdown_flush_timeout_s < 0:
            raise SettingsError("SALESOPS_SHUTDOWN_FLUSH_TIMEOUT_S must be >= 0")
        if self.anonymity_threshold < 1:
            raise SettingsError("SALESOPS_ANONYMITY_THRESHOLD must be >= 1")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = env_name(f.name)
            if name not in env:
                continue
            raw = env[name]
            values[f.name] = _convert(f.name, f.type, raw)
        return cls(**values)

    def topic(self, view: str) -> str:
        """Name of an aggregate topic, e.g. ``topic("pipeline")`` -> ``salesops.pipeline``."""
        return f"{self.output_topic_prefix}{view}"

    @property
    def bootstrap_list(self) -> list[str]:
        return [s.strip() for s in self.kafka_bootstrap.split(",") if s.strip()]


def env_name(field_name: str) -> str:
    return "SALESOPS_" + field_name.upper()


_SECRET_TYPES: dict[str, type[Secret[Any]]] = {
    "Secret[str]": Secret,
    "SecretURL": SecretURL,
    "CredentialURL": CredentialURL,
}


def _convert(name: str, typ: Any, raw: str) -> Any:
    typ = str(typ)
    try:
        if typ == "int":
            return int(raw)
        if typ == "float":
            return float(raw)
        if typ.startswith("tuple"):
            return tuple(int(x) for x in raw.split(",") if x.strip())
        if typ == "SecretHeaders":
            value = json.loads(raw) if raw.strip() else {}
            if not isinstance(value, dict):
                raise ValueError("not a JSON object")
            return SecretHeaders(MappingProxyType({str(k): str(v) for k, v in value.items()}))
        if typ in _SECRET_TYPES:
            return _SECRET_TYPES[typ](raw.strip())
    except ValueError as exc:
        shown = "<hidden>" if typ.startswith("Secret") else repr(raw)  # a bad secret is still a secret
        raise SettingsError(f"{env_name(name)}={shown}: {exc}") from None
    return raw


def respondent_secret_problem(settings: Settings) -> str | None:
    """Why the worker must not start with this respondent secret, or None.

    The secret keys the HMAC that pseudonymises respondents: empty, the old published
    default or a short one would let anyone who reads the tables recompute the keys of
    known respondent ids.  ``salesops worker`` refuses to start (exit 2) with this text.
    """
    secret = settings.respondent_secret.value
    if secret in ("", "change-me") or len(secret) < MIN_RESPONDENT_SECRET_CHARS:
        what = (
            "is not set" if not secret else "is the old default" if secret == "change-me" else "is too short"
        )
        return (
            f"SALESOPS_RESPONDENT_SECRET {what}: the worker needs a secret of at least "
            f"{MIN_RESPONDENT_SECRET_CHARS} characters to pseudonymise respondents; generate one with "
            "`python -c 'import secrets; print(secrets.token_hex(32))'` and keep it (a new secret "
            "keys the same respondents differently)"
        )
    return None


def is_loopback(host: str) -> bool:
    """True when binding ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name or "" (every interface)


def masked_items(settings: Settings) -> list[tuple[str, str]]:
    """(env var, value as shown) of every setting, secrets masked by their type."""
    out = []
    for f in fields(settings):
        value = getattr(settings, f.name)
        if isinstance(value, tuple):
            value = ",".join(str(x) for x in value)
        out.append((env_name(f.name), str(value)))
    return out


def describe() -> list[tuple[str, str, str]]:
    """(env var, default, meaning) for every setting: --help and the README use it."""
    out = []
    for f in fields(Settings):
        default = f.default
        if isinstance(default, tuple):
            default = ",".join(str(x) for x in default)
        out.append((env_name(f.name), str(default), f.metadata.get("doc", "")))
    return out
