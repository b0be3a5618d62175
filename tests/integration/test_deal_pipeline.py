"""Deal pipeline end to end: simulated CRM feed (duplicates, reordering) -> importer ->
worker -> API, Redis and aggregate topics, each compared with an independent
recomputation from the raw file (tests/integration/reference.py)."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal

import pytest

from schemas.codec import Codec
from tests.integration.conftest import Names, consume_all, create_topic, poll, poll_equal, run_cli
from tests.integration.reference import DealReference, read_jsonl


def latest_by_key(records: list) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for r in records:
        out[r.key.decode()] = r.value
    return out


@pytest.fixture
def simulated(tmp_path, names: Names):
    out = tmp_path / "sim"
    gen = run_cli(
        "simulate",
        "--seed",
        "7",
        "--deals",
        "400",
        "--survey-waves",
        "0",
        "--output-dir",
        str(out),
        "--duplicate-rate",
        "0.05",
        "--reorder-rate",
        "0.1",
    )
    assert gen.returncode == 0, gen.stderr
    create_topic(names.deal_events, names.partitions)
    imported = run_cli("import", "deals", str(out / "deals.jsonl"), "--no-progress", env=names.env())
    assert imported.returncode == 0, imported.stderr
    return DealReference(read_jsonl(out / "deals.jsonl"))


def pipeline_topic_rows(names: Names) -> dict[tuple[str, str], tuple[int, int, int]]:
    """(pipeline, stage) -> (deals, value cents, weighted cents) from the latest record per key."""
    codec = Codec.for_record("PipelineAggregate")
    rows = {}
    for key, value in latest_by_key(consume_all(names.output("pipeline"), 1, timeout=20)).items():
        if value is not None and key.startswith("stage:"):
            rec = codec.decode(value)
            rows[(rec["pipeline"], rec["value_of"])] = (
                rec["deals"],
                int(rec["value"] * 100),
                int(rec["weighted_value"] * 100),
            )
    return rows


def assert_last_90_days_closed_match(worker, ref: DealReference) -> dict[str, dict[str, int]]:
    """The API's won/lost counts, values and win rate of the last 90 days equal the
    reference's; returns the reference figures per pipeline."""
    funnel = worker.json("/api/funnel?period=last-90d")
    today = date.fromisoformat(funnel["last_day"]).toordinal()
    closed = ref.closed_in(today - 89, today)
    for p in funnel["pipelines"]:
        want = closed.get(p["pipeline"], {"won": 0, "lost": 0, "won_cents": 0, "lost_cents": 0})
        assert (p["won_count"], p["lost_count"], p["won_cents"], p["lost_cents"]) == (
            want["won"],
            want["lost"],
            want["won_cents"],
            want["lost_cents"],
        ), p["pipeline"]
        if want["won"] + want["lost"]:
            assert p["win_rate_count"] == pytest.approx(want["won"] / (want["won"] + want["lost"]))
    return closed


def api_by_stage(worker) -> dict[tuple[str, str], tuple[int, int, int]]:
    rows = worker.json("/api/pipeline")["by_stage"]
    return {(r["pipeline"], r["stage"]): (r["deals"], r["value_cents"], r["weighted_cents"]) for r in rows}


