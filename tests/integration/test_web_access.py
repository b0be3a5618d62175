"""No open door: where the worker listens, who may read /api, when it says it is ready, and
that no secret reaches `salesops settings` or the worker's log.  Real worker processes."""

from __future__ import annotations

import ipaddress
import json
import time
import urllib.error
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from schemas.codec import Codec
from tests.integration.conftest import (
    BOOTSTRAP,
    Names,
    WorkerProcess,
    create_topic,
    deal_record,
    poll,
    poll_equal,
    produce,
    run_cli,
)

DEAL = Codec.for_record("DealEvent")
NOW = int(time.time() * 1000)
TOKEN = "t0ken-for-the-api-4b1d"
SECRETS = {
    # nothing listens on port 1: the Redis sink fails and logs its error at each publication
    "SALESOPS_REDIS_URL": "redis://:r3dis-pw-9f2a@127.0.0.1:1/0",
    # nothing listens on port 9: the path is the secret, as in a Slack webhook URL
    "SALESOPS_WEBHOOK_URL": "http://127.0.0.1:9/services/T0SECRET/B0SECRET/sl4ck-path-9e1c",
    "SALESOPS_WEBHOOK_HEADERS": json.dumps({"Authorization": "Bearer wh-t0ken-77c3"}),
    "SALESOPS_API_TOKEN": TOKEN,
}
SECRET_VALUES = ["r3dis-pw-9f2a", "T0SECRET", "sl4ck-path-9e1c", "wh-t0ken-77c3", TOKEN]


def request(w: WorkerProcess, path: str, token: str | None = None) -> tuple[int, dict[str, str], Any]:
    """(status, headers, JSON body) of a GET, with ``Authorization: Bearer token`` if given."""
    req = urllib.request.Request(w.url + path)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            status, headers, body = resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        status, headers, body = err.code, dict(err.headers), err.read()
    try:
        return status, headers, json.loads(body)
    except ValueError:
        return status, headers, body.decode(errors="replace")


