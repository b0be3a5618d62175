"""eNPS drop alerts follow the worker's clock: in watermark mode (a replay of old events)
the drop is measured, and the alert fired, at the event-time watermark, not today."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from schemas.codec import Codec
from tests.integration.conftest import Names, consume_all, create_topic, encoded_deal, produce
from tests.integration.test_people_pulse import sales_answer

# the replay's "now": the watermark, i.e. the newest deal event minus the allowed lateness
WATERMARK = int(datetime(2020, 6, 15, 12, 0, tzinfo=UTC).timestamp() * 1000)


def test_enps_drop_in_a_replay_fires_at_the_watermark(names: Names, start_worker) -> None:
    def answer(i: int, score: int, days_ago: int) -> tuple[bytes, bytes]:
        return sales_answer(i, score, days_ago, WATERMARK)

    # 30 to 60 days before the watermark: 6 promoters -> eNPS 100; the last 30 days: 3
    # promoters and 3 detractors -> 0: a drop of 100 in June 2020, none in today's windows
    create_topic(names.responses, names.partitions)
    produce(names.responses, [answer(i, 10, 45) for i in range(6)])
    produce(names.responses, [answer(10 + i, 10 if i < 3 else 2, 5) for i in range(6)])
    create_topic(names.deal_events, names.partitions)
    deal = encoded_deal(
        event_id="e1",
        deal_id="D-1",
        event_type="CREATED",
        occurred_at=WATERMARK + 3_600_000,  # watermark = this minus 1 h of allowed lateness
        pipeline="default",
        stage="appointmentscheduled",
        amount=Decimal("10.00"),
        currency="USD",
    )
    produce(names.deal_events, [deal])
    env = names.env(
        SALESOPS_REDIS_URL="",
        SALESOPS_CLOCK="watermark",
        SALESOPS_ALLOWED_LATENESS_S=3600,
        SALESOPS_ENPS_DROP_POINTS=50,
    )
    worker = start_worker(env)
    alerts = [Codec.for_record("Alert").decode(r.value) for r in consume_all(names.alerts, 2, timeout=90)]
    team = next(a for a in alerts if a["subject"] == "team:sales")
    assert team["alert_id"] == "enps_drop:team:sales:2020-06-15"
    assert team["fired_at"] == datetime(2020, 6, 15, 12, 0, tzinfo=UTC)
    assert (team["status"], team["value"], team["unit"]) == ("FIRING", 100.0, "points")
    assert worker.sample("salesops_enps_drop_points", group="team:sales") == 100.0
    assert worker.stop() == 0
