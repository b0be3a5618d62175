"""SIGKILL at many moments of a replay: nothing lost, every time.

A replay (the whole history already in the input topic, as after a backfill) is killed
with SIGKILL at several moments, the first one right after the first batch (when the
table changelog topics were created a moment ago), each time restarted, and at the end
compared with the uninterrupted reference (:class:`DealReference`, computed from the
file without the core): the open pipeline, the closed deals of the last 90 days and the
deals table's changelog (one key per deal).

``make test`` kills 3 times; ``make soak`` sets ``SALESOPS_CRASH_KILLS`` (and
``SALESOPS_CRASH_DEALS``) for a longer run.  The kill points come from a seeded random
generator; the seed is in the failure message (``SALESOPS_CRASH_SEED`` replays it).
"""

from __future__ import annotations

import os
import random
import time

import pytest

from tests.integration.conftest import Names, consume_until_quiet, create_topic, poll, poll_equal, run_cli
from tests.integration.reference import DealReference, read_jsonl
from tests.integration.test_deal_pipeline import api_by_stage, assert_last_90_days_closed_match
from tests.integration.test_deal_recovery import simulate

KILLS = int(os.environ.get("SALESOPS_CRASH_KILLS", "3"))
DEALS = int(os.environ.get("SALESOPS_CRASH_DEALS", "3000"))
SEED = int(os.environ.get("SALESOPS_CRASH_SEED", str(time.time_ns() % 1_000_000)))


def processed(worker, topic: str) -> float:
    return worker.sample("salesops_events_total", topic=topic, outcome="ok") or 0.0


@pytest.mark.timeout(300 + 60 * KILLS)
def test_sigkill_at_many_moments_of_a_replay_loses_nothing(names: Names, start_worker, tmp_path) -> None:
    rng = random.Random(SEED)
    path = simulate(tmp_path, DEALS, seed=SEED % 1000)
    events = read_jsonl(path)
    ref = DealReference(events)
    names.partitions = 6
    create_topic(names.deal_events, names.partitions)
    # the group hands a dead member's partitions on after the session timeout: keep it short
    env = names.env(SALESOPS_REDIS_URL="", SALESOPS_SESSION_TIMEOUT_S="6")
    # the history arrives in KILLS + 1 parts, each imported before a worker starts, so every
    # worker has a backlog (at least one new part) and each kill point is reached
    lines = path.read_text().splitlines(keepends=True)
    size = -(-len(lines) // (KILLS + 1))
    parts = []
    for i in range(KILLS + 1):
        part = tmp_path / f"part-{i}.jsonl"
        part.write_text("".join(lines[i * size : (i + 1) * size]))
        parts.append(part)
    # kill after the first batch (the changelog topics were created a moment ago), then at
    # random points of what each restart processes
    thresholds = [1, *(rng.randint(1, size) for _ in range(KILLS - 1))]
    history = []
    for part, n in zip(parts, thresholds, strict=False):
        imported = run_cli("import", "deals", str(part), "--no-progress", env=env)
        assert imported.returncode == 0, imported.stderr
        worker = start_worker(env)
        poll(lambda w=worker, n=n: processed(w, names.deal_events) >= n, 180, what=f"{n} events processed")
        history.append(int(processed(worker, names.deal_events)))
        worker.kill()  # SIGKILL: no commit, no flush, no goodbye
    imported = run_cli("import", "deals", str(parts[-1]), "--no-progress", env=env)
    assert imported.returncode == 0, imported.stderr
    worker = start_worker(env)
    context = f"seed={SEED} kills after {history} processed events"
    poll_equal(lambda: api_by_stage(worker), ref.open_by_stage(), 300, interval=1, what=f"views ({context})")
    assert_last_90_days_closed_match(worker, ref)
    changelog = {r.key for r in consume_until_quiet(f"{names.uid}-deals-changelog", quiet_s=3)}
    assert len(changelog) == len(ref.deals), context
    assert worker.stop() == 0
