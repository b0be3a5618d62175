"""The survey step: any batching of a shuffled, duplicated delivery gives the state of the
sorted, de-duplicated records one by one, and a restart rebuilds the same views."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.events import SurveyInvitation, SurveyResponse
from streams.pulse import PulseViews, apply_invitation, apply_response
from streams.survey_step import SurveyPartition, apply_batch
from tests.unit.test_pulse_properties import FAST, SECRET, TZ, streams_of_responses

INVITATIONS = [
    SurveyInvitation("s1", "a", "x", 12, 1_700_000_000_000),
    SurveyInvitation("s1", "a", "x", 14, 1_700_000_100_000),  # supersedes the one before
    SurveyInvitation("s2", "b", None, 7, 1_700_000_000_000),
]


def one_by_one(items: list[SurveyResponse | SurveyInvitation]) -> tuple[PulseViews, dict, dict]:
    views = PulseViews(TZ)
    responses: dict[str, bytes] = {}
    invitations: dict[str, bytes] = {}
    for item in items:
        if isinstance(item, SurveyResponse):
            apply_response(responses, views, item, SECRET)
        else:
            apply_invitation(invitations, views, item)
    return views, responses, invitations


@FAST
@given(streams_of_responses(), st.lists(st.integers(1, 6), min_size=1, max_size=40))
def test_any_batching_gives_the_state_of_one_by_one(
    case: tuple[list[SurveyResponse], list[SurveyResponse]], sizes: list[int]
) -> None:
    distinct, delivered = case
    items: list[SurveyResponse | SurveyInvitation] = [*delivered, *INVITATIONS]
    part = SurveyPartition.empty(TZ)
    part.dirty = False
    responses: dict[str, bytes] = {}
    invitations: dict[str, bytes] = {}
    start, i, changed = 0, 0, 0
    while start < len(items):
        size = sizes[i % len(sizes)]
        changed += apply_batch(part, responses, invitations, items[start : start + size], SECRET).changed
        start, i = start + size, i + 1
    views, ref_responses, ref_invitations = one_by_one(items)
    assert part.views.partial() == views.partial()
    assert (responses, invitations) == (ref_responses, ref_invitations)
    # the sorted, de-duplicated responses give the same partial (order and duplicates are noise)
    ordered = sorted(distinct, key=lambda e: (e.submitted_at, e.response_id))
    assert one_by_one([*ordered, *INVITATIONS])[0].partial() == part.views.partial()
    assert part.dirty is (changed > 0) and changed >= 1  # the invitations change the views at least
    # a restart: the views rebuilt from the tables alone are the same
    restored = SurveyPartition.empty(TZ)
    for raw in responses.values():
        restored.restore_response(raw)
    for raw in invitations.values():
        restored.restore_invitation(raw)
    assert restored.views.partial() == part.views.partial()


def test_a_batch_of_duplicates_changes_nothing_and_leaves_the_partition_clean() -> None:
    response = SurveyResponse("r1", "s1", 1_700_000_000_000, "ann", "a", "x", 9, 0, ())
    part = SurveyPartition.empty(TZ)
    responses: dict[str, bytes] = {}
    invitations: dict[str, bytes] = {}
    assert apply_batch(part, responses, invitations, [response], SECRET).changed == 1
    before = part.views.partial()
    part.dirty = False
    outcome = apply_batch(part, responses, invitations, [response, response], SECRET)
    assert (outcome.changed, outcome.problems) == (0, [])
    assert part.dirty is False and part.views.partial() == before


def test_an_item_that_breaks_the_step_is_reported_and_the_rest_applied() -> None:
    good = SurveyResponse("r1", "s1", 1_700_000_000_000, "ann", "a", "x", 9, 0, ())
    broken = SurveyResponse("r2", "s1", 1_700_000_000_000, "bob", "a", "x", 9, 0, ("not an answer",))  # type: ignore[arg-type]
    part = SurveyPartition.empty(TZ)
    outcome = apply_batch(part, {}, {}, [broken, good], SECRET)
    assert [(pr.index, pr.reason) for pr in outcome.problems] == [(0, "internal_error")]
    assert outcome.changed == 1
    assert part.views.partial() == one_by_one([good])[0].partial()
