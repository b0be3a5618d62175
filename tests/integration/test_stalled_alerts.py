"""Stalled-deal alerts end to end: exactly one FIRING and one RESOLVED per deal, at a real
HTTP receiver and on the alerts topic, also when the receiver fails its first attempts
and when the worker is SIGKILLed between firing and resolving."""

from __future__ import annotations

import json
import threading
import time
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from kafka import KafkaAdminClient

from schemas.codec import Codec
from tests.integration.conftest import (
    BOOTSTRAP,
    Names,
    consume_all,
    create_topic,
    encoded_deal,
    poll,
    poll_equal,
    produce,
)

ALERT = Codec.for_record("Alert")
DAY = 86_400_000
T0 = (int(time.time() * 1000) // DAY - 10) * DAY  # ten days ago, midnight UTC

PIPELINES = """
unknown_stages = "accept"
[[pipeline]]
id = "p"
won_stage = "won"
lost_stage = "lost"
stages = [
  { id = "a", probability = 0.5, stalled_after_days = 1 },
  { id = "b", probability = 0.8, stalled_after_days = 1 },
]
"""


class Receiver:
    """A local webhook receiver that answers 500 to its first ``fail_first`` requests."""

    def __init__(self, fail_first: int) -> None:
        self.fail_first = fail_first
        self.requests: list[tuple[int, dict, dict]] = []  # (status answered, headers, body)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status = 500 if len(receiver.requests) < receiver.fail_first else 200
                receiver.requests.append((status, dict(self.headers), body))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def acknowledged(self) -> list[tuple[str, str]]:
        out = []
        for status, _headers, body in self.requests:
            if status == 200:
                alert = body["salesops_alert"]
                out.append((alert["alert_id"], alert["status"]))
        return out


def deal(
    event_id: str, deal_id: str, stage: str, at: int, event_type: str = "STAGE_CHANGED"
) -> tuple[bytes, bytes]:
    return encoded_deal(
        event_id=event_id,
        deal_id=deal_id,
        event_type=event_type,
        occurred_at=at,
        pipeline="p",
        stage=stage,
        amount=Decimal("1000.00"),
        currency="USD",
        owner_id="u-1",
    )


def committed(group: str, topic: str) -> int:
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    try:
        offsets = admin.list_group_offsets(group).get(group, {})
    finally:
        admin.close()
    return sum(o.offset for tp, o in offsets.items() if tp.topic == topic and o.offset > 0)


@pytest.mark.parametrize(
    "kill_between", [False, True], ids=["steady", "sigkill-between-firing-and-resolving"]
)
def test_one_firing_one_resolved(names: Names, start_worker, tmp_path: Path, kill_between: bool) -> None:
    names.partitions = 1  # one partition: both deals share the event-time watermark
    config = tmp_path / "pipelines.toml"
    config.write_text(PIPELINES)
    receiver = Receiver(fail_first=3)
    env = names.env(
        SALESOPS_PIPELINES_FILE=config,
        SALESOPS_CLOCK="watermark",
        SALESOPS_ALLOWED_LATENESS_S=0,
        SALESOPS_STALL_CHECK_INTERVAL_S=0.2,
        SALESOPS_WEBHOOK_URL=receiver.url,
        SALESOPS_REDIS_URL="",
        SALESOPS_SESSION_TIMEOUT_S=10,  # the restarted worker gets the partition sooner
    )
    create_topic(names.deal_events, 1)
    # X enters "a" at T0 (stalled after 1 day); Y two days later moves the watermark past X's due time
    produce(
        names.deal_events,
        [deal("x1", "X", "a", T0, "CREATED"), deal("y1", "Y", "a", T0 + 2 * DAY, "CREATED")],
    )
    worker = start_worker(env)
    alert_id = f"stalled:X:a:{T0}"
    poll_equal(lambda: receiver.acknowledged(), [(alert_id, "FIRING")], 90, what="FIRING acknowledged")
    assert [s for s, _, _ in receiver.requests] == [500, 500, 500, 200]  # retried through 3 failures
    first = receiver.requests[-1]
    assert first[1]["Idempotency-Key"] == f"{alert_id}:FIRING"
    assert first[2]["salesops_alert"]["subject"] == "X"
    firing = poll(lambda: worker.json("/api/alerts?status=FIRING")["alerts"], 30, what="alert in the API")
    assert [a["alert_id"] for a in firing] == [alert_id]

    if kill_between:
        # let the delivery's offset and ledger entry be committed, then crash hard
        poll(lambda: committed(names.uid, names.alerts) >= 1, 30, what="alerts offset committed")
        worker.kill()
        worker = start_worker(env)

    produce(names.deal_events, [deal("x2", "X", "b", T0 + 2 * DAY + 1000)])
    poll(lambda: (alert_id, "RESOLVED") in receiver.acknowledged(), 90, what="RESOLVED acknowledged")
    records = [ALERT.decode(r.value) for r in consume_all(names.alerts, 2)]
    assert sorted((r["alert_id"], r["status"]) for r in records) == [
        (alert_id, "FIRING"),
        (alert_id, "RESOLVED"),
    ]
    # nothing else arrives: Y is not due (watermark T0+2d+1s < T0+3d), X in "b" not either
    poll_equal(lambda: worker.json("/api/alerts?status=FIRING")["alerts"], [], 30, what="FIRING alerts")
    assert sorted(receiver.acknowledged()) == [(alert_id, "FIRING"), (alert_id, "RESOLVED")]
    assert len([r for r in consume_all(names.alerts, 2, timeout=5)]) == 2
    assert worker.stop() == 0