def test_views_match_reference_over_api_redis_and_topics(
    names: Names, simulated: DealReference, start_worker, redis_client
) -> None:
    ref = simulated
    expected = ref.open_by_stage()
    worker = start_worker(names.env())
    poll_equal(lambda: api_by_stage(worker), expected, 120, what="API pipeline == reference")

    # funnel: closed deals of the last 90 days, counted from the file by hand
    closed = assert_last_90_days_closed_match(worker, ref)

    # aging at the API's own as_of
    aging = worker.json("/api/aging")
    ref_aging = ref.aging(aging["as_of"])
    got = {(r["pipeline"], r["stage"]): (r["open"], r["median_days"], r["max_days"]) for r in aging["stages"]}
    assert got.keys() == ref_aging.keys()
    for k, (n, med, mx) in ref_aging.items():
        assert got[k][0] == n
        assert got[k][1] == pytest.approx(med, abs=1e-9)
        assert got[k][2] == pytest.approx(mx, abs=1e-9)

    # movement: the current month ends at today's open value
    movement = {r["pipeline"]: r for r in worker.json("/api/movement")["pipelines"]}
    for pipeline, cents in ref.open_value_by_pipeline().items():
        m = movement[pipeline]
        assert m["end_cents"] == cents
        assert m["end_cents"] == (
            m["start_cents"]
            + m["new_cents"]
            + m["reopened_cents"]
            + m["increased_cents"]
            - m["decreased_cents"]
            - m["won_cents"]
            - m["lost_cents"]
            - m["deleted_cents"]
        )

    # Redis: one hash per view, same numbers
    def redis_rows():
        raw = redis_client.hgetall(f"{names.uid}:view:pipeline")
        rows = {k.decode(): json.loads(v) for k, v in raw.items()}
        return {
            tuple(k.split(":", 2)[1:]): (r["deals"], r["value"], r["weighted_value"])
            for k, r in rows.items()
            if k.startswith("stage:")
        }

    want_redis = {k: (n, f"{v / 100:.2f}", f"{w / 100:.2f}") for k, (n, v, w) in expected.items()}
    poll_equal(lambda: redis_rows(), want_redis, 30, what="Redis pipeline hash == reference")

    # aggregate topic: the latest record per key, decoded with the .avsc codec
    poll(
        lambda: pipeline_topic_rows(names) == expected,
        60,
        interval=1,
        what="salesops.pipeline topic == reference",
    )

    # the other views, on their topics and in Redis: funnel, stage aging, movement
    month = worker.json("/api/movement")["period"]
    want: dict[str, dict[str, tuple]] = {"funnel": {}, "stage-aging": {}, "movement": {}}
    for pipeline in ref.pipelines:
        c = closed.get(pipeline, {"won": 0, "lost": 0, "won_cents": 0, "lost_cents": 0})
        want["funnel"][f"last-90d:{pipeline}"] = (c["won"], c["lost"], c["won_cents"])
        want["movement"][f"{month}:{pipeline}"] = (ref.open_value_by_pipeline().get(pipeline, 0),)
    for (pipeline, stage), (n, _med, _max) in ref_aging.items():
        want["stage-aging"][f"{pipeline}:{stage}"] = (n,)

    def figures(view: str, rec: dict) -> tuple:
        cents = lambda v: int(Decimal(str(v)) * 100)  # noqa: E731 - Avro decimal or Redis string
        if view == "funnel":
            return (rec["won_count"], rec["lost_count"], cents(rec["won_value"]))
        if view == "movement":
            return (cents(rec["end"]),)
        return (rec["open"],)

    for view, expected_rows in want.items():
        codec = Codec.for_record(
            {
                "funnel": "FunnelAggregate",
                "stage-aging": "StageAgingAggregate",
                "movement": "MovementAggregate",
            }[view]
        )

        def on_topic(view=view, codec=codec, expected_rows=expected_rows) -> bool:
            latest = latest_by_key(consume_all(names.output(view), 1, timeout=20))
            got = {k: figures(view, codec.decode(v)) for k, v in latest.items() if k in expected_rows and v}
            return got == expected_rows

        def in_redis(view=view, expected_rows=expected_rows) -> bool:
            raw = redis_client.hgetall(f"{names.uid}:view:{view}")
            got = {
                k.decode(): figures(view, json.loads(v))
                for k, v in raw.items()
                if k.decode() in expected_rows
            }
            return got == expected_rows

        poll(on_topic, 60, interval=1, what=f"{view} topic == reference")
        poll(in_redis, 60, interval=1, what=f"{view} in Redis == reference")
    assert worker.stop() == 0
