"""The one typed settings object, read from ``SALESOPS_*`` environment variables.

Built once at start and passed down; no other module reads ``os.environ``.  Every field
has a default that works with the local stack (``make up``).  ``salesops settings``
prints the effective values (secrets masked) and the README's configuration table is
generated from :data:`FIELDS` docs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any


class SettingsError(ValueError):
    """An environment variable has a value that cannot be used."""


@dataclass(frozen=True)
class Secret:
    """A value that must not appear in logs or ``repr``."""

    value: str = field(repr=False)

    def __str__(self) -> str:
        return "****" if self.value else ""


def _f(default: Any, doc: str) -> Any:
    return field(default=default, metadata={"doc": doc})


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str = _f("127.0.0.1:9092", "Kafka bootstrap servers, comma-separated host:port")
    app_id: str = _f("salesops", "Faust app id = Kafka consumer group and changelog topic prefix")
    redis_url: str = _f(
        "redis://127.0.0.1:6380/0", "Redis URL for view snapshots; empty disables the Redis sink"
    )
    redis_prefix: str = _f("salesops", "Prefix of every Redis key")
    web_host: str = _f("0.0.0.0", "Address the worker's web server (/metrics, /api) binds to")
    web_port: int = _f(6066, "Port of the worker's web server")
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
    max_future_s: int = _f(86_400, "Reject events whose time is further than this in the future")
    flush_interval_s: float = _f(2.0, "At most one publication of changed views per this many seconds")
    clock: str = _f("wall", "Clock for stall detection: wall (live) or watermark (replay)")
    allowed_lateness_s: int = _f(3600, "Watermark = max event time seen minus this")
    stall_check_interval_s: float = _f(1.0, "How often due stall checks are looked for")
    anonymity_threshold: int = _f(5, "Groups with fewer responses show their count only")
    enps_drop_points: float = _f(10.0, "eNPS drop alert: 30-day eNPS fell by more than this many points")
    respondent_secret: Secret = _f(Secret("change-me"), "HMAC key pseudonymising respondents in table keys")
    webhook_url: str = _f("", "Alert webhook URL (Slack-compatible JSON); empty disables it")
    webhook_headers: dict[str, str] = _f(None, "Extra webhook headers as a JSON object")
    webhook_template: str = _f("", "string.Template for the webhook body; empty = Slack-style default")
    webhook_retry_budget: int = _f(8, "Delivery attempts before an alert goes to the dead-letter topic")
    webhook_timeout_s: float = _f(10.0, "Timeout of one webhook request")
    log_level: str = _f("INFO", "Log level")

    def __post_init__(self) -> None:
        if self.webhook_headers is None:
            object.__setattr__(self, "webhook_headers", {})
        if self.clock not in ("wall", "watermark"):
            raise SettingsError(f"SALESOPS_CLOCK must be wall or watermark, got {self.clock!r}")
        if self.topic_partitions < 1:
            raise SettingsError("SALESOPS_TOPIC_PARTITIONS must be >= 1")
        if not 6 <= self.session_timeout_s <= 1800:
            raise SettingsError("SALESOPS_SESSION_TIMEOUT_S must be within the broker defaults 6..1800")
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

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    def topic(self, view: str) -> str:
        """Name of an aggregate topic, e.g. ``topic("pipeline")`` -> ``salesops.pipeline``."""
        return f"{self.output_topic_prefix}{view}"

    @property
    def bootstrap_list(self) -> list[str]:
        return [s.strip() for s in self.kafka_bootstrap.split(",") if s.strip()]

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)


def env_name(field_name: str) -> str:
    return "SALESOPS_" + field_name.upper()


def _convert(name: str, typ: Any, raw: str) -> Any:
    typ = str(typ)
    try:
        if typ == "int":
            return int(raw)
        if typ == "float":
            return float(raw)
        if typ.startswith("tuple"):
            return tuple(int(x) for x in raw.split(",") if x.strip())
        if typ.startswith("dict"):
            value = json.loads(raw) if raw.strip() else {}
            if not isinstance(value, dict):
                raise ValueError("not a JSON object")
            return {str(k): str(v) for k, v in value.items()}
        if typ == "Secret":
            return Secret(raw)
    except ValueError as exc:
        raise SettingsError(f"{env_name(name)}={raw!r}: {exc}") from None
    return raw


def describe() -> list[tuple[str, str, str]]:
    """(env var, default, meaning) for every setting: --help and the README use it."""
    out = []
    for f in fields(Settings):
        default = f.default
        if isinstance(default, tuple):
            default = ",".join(str(x) for x in default)
        elif default is None:
            default = "{}"
        out.append((env_name(f.name), str(default), f.metadata.get("doc", "")))
    return out
