"""People pulse end to end: a generated survey wave through the importer and the worker,
every group's numbers compared with a plain recomputation, anonymity checked, and no
respondent identifier anywhere outside the worker."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from kafka import KafkaAdminClient

from schemas.codec import Codec
from tests.integration.conftest import (
    BOOTSTRAP,
    Names,
    consume_all,
    consume_until_quiet,
    create_topic,
    poll,
    produce,
    run_cli,
)
from tests.integration.reference import read_jsonl

K = 5


def day(ts: int) -> int:
    return datetime.fromtimestamp(ts / 1000, tz=UTC).date().toordinal()


def latest_responses(responses: list[dict[str, Any]]) -> list[dict[str, Any]]:
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for r in responses:
        key = (r["survey_id"], r["respondent"])
        if key not in latest or (r["submitted_at"], r["response_id"]) > (
            latest[key]["submitted_at"],
            latest[key]["response_id"],
        ):
            latest[key] = r
    return list(latest.values())


def window_counts(responses, first_day: int, last_day: int) -> dict[str, list[int]]:
    """group -> [promoters, passives, detractors] over the window's eNPS answers."""
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for r in latest_responses(responses):
        if r.get("enps_score") is None or not first_day <= day(r["submitted_at"]) <= last_day:
            continue
        score = r["enps_score"]
        bucket = 0 if score >= 9 else 1 if score >= 7 else 2
        groups = ["org", f"team:{r['team']}"] + (
            [f"department:{r['department']}"] if r.get("department") else []
        )
        for g in groups:
            out[g][bucket] += 1
    return dict(out)


def test_enps_and_pulse_match_reference_and_never_expose_a_respondent(
    names: Names, start_worker, tmp_path, redis_client
) -> None:
    out = tmp_path / "sim"
    gen = run_cli(
        "simulate",
        "--seed",
        "3",
        "--deals",
        "0",
        "--survey-waves",
        "4",
        "--employees",
        "160",
        "--output-dir",
        str(out),
    )
    assert gen.returncode == 0, gen.stderr
    responses = read_jsonl(out / "surveys.jsonl")
    respondents = {r["respondent"] for r in responses}
    assert len(respondents) > 50
    for t in (names.responses, names.invitations):
        create_topic(t, names.partitions)
    for kind, f in (("surveys", "surveys.jsonl"), ("invitations", "invitations.jsonl")):
        done = run_cli("import", kind, str(out / f), "--no-progress", env=names.env())
        assert done.returncode == 0, done.stderr
    # one bad response: it is dead-lettered without its bytes (they name a respondent)
    bad = Codec.for_record("SurveyResponse").encode(
        {
            "response_id": "bad-1",
            "survey_id": "s",
            "submitted_at": int(time.time() * 1000),
            "respondent": "emp-SECRET",
            "team": "x",
            "department": None,
            "enps_score": 12,
            "enps_scale_min": 0,
            "answers": [],
        }
    )
    produce(names.responses, [(b"x", bad)])
    respondents.add("emp-SECRET")

    worker = start_worker(names.env(SALESOPS_ANONYMITY_THRESHOLD=K))
    view = poll(lambda: worker.json("/api/enps?window=90d"), 120, what="eNPS view")
    today = day(int(time.time() * 1000))
    expected = window_counts(responses, today - 89, today)

    def settled():
        rows = {r["group"]: r for r in worker.json("/api/enps?window=90d")["groups"]}
        return (
            rows
            if {g: r["responses"] for g, r in rows.items()} == {g: sum(c) for g, c in expected.items()}
            else None
        )

    rows = poll(settled, 120, what="eNPS response counts == reference")
    for group, (p, pa, d) in expected.items():
        n = p + pa + d
        row = rows[group]
        if n < K:
            assert row["suppressed"], group
        if row["suppressed"]:
            assert "enps" not in row or row["enps"] is None, group
            continue
        assert (row["promoters"], row["passives"], row["detractors"]) == (p, pa, d), group
        assert row["enps"] == 100 * (p - d) / n
        ps, ds = p / n, d / n
        assert abs(row["margin_of_error"] - 1.96 * 100 * ((ps + ds - (ps - ds) ** 2) / n) ** 0.5) < 1e-9
    # differencing guard: a visible parent minus its visible children never isolates < K people
    visible = {g for g, r in rows.items() if not r["suppressed"]}
    teams_by_dept: dict[str, set[str]] = defaultdict(set)
    for r in latest_responses(responses):
        if r.get("department"):
            teams_by_dept[f"department:{r['department']}"].add(f"team:{r['team']}")
    if "org" in visible:
        residual = rows["org"]["responses"] - sum(
            rows[g]["responses"] for g in visible if g.startswith("team:")
        )
        assert residual == 0 or residual >= K
    view = worker.json("/api/enps?window=90d")
    assert view["threshold"] == K

    # pulse questions of the latest survey
    last_survey = max(r["survey_id"] for r in responses)
    pulse = worker.json(f"/api/pulse?survey={last_survey}")
    # each wave has a team below the threshold; over 90 days its 4 waves' answers add up
    # to more than K, so the per-survey view is where it must be suppressed
    assert any(r["suppressed"] for r in pulse["enps"]), "the generated wave has a team below the threshold"
    answers: dict[tuple[str, str], list[int]] = defaultdict(list)
    for r in latest_responses(responses):
        if r["survey_id"] == last_survey:
            for a in r["answers"]:
                for g in ["org", f"team:{r['team']}"]:
                    answers[(a["question_id"], g)].append(a["score"])
    for q in pulse["questions"]["questions"]:
        for row in q["groups"]:
            scores = answers.get((q["question_id"], row["group"]))
            if scores is None:
                continue
            assert row["responses"] == len(scores)
            if not row["suppressed"]:
                assert abs(row["mean_score"] - sum(scores) / len(scores)) < 1e-9
                assert row["favourable_ratio"] == sum(1 for s in scores if s >= 4) / len(scores)

    # privacy: no respondent identifier in metrics, HTTP answers, Redis, output topics, logs
    poll(lambda: redis_client.hlen(f"{names.uid}:view:enps") > 0, 60, what="eNPS snapshot in Redis")
    exposed: list[str] = [worker.metrics()]
    for path in (
        "/api/enps?window=30d",
        "/api/enps?window=90d",
        f"/api/pulse?survey={last_survey}",
        "/api/pipeline",
        "/api/alerts",
    ):
        exposed.append(worker.get(path)[1].decode())
    for key in redis_client.scan_iter(f"{names.uid}:*"):
        exposed.append(key.decode())
        kind = redis_client.type(key).decode()
        if kind == "hash":
            exposed.extend(f"{k!r}{v!r}" for k, v in redis_client.hgetall(key).items())
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    topics = [t for t in admin.list_topics() if t.startswith(names.uid) and t not in (names.responses,)]
    admin.close()
    assert names.dead_letter in topics and names.output("enps") in topics
    read = 0
    for topic in topics:
        for r in consume_until_quiet(topic, quiet_s=1.0):
            exposed.append(repr(r.key) + repr(r.value))
            read += 1
    assert read > 100  # the aggregate topics, changelogs and dead letters were really read
    letters = [Codec.for_record("DeadLetter").decode(r.value) for r in consume_all(names.dead_letter, 1)]
    assert letters[0]["reason"] == "score_out_of_range" and letters[0]["original_value"] is None
    worker.stop()
    exposed.append(worker.log_path.read_text(errors="replace"))
    blob = "\n".join(exposed)
    leaked = sorted(r for r in respondents if r in blob)
    assert leaked == [], f"respondent identifiers leaked: {leaked[:5]}"
    assert json.dumps(rows)  # the view is plain JSON


