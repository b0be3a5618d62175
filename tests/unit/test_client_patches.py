"""wrap_coroutine_method: wraps once, keeps the original's name, refuses what is not there."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from agents.client_patches import wrap_coroutine_method


def make_owner() -> type:
    class Client:
        async def fetch(self, n: int) -> int:
            """The original."""
            return n

        def plain(self) -> int:
            return 1

    return Client


def doubling(original: Any) -> Any:
    async def fetch(self: Any, n: int) -> int:
        return 2 * await original(self, n)

    return fetch


def test_wraps_once_however_often_installed() -> None:
    owner = make_owner()
    assert wrap_coroutine_method(owner, "fetch", doubling, "doubling") is True
    assert wrap_coroutine_method(owner, "fetch", doubling, "doubling") is True
    assert asyncio.run(owner().fetch(3)) == 6  # 6, not 12: wrapped once
    assert owner.fetch.__name__ == "fetch" and owner.fetch.__doc__ == "The original."


@pytest.mark.parametrize("name", ["missing", "plain"])
def test_changes_nothing_when_the_coroutine_method_is_not_there(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    owner = make_owner()
    before = getattr(owner, name, None)
    with caplog.at_level(logging.WARNING):
        assert wrap_coroutine_method(owner, name, doubling, "doubling") is False
    assert getattr(owner, name, None) is before
    assert f"doubling=unavailable reason=Client_without_{name}" in caplog.text
