"""The read-only HTML overview the worker serves at ``/`` (routes in :mod:`agents.web`).

Plain HTML, CSS and JavaScript, no build step: ``index.html`` loads ``overview.js``,
which fetches the ``/api/*`` JSON from the browser and draws tables and charts with the
vendored Chart.js (``vendor/``; no CDN at run time).  Text from the API is only ever set
with ``textContent`` (never ``innerHTML``), and the page forbids inline scripts and any
other origin with its Content-Security-Policy.

This module builds the responses: the page, its files, and the 503 page shown while the
worker is not ready; the access rules (bearer token) are the web server's middleware.
"""

from __future__ import annotations

import html
from functools import cache
from importlib import resources

from aiohttp import web

#: The files served under ``/overview/`` and their content types.
ASSETS: dict[str, str] = {
    "overview.js": "text/javascript",
    "overview.css": "text/css",
    "vendor/chart.umd.min.js": "text/javascript",
    "vendor/chart.js.LICENSE.md": "text/markdown",
}

#: Headers of every overview response: same-origin only, no inline script, no framing.
HEADERS: dict[str, str] = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@cache
def read(name: str) -> bytes:
    """The bytes of ``index.html`` or of one of :data:`ASSETS` (read once)."""
    if name != "index.html" and name not in ASSETS:
        raise KeyError(name)
    return resources.files(__name__).joinpath(name).read_bytes()


def page_response(missing: list[str]) -> web.Response:
    """The overview page, or while the worker is not ready (``missing`` is what
    :func:`agents.web.readiness` says it lacks) 503 with :func:`not_ready_html`."""
    if missing:
        return web.Response(
            text=not_ready_html(missing),
            status=503,
            content_type="text/html",
            headers={**HEADERS, "Retry-After": "5"},
        )
    return web.Response(body=read("index.html"), content_type="text/html", charset="utf-8", headers=HEADERS)


def asset_response(name: str) -> web.Response:
    """One of :data:`ASSETS` (they hold no data: served whether or not the worker is ready)."""
    return web.Response(body=read(name), content_type=ASSETS[name], charset="utf-8", headers=HEADERS)


def not_ready_html(missing: list[str]) -> str:
    """The page answered with 503 while the worker is not ready: what it still lacks, and
    a reload every 5 seconds (a meta refresh: the page runs no script of its own)."""
    items = "\n".join(f"    <li>{html.escape(m)}</li>" for m in missing)
    return f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta http-equiv="refresh" content="5">
  <title>salesops: not ready</title>
  <link rel="icon" href="data:,">
  <link rel="stylesheet" href="overview/overview.css">
</head>
<body>
  <header><h1>salesops</h1></header>
  <main>
  <section class="notice">
  <h2>Not ready yet</h2>
  <p>The worker is still recovering its state; this page reloads every 5 seconds. Missing:</p>
  <ul>
{items}
  </ul>
  </section>
  </main>
</body>
</html>
"""