def sales_answer(i: int, score: int, days_ago: int, now_ms: int) -> tuple[bytes, bytes]:
    """(key, value) of respondent ``emp-<i>``'s eNPS answer in team sales, ``days_ago``
    days before ``now_ms`` (one survey per day)."""
    return b"sales", Codec.for_record("SurveyResponse").encode(
        {
            "response_id": f"r{i}",
            "survey_id": f"s{days_ago}",
            "submitted_at": now_ms - days_ago * 86_400_000,
            "respondent": f"emp-{i}",
            "team": "sales",
            "department": None,
            "enps_score": score,
            "enps_scale_min": 0,
            "answers": [],
        }
    )


def test_enps_drop_fires_one_alert_on_the_alerts_topic(names: Names, start_worker) -> None:
    now = int(time.time() * 1000)

    def answer(i: int, score: int, days_ago: int) -> tuple[bytes, bytes]:
        return sales_answer(i, score, days_ago, now)

    # previous 30 days: 6 promoters -> eNPS 100; last 30 days: 3 promoters + 3 detractors -> 0: drop 100
    before = [answer(i, 10, 45) for i in range(6)]
    after = [answer(10 + i, 10 if i < 3 else 2, 5) for i in range(6)]
    create_topic(names.responses, names.partitions)
    produce(names.responses, before + after)
    worker = start_worker(names.env(SALESOPS_REDIS_URL="", SALESOPS_ENPS_DROP_POINTS=50))
    alerts = [Codec.for_record("Alert").decode(r.value) for r in consume_all(names.alerts, 2, timeout=90)]
    drops = {(a["subject"], a["status"]) for a in alerts}
    assert ("team:sales", "FIRING") in drops and ("org", "FIRING") in drops
    team = next(a for a in alerts if a["subject"] == "team:sales")
    assert team["kind"] == "ENPS_DROP" and team["threshold"] == 50.0
    assert (team["value"], team["unit"], team["days_in_stage"]) == (100.0, "points", None)
    assert worker.sample("salesops_enps_drop_points", group="team:sales") == 100.0
    # a second publisher pass, and a restart, do not repeat the FIRING
    worker.stop()
    worker = start_worker(names.env(SALESOPS_REDIS_URL="", SALESOPS_ENPS_DROP_POINTS=50))
    poll(
        lambda: worker.sample("salesops_enps_drop_points", group="team:sales") == 100.0, 60, what="restarted"
    )
    assert len(consume_until_quiet(names.alerts, quiet_s=3)) == 2
    assert worker.stop() == 0
