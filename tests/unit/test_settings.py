"""Settings: every variable is documented where users look, and bad values fail at start."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agents.settings import (
    MIN_RESPONDENT_SECRET_CHARS,
    CredentialURL,
    Secret,
    SecretURL,
    Settings,
    SettingsError,
    describe,
    is_loopback,
    respondent_secret_problem,
)

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_has_a_row_in_the_readme_configuration_table() -> None:
    text = README.read_text()
    missing = [name for name, _default, _doc in describe() if f"| `{name}` |" not in text]
    assert missing == []


def test_values_are_converted_to_their_field_types() -> None:
    s = Settings.from_env(
        {
            "SALESOPS_SESSION_TIMEOUT_S": "10",
            "SALESOPS_TOPIC_PARTITIONS": "12",
            "SALESOPS_TRAILING_WINDOWS_DAYS": "7, 30",
            "SALESOPS_WEBHOOK_HEADERS": '{"Authorization": "Bearer x"}',
            "SALESOPS_RESPONDENT_SECRET": "s3cret",
        }
    )
    assert s.session_timeout_s == 10.0
    assert s.topic_partitions == 12
    assert s.trailing_windows_days == (7, 30)
    assert dict(s.webhook_headers.value) == {"Authorization": "Bearer x"}
    assert s.respondent_secret == Secret("s3cret") and "s3cret" not in repr(s)


@pytest.mark.parametrize(
    ("var", "raw", "message"),
    [
        ("SALESOPS_SESSION_TIMEOUT_S", "3", "6..1800"),
        ("SALESOPS_SESSION_TIMEOUT_S", "soon", "SALESOPS_SESSION_TIMEOUT_S='soon'"),
        ("SALESOPS_TOPIC_PARTITIONS", "0", ">= 1"),
        ("SALESOPS_CLOCK", "sundial", "wall or watermark"),
        ("SALESOPS_FISCAL_YEAR_START_MONTH", "0", "1..12"),
        ("SALESOPS_FISCAL_YEAR_START_MONTH", "13", "1..12"),
        ("SALESOPS_WEBHOOK_HEADERS", "[1]", "not a JSON object"),
        ("SALESOPS_SHUTDOWN_FLUSH_TIMEOUT_S", "-1", "SALESOPS_SHUTDOWN_FLUSH_TIMEOUT_S must be >= 0"),
    ],
)
def test_bad_values_name_the_variable(var: str, raw: str, message: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(message)):
        Settings.from_env({var: raw})


# ---------------------------------------------------------------- secrets, masked by type

SECRETS = {
    "SALESOPS_REDIS_URL": "redis://app:r3dis-pw@redis.internal:6379/0?password=q-pw",
    "SALESOPS_WEBHOOK_URL": "https://hooks.slack.com/services/T000/B000/sl4ck-path-secret",
    "SALESOPS_WEBHOOK_HEADERS": '{"Authorization": "Bearer wh-token", "X-Api-Key": "wh-key"}',
    "SALESOPS_API_TOKEN": "api-t0ken-value",
    "SALESOPS_RESPONDENT_SECRET": "resp0ndent-secret-value-0123456789",
}
SECRET_VALUES = ["r3dis-pw", "q-pw", "sl4ck-path-secret", "T000", "wh-token", "wh-key", "api-t0ken-value"]
SECRET_VALUES.append("resp0ndent-secret-value-0123456789")


def test_settings_output_masks_every_secret(monkeypatch, capsys) -> None:
    from agents.cli import main

    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    assert main(["settings"]) == 0
    out = capsys.readouterr().out
    assert [v for v in SECRET_VALUES if v in out] == []
    # what is shown instead: enough to recognise the setting, nothing that opens it
    assert "SALESOPS_REDIS_URL=redis://app:****@redis.internal:6379/0?password=****\n" in out
    assert "SALESOPS_WEBHOOK_URL=https://hooks.slack.com/****\n" in out
    assert 'SALESOPS_WEBHOOK_HEADERS={"Authorization": "****", "X-Api-Key": "****"}\n' in out
    assert "SALESOPS_API_TOKEN=****\n" in out
    assert "SALESOPS_RESPONDENT_SECRET=****\n" in out
    assert "SALESOPS_WEB_HOST=127.0.0.1\n" in out


def test_secrets_keep_their_raw_value_for_use_and_mask_it_everywhere_else() -> None:
    s = Settings.from_env(SECRETS)
    assert s.redis_url.value == SECRETS["SALESOPS_REDIS_URL"]
    assert s.webhook_url.value == SECRETS["SALESOPS_WEBHOOK_URL"]
    assert dict(s.webhook_headers.value) == {"Authorization": "Bearer wh-token", "X-Api-Key": "wh-key"}
    assert s.api_token.value == "api-t0ken-value"
    shown = [repr(s), str(s), f"{s.redis_url} {s.webhook_url!r} {s.webhook_headers}", "%s" % s.api_token]  # noqa: UP031
    assert [v for v in SECRET_VALUES for text in shown if v in text] == []


@pytest.mark.parametrize(
    ("cls", "raw", "shown"),
    [
        (SecretURL, "https://hooks.slack.com/services/T/B/X", "https://hooks.slack.com/****"),
        (SecretURL, "http://user:pw@127.0.0.1:8080/hook?token=x", "http://127.0.0.1:8080/****"),
        (SecretURL, "not a url", "****"),
        (SecretURL, "", ""),
        (CredentialURL, "redis://127.0.0.1:6380/0", "redis://127.0.0.1:6380/0"),  # nothing secret
        (CredentialURL, "redis://:pw@[::1]:6380/2", "redis://:****@[::1]:6380/2"),
        (CredentialURL, "rediss://pw@host/0", "rediss://****@host/0"),  # user-only: may be the secret
        (CredentialURL, "redis://h/0?password=pw&db=1", "redis://h/0?password=****&db=****"),
        (Secret, "x", "****"),
        (Secret, "", ""),
    ],
)
def test_masks_by_type(cls: type[Secret[str]], raw: str, shown: str) -> None:
    assert str(cls(raw)) == shown
    assert repr(cls(raw)) == f"{cls.__name__}({shown!r})"
    assert bool(cls(raw)) is bool(raw)


def test_a_bad_secret_value_is_not_echoed_in_the_error() -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"SALESOPS_WEBHOOK_HEADERS": '{"Authorization": "Bearer wh-token"'})  # no }
    assert "SALESOPS_WEBHOOK_HEADERS=<hidden>" in str(err.value) and "wh-token" not in str(err.value)


def test_sink_errors_do_not_quote_secret_urls() -> None:
    from sinks.base import SinkError
    from sinks.redis_snapshot import RedisSnapshotSink
    from sinks.webhook import WebhookSink

    with pytest.raises(SinkError) as err:  # port 1: nothing listens there
        RedisSnapshotSink("redis://:r3dis-pw@127.0.0.1:1/0", "x").setup()
    assert "r3dis-pw" not in str(err.value) and "127.0.0.1:1" in str(err.value)
    for url in (
        "ftp://hooks.example.com/sl4ck-path-secret",
        "https://hooks.example.com:99999/sl4ck-path-secret",
    ):
        with pytest.raises(SinkError) as err:
            WebhookSink(url).setup()
        assert "sl4ck-path-secret" not in str(err.value)


# ---------------------------------------------------------------- the respondent secret


@pytest.mark.parametrize(
    ("raw", "what"),
    [(None, "is not set"), ("", "is not set"), ("  ", "is not set"), ("change-me", "is the old default")],
)
def test_no_usable_respondent_secret_is_a_problem_naming_the_variable(raw: str | None, what: str) -> None:
    env = {} if raw is None else {"SALESOPS_RESPONDENT_SECRET": raw}
    problem = respondent_secret_problem(Settings.from_env(env))
    assert problem is not None
    assert problem.startswith(f"SALESOPS_RESPONDENT_SECRET {what}")
    assert "secrets.token_hex(32)" in problem


def test_a_short_respondent_secret_is_a_problem_and_a_long_one_is_not() -> None:
    short = "x" * (MIN_RESPONDENT_SECRET_CHARS - 1)
    assert "too short" in (
        respondent_secret_problem(Settings.from_env({"SALESOPS_RESPONDENT_SECRET": short})) or ""
    )
    good = Settings.from_env({"SALESOPS_RESPONDENT_SECRET": "x" * MIN_RESPONDENT_SECRET_CHARS})
    assert respondent_secret_problem(good) is None


def test_worker_refuses_to_start_without_a_respondent_secret(monkeypatch, capsys) -> None:
    from agents.cli import main

    monkeypatch.delenv("SALESOPS_RESPONDENT_SECRET", raising=False)
    # an unreachable broker: the refusal comes before any connection attempt
    monkeypatch.setenv("SALESOPS_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    assert main(["worker"]) == 2
    err = capsys.readouterr().err
    assert "configuration error: SALESOPS_RESPONDENT_SECRET is not set" in err
    assert "python -c 'import secrets; print(secrets.token_hex(32))'" in err
    monkeypatch.setenv("SALESOPS_RESPONDENT_SECRET", "change-me")
    assert main(["worker"]) == 2
    assert "old default" in capsys.readouterr().err


# ---------------------------------------------------------------- where the web server listens


def test_the_web_server_binds_loopback_by_default() -> None:
    assert Settings().web_host == "127.0.0.1" and is_loopback(Settings().web_host)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        *[("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("localhost", True)],
        *[("0.0.0.0", False), ("::", False), ("", False), ("10.1.2.3", False), ("worker.example", False)],
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
