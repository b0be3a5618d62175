"""The HTML overview's static files (agents/overview): self-contained, no data in markup,
shipped in the wheel.  The page itself runs in a real browser in
tests/integration/test_overview.py."""

from __future__ import annotations

import re
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest

from agents import overview

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "agents" / "overview"


def test_the_page_loads_only_its_own_files() -> None:
    page = overview.read("index.html").decode()
    scripts = re.findall(r"<script\b([^>]*)>", page)
    assert scripts and all('src="' in attrs for attrs in scripts)  # no inline script (CSP)
    assert "<style" not in page and " style=" not in page  # no inline style (CSP)
    refs = re.findall(r'(?:src|href)="([^"]+)"', page)
    local = [r.removeprefix("overview/") for r in refs if r.startswith("overview/")]
    assert sorted(local) == ["overview.css", "overview.js", "vendor/chart.umd.min.js"]
    assert all(name in overview.ASSETS for name in local)
    # nothing from another origin: every other reference is a worker path or an empty icon
    assert {r for r in refs if not r.startswith("overview/")} == {"metrics", "data:,"}


def test_api_text_is_never_parsed_as_html() -> None:
    js = overview.read("overview.js").decode()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in js, sink
    assert "textContent" in js


def test_not_ready_page_escapes_what_it_shows() -> None:
    page = overview.not_ready_html(["recovery: <b>x</b> & y"])
    assert "<li>recovery: &lt;b&gt;x&lt;/b&gt; &amp; y</li>" in page
    assert '<meta http-equiv="refresh" content="5">' in page
    assert "<script" not in page


def test_only_the_listed_files_are_served() -> None:
    for name in ("../web.py", "__init__.py", "vendor/README.md", "index.html/../__init__.py"):
        with pytest.raises(KeyError):
            overview.read(name)
    assert overview.read("vendor/chart.umd.min.js").startswith(b"/*!\n * Chart.js v4.6.1\n")
    assert b"MIT License" in overview.read("vendor/chart.js.LICENSE.md")


def test_the_wheel_carries_every_overview_file() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "agents.overview" in setuptools["packages"]
    globs = setuptools["package-data"]["agents.overview"]
    files = [p.relative_to(HERE).as_posix() for p in HERE.rglob("*") if p.is_file() and p.suffix != ".pyc"]
    for name in files:
        if name.endswith(".py"):
            continue
        assert any(fnmatch(name, g) for g in globs), name
    assert {"index.html", *overview.ASSETS} <= set(files)


def test_the_page_answers_503_until_the_worker_is_ready() -> None:
    waiting = overview.page_response(["partials: not read to the end yet"])
    assert waiting.status == 503 and waiting.headers["Retry-After"] == "5"
    assert waiting.content_type == "text/html"
    assert waiting.text is not None and "partials: not read to the end yet" in waiting.text
    ready = overview.page_response([])
    assert ready.status == 200 and ready.body == overview.read("index.html")
    for response in (waiting, ready, overview.asset_response("overview.js")):
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert overview.asset_response("overview.css").content_type == "text/css"
