"""Pulse views: delivery order and duplicates change nothing; the anonymity rule holds."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.events import DAY_MS, PulseAnswer, SurveyResponse
from streams.pulse import (
    PulseViews,
    StoredResponse,
    apply_response,
    merge_partials,
    response_key,
    suppressed_groups,
)

TZ = ZoneInfo("Europe/Paris")
SECRET = b"property-secret"
NOW = int(datetime(2024, 3, 15, 12, tzinfo=UTC).timestamp() * 1000)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

answers = st.lists(
    st.tuples(st.sampled_from(["q1", "q2", "q3"]), st.integers(1, 5)), max_size=3, unique_by=lambda a: a[0]
).map(lambda items: tuple(PulseAnswer(q, score, 5) for q, score in items))

# Few respondents, surveys and instants, so that supersession and same-millisecond ties are common.
# The content of a response is a function of its response_id (it is the de-duplication key).
response_bodies = st.fixed_dictionaries(
    {
        "survey_id": st.sampled_from(["s1", "s2"]),
        "respondent": st.sampled_from(["ann", "bob", "cat", "dan", "eve"]),
        "submitted_at": st.sampled_from([NOW - 45 * DAY_MS, NOW - 3 * DAY_MS, NOW - 3 * DAY_MS + 1, NOW]),
        "team": st.sampled_from(["a", "b", "c"]),
        "department": st.sampled_from(["x", "y", None]),
        "enps_score": st.none() | st.integers(0, 10),
        "enps_scale_min": st.sampled_from([0, 1]),
        "answers": answers,
    }
)


@st.composite
def streams_of_responses(draw: st.DrawFn) -> tuple[list[SurveyResponse], list[SurveyResponse]]:
    """(distinct responses, the same shuffled with duplicates) as Kafka may deliver them."""
    bodies: list[dict[str, Any]] = draw(st.lists(response_bodies, min_size=1, max_size=25))
    distinct = []
    for i, body in enumerate(bodies):
        score = body["enps_score"]
        if score is not None:
            score = max(score, body["enps_scale_min"])
        distinct.append(SurveyResponse(response_id=f"r{i:02d}", **(body | {"enps_score": score})))
    duplicates = draw(st.lists(st.sampled_from(distinct), max_size=10))
    delivered = draw(st.permutations(distinct + duplicates))
    return distinct, delivered


def through_table(events: list[SurveyResponse]) -> tuple[PulseViews, dict[str, bytes]]:
    views = PulseViews(TZ)
    table: dict[str, bytes] = {}
    for event in events:
        apply_response(table, views, event, SECRET)
    return views, table


@FAST
@given(streams_of_responses())
def test_shuffled_and_duplicated_delivery_gives_the_sorted_deduplicated_partial(
    case: tuple[list[SurveyResponse], list[SurveyResponse]],
) -> None:
    distinct, delivered = case
    views, table = through_table(delivered)
    ordered = sorted(distinct, key=lambda e: (e.submitted_at, e.response_id))
    reference, reference_table = through_table(ordered)
    assert views.partial() == reference.partial()
    assert table == reference_table
    # and independently of the table logic: the latest response per respondent and survey
    latest: dict[str, SurveyResponse] = {}
    for event in ordered:
        latest[response_key(event.survey_id, event.respondent, SECRET)] = event
    direct = PulseViews(TZ)
    for event in latest.values():
        direct.replace(None, StoredResponse.from_event(event))
    assert views.partial() == direct.partial()


@FAST
@given(streams_of_responses(), st.lists(st.integers(0, 2), min_size=25, max_size=25))
def test_merge_of_any_split_equals_the_whole_and_removal_empties(
    case: tuple[list[SurveyResponse], list[SurveyResponse]], partition_of: list[int]
) -> None:
    distinct, _ = case
    parts = [PulseViews(TZ) for _ in range(3)]
    whole = PulseViews(TZ)
    for i, event in enumerate(distinct):
        stored = StoredResponse.from_event(event)
        parts[partition_of[i]].replace(None, stored)
        whole.replace(None, stored)
    assert merge_partials(p.partial() for p in parts) == whole.partial()
    for event in distinct:
        whole.replace(StoredResponse.from_event(event), None)
    assert whole.partial() == PulseViews(TZ).partial()


cells = st.dictionaries(
    st.tuples(st.sampled_from(["a", "b", "c", "d", "e"]), st.sampled_from(["x", "y", None])),
    st.integers(1, 12),
    max_size=10,
)


@FAST
@given(cells, st.integers(1, 6), st.sets(st.sampled_from(["org", "department:x", "team:a", "team:d"])))
def test_no_visible_parent_minus_visible_children_reveals_fewer_than_k(
    counts: dict[tuple[str, str | None], int], k: int, forced: set[str]
) -> None:
    hidden = suppressed_groups(counts, ("team", "department", "org"), k, forced=forced)
    n: dict[str, int] = defaultdict(int)
    teams_in: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for (team, department), c in counts.items():
        n["org"] += c
        n[f"team:{team}"] += c
        if department is not None:
            n[f"department:{department}"] += c
            teams_in[f"department:{department}"][f"team:{team}"] += c
    assert forced <= hidden
    assert all(g in hidden for g, c in n.items() if c < k)
    relations = [
        ("org", {g: c for g, c in n.items() if g.startswith("department:")}),
        ("org", {g: c for g, c in n.items() if g.startswith("team:")}),
        *teams_in.items(),
    ]
    for parent, children in relations:
        if n.get(parent, 0) and parent not in hidden:
            residual = n[parent] - sum(c for g, c in children.items() if g not in hidden)
            assert residual == 0 or residual >= k, (parent, residual)
