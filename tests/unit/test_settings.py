"""Settings: every variable is documented where users look, and bad values fail at start."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agents.settings import Secret, Settings, SettingsError, describe

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
    assert s.webhook_headers == {"Authorization": "Bearer x"}
    assert s.respondent_secret == Secret("s3cret") and "s3cret" not in repr(s)


@pytest.mark.parametrize(
    ("var", "raw", "message"),
    [
        ("SALESOPS_SESSION_TIMEOUT_S", "3", "6..1800"),
        ("SALESOPS_SESSION_TIMEOUT_S", "soon", "SALESOPS_SESSION_TIMEOUT_S='soon'"),
        ("SALESOPS_TOPIC_PARTITIONS", "0", ">= 1"),
        ("SALESOPS_CLOCK", "sundial", "wall or watermark"),
        ("SALESOPS_WEBHOOK_HEADERS", "[1]", "not a JSON object"),
    ],
)
def test_bad_values_name_the_variable(var: str, raw: str, message: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(message)):
        Settings.from_env({var: raw})
