"""The web access rules (agents/web.py) on a plain aiohttp app with a stand-in worker: which
paths are open, the bearer token, and 503 on /api until the worker is ready."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from agents.settings import Secret
from agents.web import access_middleware, bearer_ok, readiness, warn_if_exposed


class Flag:
    def __init__(self, value: bool) -> None:
        self.value = value

    def is_set(self) -> bool:
        return self.value


def fake_worker(
    token: str = "", recovered: bool = True, caught_up: bool = True, host: str = "127.0.0.1"
) -> Any:
    settings = SimpleNamespace(api_token=Secret(token), web_host=host, web_port=6066)
    tables = SimpleNamespace(recovery=SimpleNamespace(completed=Flag(recovered)))
    return SimpleNamespace(settings=settings, app=SimpleNamespace(tables=tables), reader_caught_up=caught_up)


def serve(worker: Any, calls: list[tuple[str, dict[str, str]]]) -> list[tuple[str, int, Any, str | None]]:
    """GET each path (with its headers) through the middleware; (path, status, JSON, challenge)."""

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"path": request.path})

    async def run() -> list[tuple[str, int, Any, str | None]]:
        app = web.Application(middlewares=[access_middleware(worker)])
        for path in ("/metrics", "/healthz", "/readyz", "/api/pipeline", "/table/deals/", "/"):
            app.router.add_get(path, ok)
        out = []
        async with TestClient(TestServer(app)) as client:
            for path, headers in calls:
                resp = await client.get(path, headers=headers)
                out.append((path, resp.status, await resp.json(), resp.headers.get("WWW-Authenticate")))
        return out

    return asyncio.run(run())


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        ("Bearer s3cret", True),
        ("bearer s3cret", True),  # the scheme is case-insensitive
        ("Bearer  s3cret ", True),
        ("Bearer s3cret2", False),
        ("Bearer s3cre", False),
        ("Basic s3cret", False),
        ("s3cret", False),
        ("Bearer", False),
        ("", False),
        (None, False),
    ],
)
def test_bearer_ok(header: str | None, ok: bool) -> None:
    assert bearer_ok(header, "s3cret") is ok


def test_with_a_token_only_metrics_and_probes_are_open() -> None:
    bearer = {"Authorization": "Bearer tok"}
    results = serve(
        fake_worker(token="tok"),
        [
            ("/metrics", {}),
            ("/healthz", {}),
            ("/readyz", {}),
            ("/api/pipeline", {}),
            ("/api/pipeline", {"Authorization": "Bearer nope"}),
            ("/table/deals/", {}),
            ("/", {}),
            ("/api/pipeline", bearer),
            ("/table/deals/", bearer),
        ],
    )
    assert [(p, s, c) for p, s, _b, c in results] == [
        ("/metrics", 200, None),
        ("/healthz", 200, None),
        ("/readyz", 200, None),
        ("/api/pipeline", 401, 'Bearer realm="salesops"'),
        ("/api/pipeline", 401, 'Bearer realm="salesops", error="invalid_token"'),
        ("/table/deals/", 401, 'Bearer realm="salesops"'),
        ("/", 401, 'Bearer realm="salesops"'),
        ("/api/pipeline", 200, None),
        ("/table/deals/", 200, None),
    ]
    assert results[3][2] == {"error": "missing bearer token (Authorization: Bearer ...)"}
    assert results[4][2] == {"error": "invalid token"}


def test_without_a_token_everything_is_open() -> None:
    results = serve(fake_worker(), [("/api/pipeline", {}), ("/table/deals/", {}), ("/metrics", {})])
    assert [s for _p, s, _b, _c in results] == [200, 200, 200]


@pytest.mark.parametrize(
    ("recovered", "caught_up", "missing"),
    [
        (False, False, ["recovery", "partials"]),
        (False, True, ["recovery"]),
        (True, False, ["partials"]),
    ],
)
def test_api_is_503_until_ready_and_says_what_is_missing(
    recovered: bool, caught_up: bool, missing: list[str]
) -> None:
    worker = fake_worker(token="tok", recovered=recovered, caught_up=caught_up)
    assert [m.split(":")[0] for m in readiness(worker)] == missing
    bearer = {"Authorization": "Bearer tok"}
    results = serve(
        worker, [("/api/pipeline", bearer), ("/api/pipeline", {}), ("/metrics", {}), ("/", bearer)]
    )
    (_p, status, body, _c), unauthorised, metrics, index = results
    assert status == 503 and body["error"] == "not ready"
    assert [m.split(":")[0] for m in body["missing"]] == missing
    assert unauthorised[1] == 401  # the token is checked first: no state leaks to strangers
    assert metrics[1] == 200 and index[1] == 200  # only /api waits for readiness
    assert readiness(fake_worker()) == []


@pytest.mark.parametrize(
    ("host", "token", "warned"),
    [
        ("0.0.0.0", "", True),
        ("", "", True),
        ("10.0.0.5", "", True),
        ("0.0.0.0", "s3cr3t-tok", False),
        ("127.0.0.1", "", False),
        ("localhost", "", False),
    ],
)
def test_binding_a_non_loopback_address_without_a_token_is_a_warning(
    host: str, token: str, warned: bool, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="agents.web"):
        warn_if_exposed(fake_worker(token=token, host=host))
    assert any("web_exposed" in r.getMessage() for r in caplog.records) is warned
    assert "s3cr3t-tok" not in caplog.text
