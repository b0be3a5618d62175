"""The HTML overview in a real headless browser: Debian's chromium, driven by Selenium,
loads ``/`` from a real worker fed a small simulated data set, and the page shows the same
open deals and open value per stage as ``/api/pipeline``.

The worker runs with an API token, so the page is checked under the same rule as
``/api``: without the header the page and its files answer 401; the browser gets the
header the way a proxy in front of the worker would add it (``Network.setExtraHTTPHeaders``).

chromium and chromium-driver are installed with apt-get when missing and the tests run as
root (like deploy/prometheus/test.sh does for promtool); otherwise the test fails with the
command to run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.integration.conftest import Names, create_topic, poll, poll_equal, run_cli
from tests.integration.reference import DealReference, read_jsonl

TOKEN = "overview-test-token-0123456789"
PACKAGES = ("chromium", "chromium-driver")
HOW = "install Debian's browser and its driver: sudo apt-get install chromium chromium-driver"


def _run(*cmd: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )


def _has_candidate(package: str) -> bool:
    # The policy is captured whole before it is matched (a `| grep -q` under pipefail can
    # fail with SIGPIPE while apt-cache is still writing).
    policy = _run("apt-cache", "policy", package, timeout=60)
    return (
        policy.returncode == 0 and "Candidate: (none)" not in policy.stdout and "Candidate:" in policy.stdout
    )


def _browser_paths() -> tuple[str, str] | None:
    browser = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.fixture(scope="session")
def chromium() -> tuple[str, str]:
    """(browser, driver) paths; installs Debian's packages once when missing (as root)."""
    found = _browser_paths()
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.fail(f"chromium/chromedriver not found (installing them needs root and apt-get): {HOW}")
    update = _run("apt-get", "update", "-qq")
    if update.returncode != 0:
        pytest.fail(f"apt-get update failed: {update.stderr[-2000:]}; {HOW}")
    missing = [p for p in PACKAGES if not _has_candidate(p)]
    if missing:
        pytest.fail(f"no {', '.join(missing)} in the apt sources; {HOW}")
    # --no-install-recommends: a headless browser and its driver are all the test needs
    done = _run("apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES)
    if done.returncode != 0:
        pytest.fail(f"apt-get install {' '.join(PACKAGES)} failed: {done.stderr[-2000:]}; {HOW}")
    found = _browser_paths()
    if not found:
        pytest.fail(f"the packages installed no chromium/chromedriver on PATH; {HOW}")
    return found


def fetch(url: str, token: str | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def api(url: str) -> Any:
    status, _, body = fetch(url, TOKEN)
    if status != 200:
        raise ValueError(f"GET {url} -> {status}: {body[:300]!r}")
    return json.loads(body)


@pytest.fixture
def browser(chromium: tuple[str, str]):
    binary, driver_path = chromium
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def page_rows(driver: webdriver.Chrome) -> dict[tuple[str, str], tuple[str, str]]:
    """(pipeline, stage) -> (open deals, open value) as the page shows them (commas removed)."""
    rows = {}
    for tr in driver.find_elements(By.CSS_SELECTOR, "#pipeline-table tbody tr"):
        deals = tr.find_element(By.CSS_SELECTOR, "td.deals").text
        value = tr.find_element(By.CSS_SELECTOR, "td.value").text.replace(",", "")
        rows[(tr.get_attribute("data-pipeline"), tr.get_attribute("data-stage"))] = (deals, value)
    return rows


# the first run on a machine may install chromium (apt-get) inside this test's time
@pytest.mark.timeout(900)
def test_overview_page_shows_the_api_totals_in_a_real_browser(
    names: Names, start_worker, tmp_path: Path, browser: webdriver.Chrome
) -> None:
    out = tmp_path / "sim"
    # the simulator's default span and waves (120 days, 2 waves): eNPS in both windows
    gen = run_cli("simulate", "--seed", "5", "--deals", "200", "--employees", "60", "--output-dir", str(out))
    assert gen.returncode == 0, gen.stderr
    for topic in (names.deal_events, names.responses, names.invitations):
        create_topic(topic, names.partitions)
    for kind, f in (
        ("deals", "deals.jsonl"),
        ("surveys", "surveys.jsonl"),
        ("invitations", "invitations.jsonl"),
    ):
        done = run_cli("import", kind, str(out / f), "--no-progress", env=names.env())
        assert done.returncode == 0, done.stderr
    ref = DealReference(read_jsonl(out / "deals.jsonl"))
    # seed 5's smallest team answers 4 + 3 times in the two waves: below a threshold of 10
    worker = start_worker(names.env(SALESOPS_API_TOKEN=TOKEN, SALESOPS_ANONYMITY_THRESHOLD=10))
    base = worker.url

    def api_by_stage() -> dict[tuple[str, str], tuple[int, int, int]]:
        rows = api(f"{base}/api/pipeline")["by_stage"]
        return {
            (r["pipeline"], r["stage"]): (r["deals"], r["value_cents"], r["weighted_cents"]) for r in rows
        }

    poll_equal(api_by_stage, ref.open_by_stage(), 90, what="API pipeline == reference")
    poll(lambda: api(f"{base}/api/enps?window=30d")["groups"], 60, what="30-day eNPS groups")

    # the page and its files follow the /api rule: no token, no page
    for path in ("/", "/overview", "/overview/overview.js", "/overview/vendor/chart.umd.min.js"):
        assert fetch(base + path)[0] == 401, path
    status, headers, body = fetch(base + "/", TOKEN)
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert b'src="overview/vendor/chart.umd.min.js"' in body  # vendored, no CDN
    assert fetch(base + "/overview/vendor/chart.umd.min.js", TOKEN)[2].startswith(b"/*!\n * Chart.js v4.")
    assert fetch(base + "/overview/nothing.js", TOKEN)[0] == 404

    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Bearer {TOKEN}"}})
    browser.get(base + "/")
    wait = WebDriverWait(browser, 30)
    # rendered: the pipeline table has every stage and every view drew without a problem
    wait.until(lambda d: len(page_rows(d)) == len(ref.open_by_stage()))
    wait.until(lambda d: d.find_element(By.ID, "status").get_attribute("class") == "ok")

    want = {
        (r["pipeline"], r["stage"]): (str(r["deals"]), r["value"])
        for r in api(f"{base}/api/pipeline")["by_stage"]
    }
    assert page_rows(browser) == want
    total = browser.find_element(By.CSS_SELECTOR, "#pipeline-table tfoot td.deals").text
    assert (
        total == str(sum(int(d) for d, _ in want.values())) == browser.find_element(By.ID, "total-deals").text
    )
    assert browser.execute_script("return typeof Chart") == "function"  # the vendored library loaded
    assert browser.execute_script("return document.querySelectorAll('canvas').length") == 5

    # eNPS: suppressed groups are shown as such, with their count
    enps30 = api(f"{base}/api/enps?window=30d")["groups"]
    assert any(g["suppressed"] for g in enps30) and any(not g["suppressed"] for g in enps30)
    for g in enps30:
        cell = browser.find_element(
            By.CSS_SELECTOR, f'#enps-table tr[data-group="{g["group"]}"] td.enps'
        ).text
        if g["suppressed"]:
            assert cell == f"suppressed ({g['responses']} responses)", g
        else:
            assert cell.startswith(f"{'+' if g['enps'] > 0 else ''}{g['enps']:.1f} "), (cell, g)
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == []

    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1280, min(int(height) + 40, 6000))
    shot = tmp_path / "overview.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