def listening_addresses(port: int) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Local addresses of the TCP sockets listening on ``port`` (Linux /proc/net/tcp{,6})."""
    found: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        lines = Path(table).read_text().splitlines()[1:] if Path(table).exists() else []
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, port_hex = local.split(":")
            if int(port_hex, 16) != port or state != "0A":  # 0A = LISTEN
                continue
            raw = bytes.fromhex(addr)  # little-endian 32-bit words
            words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.add(ipaddress.ip_address(words))
    return found


def deal(i: int) -> tuple[bytes, bytes]:
    record = deal_record(
        event_id=f"e{i}",
        deal_id=f"D{i}",
        event_type="CREATED",
        occurred_at=NOW - 3_600_000 + i,
        pipeline="default",
        stage="qualifiedtobuy",
        amount=Decimal("100.00"),
        currency="USD",
    )
    return record["deal_id"].encode(), DEAL.encode(record)


def open_deals(body: dict[str, Any]) -> int:
    return sum(row["deals"] for row in body["by_stage"])


def test_loopback_by_default_token_on_api_open_probes_and_no_secret_in_output(
    names: Names, start_worker, tmp_path
) -> None:
    create_topic(names.deal_events, names.partitions)
    produce(names.deal_events, [deal(i) for i in range(3)])
    env = names.env(**SECRETS)
    w = start_worker(env)

    # listens on loopback only (Faust's own default was 0.0.0.0 whatever SALESOPS_WEB_HOST said)
    addresses = listening_addresses(w.port)
    assert addresses and all(a.is_loopback for a in addresses), addresses

    # the probes and the metrics are open; /readyz turns 200 once recovered and caught up
    assert request(w, "/metrics")[0] == 200
    # ?name[]= keeps only those samples, as client_python's own handler does
    restricted = text_string_to_metric_families(w.metrics("salesops_broker_up", "salesops_events_total"))
    assert {f.name for f in restricted} == {"salesops_broker_up", "salesops_events"}
    assert len(w.metrics()) > 10 * len(w.metrics("salesops_broker_up"))
    status, _headers, body = request(w, "/healthz")
    assert (status, body) == (200, {"status": "ok"})
    poll(lambda: request(w, "/readyz")[0] == 200, 60, what="/readyz 200")
    assert request(w, "/readyz")[2]["missing"] == []

    # /api needs the token: none -> 401 with a challenge, a wrong one -> 401 invalid_token
    status, headers, body = request(w, "/api/pipeline")
    assert status == 401 and headers["WWW-Authenticate"] == 'Bearer realm="salesops"'
    assert "bearer token" in body["error"]
    status, headers, body = request(w, "/api/pipeline", token="not-" + TOKEN)
    assert status == 401 and 'error="invalid_token"' in headers["WWW-Authenticate"]
    assert request(w, f"/api/deals/D1?token={TOKEN}")[0] == 401  # only the header counts
    # Faust's own pages need it too, and its table pages (raw table contents) are gone
    assert request(w, "/table/deals/")[0] == 401
    assert request(w, "/table/deals/", token=TOKEN)[0] == 404
    assert request(w, "/router/", token=TOKEN)[0] == 404

    # with the token: the numbers
    poll(lambda: open_deals(request(w, "/api/pipeline", token=TOKEN)[2]) == 3, 60, what="3 open deals")
    assert request(w, "/api/deals/D1", token=TOKEN)[2]["deal_id"] == "D1"

    # bad periods and windows are 400 with a JSON error (9999-Q4 and 0d were 500s)
    for path in ("/api/funnel?period=9999-Q4", "/api/movement?period=0000-01", "/api/enps?window=0d"):
        status, _headers, body = request(w, path, token=TOKEN)
        assert (status, sorted(body)) == (400, ["error"]), (path, status, body)

    # the Redis sink failed (wrong password) and said so, without the password
    poll(lambda: "sink=redis" in w.log_path.read_text(), 60, what="the Redis sink error in the log")
    settings = run_cli("settings", env=env)
    assert settings.returncode == 0, settings.stderr
    assert "SALESOPS_API_TOKEN=****" in settings.stdout
    assert "SALESOPS_WEBHOOK_URL=http://127.0.0.1:9/****" in settings.stdout
    assert w.stop() == 0
    for where, text in (("settings", settings.stdout + settings.stderr), ("log", w.log_path.read_text())):
        leaked = [s for s in SECRET_VALUES if s in text]
        assert leaked == [], f"{where} shows {leaked}"


def partials_mention(topic: str, needle: bytes) -> bool:
    """Some deal partial on the partials topic mentions ``needle`` (it reached Kafka)."""
    consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        while any(consumer.position(tp) < end[tp] for tp in tps):
            for records in consumer.poll(timeout_ms=500).values():
                if any((r.key or b"").startswith(b"deals:") and needle in (r.value or b"") for r in records):
                    return True
        return False
    finally:
        consumer.close()


def test_a_restarted_worker_answers_503_not_empty_views_until_it_has_recovered(
    names: Names, start_worker
) -> None:
    create_topic(names.deal_events, names.partitions)
    produce(names.deal_events, [deal(i) for i in range(30)])
    # a short session timeout: after the SIGKILL the group gives the partitions to the new
    # worker after ~10 s, and until then that worker has recovered nothing
    env = names.env(SALESOPS_REDIS_URL="", SALESOPS_SESSION_TIMEOUT_S="10")
    first = start_worker(env)
    poll(lambda: open_deals(first.json("/api/pipeline")) == 30, 90, what="30 open deals")
    poll(
        lambda: partials_mention(names.output("partials"), b"qualifiedtobuy"),
        30,
        what="the first worker's partials in Kafka",
    )
    first.kill()  # SIGKILL

    second = start_worker(env, ready=False)
    seen: list[tuple[int, int, Any]] = []  # (readyz status, /api/pipeline status, its body)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            # the API first: readiness only goes from 503 to 200 here, so an API answer
            # given before a 503 from /readyz was given while not ready
            status, _headers, body = request(second, "/api/pipeline")
            ready = request(second, "/readyz")[0]
        except OSError:  # the web server is not listening yet
            assert second.proc is not None and second.proc.poll() is None, second.log_tail()
            time.sleep(0.1)
            continue
        seen.append((ready, status, body))
        if ready == 200 and status == 200:
            break
        time.sleep(0.1)
    assert seen and seen[-1][:2] == (200, 200), f"not ready in time: {seen[-3:]}\n{second.log_tail()}"

    not_ready = [(s, b) for r, s, b in seen if r == 503]
    assert len(not_ready) >= 3, "the restarted worker was never observed recovering"
    # while recovering: 503 "not ready" saying what is missing, never views
    for status, body in not_ready:
        assert status == 503 and body["error"] == "not ready" and body["missing"], body
    # once ready: the recovered numbers, never an empty 200
    answers = [b for r, s, b in seen if s == 200]
    assert all(open_deals(b) > 0 for b in answers), answers
    poll_equal(lambda: open_deals(second.json("/api/pipeline")), 30, 30, what="30 open deals after restart")
