"""Pulse views: delivery order and duplicates change nothing; the anonymity rule holds."""

from __future__ import annotations

import itertools
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any
from unittest.mock import patch
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams import pulse
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


# ------------------------------------------------------------- differencing rule, by spec
# An independent reading of the rule in streams/pulse.py's docstring: groups are sets of
# cells, a relation is a parent and its children, and a hidden set "leaks" when one
# subtraction or addition within a relation isolates fewer than k responses or exactly
# the responses of a hidden group.

Cells = dict[tuple[str, str | None], int]


def cells_of_groups(counts: Cells) -> dict[str, frozenset[tuple[str, str | None]]]:
    out: dict[str, set[tuple[str, str | None]]] = defaultdict(set)
    for cell in counts:
        team, department = cell
        out["org"].add(cell)
        out[f"team:{team}"].add(cell)
        if department is not None:
            out[f"department:{department}"].add(cell)
    return {g: frozenset(c) for g, c in out.items()}


def leaks(hidden: set[str], counts: Cells, k: int) -> list[str]:
    cells = cells_of_groups(counts)
    if not cells:
        return []
    departments = [g for g in cells if g.startswith("department:")]
    teams = [g for g in cells if g.startswith("team:")]
    relations = [("org", departments), ("org", teams)]
    relations += [(d, [t for t in teams if cells[t] & cells[d]]) for d in departments]
    found = []
    for parent, children in relations:
        whole = cells[parent]
        visible = [c for c in children if c not in hidden]
        if parent not in hidden:
            residual = whole - frozenset().union(*(cells[c] for c in visible))
            n = sum(counts[c] for c in residual)
            if residual and n < k:
                found.append(f"{parent} minus visible children isolates {n} < {k} responses")
            if residual and any(cells[g] == residual for g in hidden if g in cells):
                found.append(f"{parent} minus visible children is a hidden group")
        elif frozenset().union(*(cells[c] for c in visible if cells[c] <= whole)) == whole:
            found.append(f"hidden {parent} is the sum of its visible children")
    return found


def rule_inputs(counts: Cells, k: int, forced: set[str]) -> tuple[set[str], list[str]]:
    """(groups hidden before any differencing, groups the guard may add), per the docstring."""
    cells = cells_of_groups(counts)
    n = {g: sum(counts[c] for c in cs) for g, cs in cells.items()}
    base = {g for g in cells if n[g] < k} | (forced & cells.keys())
    base |= {g for g in cells for f in forced & cells.keys() if cells[g] == cells[f]}
    hideable = [g for g in cells if g != "org" and g not in base and cells[g] != cells["org"]]
    return base, sorted(hideable)


small_hierarchies = st.dictionaries(
    st.tuples(st.sampled_from(["a", "b", "c", "d", "e"]), st.sampled_from(["x", "y", None])),
    st.integers(1, 12),
    min_size=1,
    max_size=8,
)
forced_groups = st.sets(st.sampled_from(["org", "department:x", "department:y", "team:a", "team:b"]))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_hierarchies, st.integers(1, 7), forced_groups)
def test_hidden_set_blocks_every_differencing_and_is_the_smallest(
    counts: Cells, k: int, forced: set[str]
) -> None:
    hidden = suppressed_groups(counts, ("team", "department", "org"), k, forced=forced)
    cells = cells_of_groups(counts)
    base, hideable = rule_inputs(counts, k, forced)
    present = hidden & cells.keys()
    assert forced <= hidden and base <= present
    assert leaks(present, counts, k) == []
    added = present - base
    assert added <= set(hideable), "only departments and teams not holding the whole org are added"
    n = {g: sum(counts[c] for c in cs) for g, cs in cells.items()}
    # brute force over every subset of the groups the guard may add
    best = min(
        (size, sum(n[g] for g in extra))
        for size in range(len(hideable) + 1)
        for extra in itertools.combinations(hideable, size)
        if not leaks(base | set(extra), counts, k)
    )
    assert (len(added), sum(n[g] for g in added)) == best


larger_hierarchies = st.dictionaries(
    st.tuples(st.sampled_from([f"t{i}" for i in range(12)]), st.sampled_from(["x", "y", "z", "w", None])),
    st.integers(1, 15),
    max_size=24,
)


@FAST
@given(larger_hierarchies, st.integers(2, 7), forced_groups, st.randoms(use_true_random=False))
def test_hidden_set_does_not_depend_on_the_order_of_cells_or_forced_groups(
    counts: Cells, k: int, forced: set[str], rnd: Any
) -> None:
    items = list(counts.items())
    reference = suppressed_groups(dict(items), ("team", "department", "org"), k, forced=sorted(forced))
    rnd.shuffle(items)
    shuffled_forced = sorted(forced)
    rnd.shuffle(shuffled_forced)
    assert (
        suppressed_groups(dict(items), ("org", "team", "department"), k, forced=shuffled_forced) == reference
    )
    assert leaks(reference & cells_of_groups(counts).keys(), counts, k) == []


@FAST
@given(larger_hierarchies, st.integers(2, 7), forced_groups, st.integers(1, 4))
def test_past_the_search_budget_the_answer_still_blocks_every_differencing(
    counts: Cells, k: int, forced: set[str], budget: int
) -> None:
    with patch.object(pulse, "SEARCH_BUDGET", budget):
        hidden = suppressed_groups(counts, ("team", "department", "org"), k, forced=forced)
    base, hideable = rule_inputs(counts, k, forced)
    present = hidden & cells_of_groups(counts).keys()
    assert base <= present and present - base <= set(hideable)
    assert leaks(present, counts, k) == []
