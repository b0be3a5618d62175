"""Aggregate topics across publishers: rows an earlier publisher left on a topic that are
no longer views get their tombstones from the next one (sinks/aggregate_topics.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from agents.followers import held_keys
from agents.settings import Settings
from tests.integration.conftest import BOOTSTRAP, Names, consume_until_quiet, create_topic, poll, produce
from tests.integration.test_web_access import deal


def test_held_keys_are_the_keys_whose_latest_record_is_not_a_tombstone(names: Names) -> None:
    topic = names.output("pipeline")
    create_topic(topic, names.partitions)
    produce(topic, [(b"a", b"1"), (b"b", b"1"), (b"c", b"1"), (b"c", None), (b"d", None), (b"d", b"2")])
    settings = Settings.from_env({"SALESOPS_KAFKA_BOOTSTRAP": BOOTSTRAP, **names.env()})
    assert asyncio.run(held_keys(settings, topic)) == {b"a", b"b", b"d"}
    empty = names.output("funnel")
    create_topic(empty, names.partitions)
    assert asyncio.run(held_keys(settings, empty)) == set()


def test_a_starting_publisher_tombstones_rows_an_earlier_one_left(names: Names, start_worker: Any) -> None:
    topic = names.output("pipeline")
    create_topic(topic, names.partitions)
    # an earlier publisher's rows: one the views still have, one they no longer have
    produce(topic, [(b"stage:default:qualifiedtobuy", b"stale"), (b"stage:default:ghost", b"stale")])
    create_topic(names.deal_events, names.partitions)
    produce(names.deal_events, [deal(i) for i in range(3)])
    start_worker(names.env(SALESOPS_REDIS_URL=""))

    def latest_once_tombstoned() -> dict[str, bytes | None] | None:
        rows = {r.key.decode(): r.value for r in consume_until_quiet(topic, quiet_s=1.0)}
        return rows if "stage:default:ghost" in rows and rows["stage:default:ghost"] is None else None

    rows = poll(
        latest_once_tombstoned, 60, interval=1, what="the tombstone of the row the views no longer have"
    )
    assert rows["stage:default:qualifiedtobuy"] not in (None, b"stale")  # rewritten by this publisher
