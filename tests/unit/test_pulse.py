"""Pulse surveys and eNPS: hand-computed scenarios (streams/pulse.py)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from streams.events import DAY_MS, PulseAnswer, SurveyInvitation, SurveyResponse
from streams.pulse import (
    DEFAULT_DIMENSIONS,
    PulseViews,
    StoredResponse,
    apply_invitation,
    apply_response,
    enps,
    enps_drops,
    enps_margin,
    enps_survey_view,
    enps_view,
    invitation_from_bytes,
    invitation_to_bytes,
    merge_partials,
    pulse_view,
    response_key,
    supersedes,
    suppressed_groups,
)

TZ = ZoneInfo("UTC")
SECRET = b"test-secret"
NOW = int(datetime(2024, 3, 15, 12, tzinfo=UTC).timestamp() * 1000)
K = 5
_ids = itertools.count()


def response(
    team: str,
    score: int | None = None,
    *,
    department: str | None = "eng",
    survey: str = "s1",
    at: int = NOW,
    respondent: str | None = None,
    response_id: str | None = None,
    scale_min: int = 0,
    answers: tuple[tuple[str, int, int], ...] = (),
) -> SurveyResponse:
    n = next(_ids)
    return SurveyResponse(
        response_id=response_id or f"r{n}",
        survey_id=survey,
        submitted_at=at,
        respondent=respondent or f"person-{n}",
        team=team,
        department=department,
        enps_score=score,
        enps_scale_min=scale_min,
        answers=tuple(PulseAnswer(*a) for a in answers),
    )


def scores(team: str, values: list[int], **kwargs: Any) -> list[SurveyResponse]:
    return [response(team, v, **kwargs) for v in values]


def invitation(
    team: str, invited: int, *, department: str | None = None, sent_at: int = NOW
) -> SurveyInvitation:
    return SurveyInvitation("s1", team, department, invited, sent_at)


def views_of(
    events: Sequence[SurveyResponse],
    invitations: Sequence[SurveyInvitation] = (),
    dimensions: tuple[str, ...] = DEFAULT_DIMENSIONS,
    tz: ZoneInfo = TZ,
) -> PulseViews:
    views = PulseViews(tz, dimensions)
    responses: dict[str, bytes] = {}
    invites: dict[str, bytes] = {}
    for event in events:
        apply_response(responses, views, event, SECRET)
    for inv in invitations:
        apply_invitation(invites, views, inv)
    return views


def by_group(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["group"]: row for row in rows}


def visible(rows: list[dict[str, Any]]) -> list[str]:
    return [row["group"] for row in rows if not row["suppressed"]]


# ------------------------------------------------------------------------------ formulas


def test_enps_and_margin_hand_computed() -> None:
    # 3 promoters, 1 passive, 1 detractor -> 100*(3-1)/5 = 40
    assert enps(3, 1, 1) == 40.0
    # p = 0.6, d = 0.2: 0.6 + 0.2 - 0.4^2 = 0.64; /5 = 0.128; sqrt = 0.357771; * 196 = 70.1231
    assert enps_margin(3, 1, 1) == pytest.approx(70.1231, abs=1e-4)
    # 1 promoter, 1 detractor -> 0; p = d = 0.5: 1 - 0 = 1; /2 = 0.5; sqrt = 0.707107; * 196 = 138.593
    assert enps(1, 0, 1) == 0.0
    assert enps_margin(1, 0, 1) == pytest.approx(138.593, abs=1e-3)
    # all promoters: +100, no spread at all
    assert enps(4, 0, 0) == 100.0
    assert enps_margin(4, 0, 0) == 0.0
    assert enps(0, 0, 3) == -100.0
    assert enps(0, 0, 0) is None
    assert enps_margin(0, 0, 0) is None


def test_categories_on_the_1_to_10_scale() -> None:
    # scores 1, 6 -> detractors; 7 -> passive; 9, 10 -> promoters: 100*(2-2)/5 = 0
    views = views_of(scores("a", [1, 6, 7, 9, 10], scale_min=1), dimensions=("team",))
    [row] = enps_view(merge_partials([views.partial()]), 30, NOW, K)
    assert row == {
        "group": "team:a",
        "responses": 5,
        "suppressed": False,
        "promoters": 2,
        "passives": 1,
        "detractors": 2,
        "enps": 0.0,
        # p = d = 0.4: 0.8 - 0 = 0.8; /5 = 0.16; sqrt = 0.4; * 196 = 78.4
        "margin_of_error": pytest.approx(78.4),
    }


@pytest.mark.parametrize(
    ("score", "category"),
    [
        (0, "detractors"),
        (6, "detractors"),
        (7, "passives"),
        (8, "passives"),
        (9, "promoters"),
        (10, "promoters"),
    ],
)
def test_category_boundaries_on_the_0_to_10_scale(score: int, category: str) -> None:
    views = views_of([response("a", score)], dimensions=("team",))
    [row] = enps_view(views.partial(), 1, NOW, k=1)
    assert row[category] == 1


# --------------------------------------------------------------------------- suppression


def test_four_responses_are_suppressed_five_are_shown() -> None:
    four = enps_view(views_of(scores("a", [9, 9, 7, 3])).partial(), 30, NOW, K)
    # one team in one department: org, department and team all hold the same 4 responses
    assert four == [
        {"group": "org", "responses": 4, "suppressed": True},
        {"group": "department:eng", "responses": 4, "suppressed": True},
        {"group": "team:a", "responses": 4, "suppressed": True},
    ]
    five = by_group(enps_view(views_of(scores("a", [9, 9, 7, 3, 10])).partial(), 30, NOW, K))
    # 3 promoters, 1 passive, 1 detractor -> 40
    assert [row["enps"] for row in five.values()] == [40.0, 40.0, 40.0]
    assert not any(row["suppressed"] for row in five.values())


def test_differencing_hides_a_sibling_of_a_small_team() -> None:
    # department eng = teams a (6), b (6), c (2). c < 5 is hidden; eng - a - b would reveal c
    # (residual 2 < 5), so the smallest visible sibling goes too: a and b tie at 6, a by name.
    # Residual then 2 + 6 = 8 >= 5. org -> departments: 14 - 14 = 0; org -> teams: 14 - 6 = 8.
    events = scores("a", [10] * 6) + scores("b", [8] * 6) + scores("c", [0] * 2)
    rows = enps_view(views_of(events).partial(), 30, NOW, K)
    assert visible(rows) == ["org", "department:eng", "team:b"]
    hidden = by_group(rows)["team:a"]
    assert hidden == {"group": "team:a", "responses": 6, "suppressed": True}


def test_differencing_from_org_hides_a_department_and_its_team() -> None:
    # department x = team x1 (10), department y = team y1 (3): y and y1 are below 5.
    # org -> departments: 13 - 10 = 3 < 5 -> hide x; org -> teams: 13 - 10 = 3 -> hide x1.
    events = scores("x1", [9] * 10, department="x") + scores("y1", [0] * 3, department="y")
    rows = enps_view(views_of(events).partial(), 30, NOW, K)
    assert visible(rows) == ["org"]
    assert [row["responses"] for row in rows] == [13, 10, 3, 10, 3]


def test_residual_of_zero_or_at_least_k_hides_nothing_more() -> None:
    # eng = a (5) + b (5): residual 0. ops = c (6) + d (2) + e (3): d, e hidden, residual 5 >= 5.
    events = scores("a", [9] * 5) + scores("b", [9] * 5)
    events += scores("c", [9] * 6, department="ops") + scores("d", [9] * 2, department="ops")
    events += scores("e", [9] * 3, department="ops")
    rows = enps_view(views_of(events).partial(), 30, NOW, K)
    assert visible(rows) == ["org", "department:eng", "department:ops", "team:a", "team:b", "team:c"]


def test_fewest_groups_where_the_fixed_check_order_over_hid() -> None:
    # department a = t1 (2), t2 (6), t3 (8) = 16; department b = t4 (5), t5 (9) = 14; org 30.
    # t1 < 5 is hidden. Open: org -> teams (30 - 28 = 2) and a -> teams (16 - 14 = 2).
    # Hiding t2 closes both: org - visible teams = t1 + t2 = 8 >= 5, a - t3 = 8 >= 5, and 8 is
    # no single group. One group added is the fewest; t2 (6) < t3 (8) responses.
    # The old rule checked org -> teams first and hid its smallest visible team, t4 (5),
    # then a -> teams still left 2 and it hid t2 as well: t4, at the threshold, for nothing.
    events = scores("t1", [9] * 2, department="a") + scores("t2", [9] * 6, department="a")
    events += scores("t3", [9] * 8, department="a") + scores("t4", [0] * 5, department="b")
    events += scores("t5", [0] * 9, department="b")
    rows = enps_view(views_of(events).partial(), 30, NOW, K)
    assert visible(rows) == ["org", "department:a", "department:b", "team:t3", "team:t4", "team:t5"]


def test_a_hidden_group_is_never_a_parent_minus_its_visible_children() -> None:
    # s (2, no department), department d = g (6) + v (10), department e = w (10); org 28.
    # The old rule hid s, e (org -> departments: 28 - 26 = 2) and g (org -> teams: 2), and
    # left d - v = g readable, so org - d - w = 28 - 16 - 10 = 2 gave s's scores.
    # Now a residual must not be exactly one hidden group: {e, g} fails (d - v = g); the
    # closing pairs are {e, w} (20 responses), {d, g} (22), {d, v} (26): e and w go.
    # Then org - (g + v) = s + w (12), org - d = s + e (12), d - (g + v) = nothing.
    events = scores("s", [9] * 2, department=None) + scores("g", [0] * 6, department="d")
    events += scores("v", [9] * 10, department="d") + scores("w", [8] * 10, department="e")
    rows = enps_view(views_of(events).partial(), 30, NOW, K)
    assert visible(rows) == ["org", "department:d", "team:g", "team:v"]


def test_a_hidden_department_is_never_the_sum_of_its_visible_teams() -> None:
    # x (forced hidden, e.g. by its survey) = a (6) + b (7): a + b would give x's figures,
    # so the team with fewer responses, a, is hidden with it. (The old rule skipped hidden
    # parents.)
    counts = {("a", "x"): 6, ("b", "x"): 7, ("c", "y"): 10}
    assert suppressed_groups(counts, ("team", "department"), K, forced={"department:x"}) == {
        "department:x",
        "team:a",
    }


def test_a_group_with_all_the_org_responses_hides_the_org_when_forced() -> None:
    # Only team a (8) answered this question and a is hidden for the survey: the org's
    # figures would be a's, so the org is hidden too. Unforced, nothing is hidden.
    counts: dict[tuple[str, str | None], int] = {("a", None): 8}
    assert suppressed_groups(counts, ("team", "org"), K, forced={"team:a"}) == {"org", "team:a"}
    assert suppressed_groups(counts, ("team", "org"), K) == set()


def test_a_department_below_k_is_suppressed_with_its_teams() -> None:
    # eng (4) = a (2) + b (2); org (4): everything below 5, counts only
    rows = enps_view(views_of(scores("a", [9, 9]) + scores("b", [0, 0])).partial(), 30, NOW, K)
    assert visible(rows) == []
    assert [set(row) for row in rows] == [{"group", "responses", "suppressed"}] * 4


def test_responses_without_department_belong_to_no_department() -> None:
    # org 22 = eng/a (17) + z without department (5): z is in org and team:z only.
    # org -> departments: 22 - 17 = 5 >= 5, nothing else hidden.
    events = scores("a", [9] * 17) + scores("z", [0] * 5, department=None)
    rows = by_group(enps_view(views_of(events).partial(), 30, NOW, K))
    assert list(rows) == ["org", "department:eng", "team:a", "team:z"]
    assert rows["department:eng"]["responses"] == 17
    assert not any(row["suppressed"] for row in rows.values())
    # with z at 3, org - eng = 3 < 5 hides eng, and org - a = 3 hides a: only org is left
    events = scores("a", [9] * 17) + scores("z", [0] * 3, department=None)
    assert visible(enps_view(views_of(events).partial(), 30, NOW, K)) == ["org"]


def test_dimensions_are_configurable() -> None:
    events = scores("a", [9] * 5) + scores("b", [9] * 5, department="ops")
    rows = enps_view(views_of(events, dimensions=("team", "org")).partial(), 30, NOW, K)
    assert [row["group"] for row in rows] == ["org", "team:a", "team:b"]
    with pytest.raises(ValueError):
        PulseViews(TZ, ("team", "city"))
    with pytest.raises(ValueError):
        suppressed_groups({("a", None): 3}, ("team",), k=0)


def test_partials_keep_small_groups_unsuppressed() -> None:
    # suppression happens at output time only; the partial holds the one answer of team a
    partial = views_of([response("a", 10, at=NOW)], dimensions=("team",)).partial()
    day = datetime(2024, 3, 15).toordinal()
    assert partial["enps_days"] == [[day, "a", "eng", 1, 0, 0]]
    assert json.loads(json.dumps(partial)) == partial


# -------------------------------------------------------------------- latest response wins


def test_second_answer_replaces_first_and_late_older_answer_is_ignored() -> None:
    first = response("a", 3, respondent="alice", response_id="r-1", at=NOW - 2 * DAY_MS)
    second = response("a", 10, respondent="alice", response_id="r-2", at=NOW - DAY_MS)
    in_order = PulseViews(TZ)
    table: dict[str, bytes] = {}
    assert apply_response(table, in_order, first, SECRET)
    assert apply_response(table, in_order, second, SECRET)  # replaces the detractor
    assert not apply_response(table, in_order, second, SECRET)  # redelivery: no-op
    late = PulseViews(TZ)
    late_table: dict[str, bytes] = {}
    assert apply_response(late_table, late, second, SECRET)
    assert not apply_response(late_table, late, first, SECRET)  # older, arrives late: ignored
    assert in_order.partial() == late.partial()
    assert table == late_table
    # one respondent, one promoter, no detractor left behind
    assert [row[3:] for row in in_order.partial()["enps_surveys"]] == [[1, 0, 0]]
    assert in_order.partial()["responses"] == [["s1", "a", "eng", 1]]


def test_supersedes_orders_by_time_then_response_id() -> None:
    def stored(response_id: str, at: int) -> StoredResponse:
        return StoredResponse.from_event(response("a", 9, at=at, response_id=response_id))

    assert supersedes(stored("r1", NOW), None)
    assert supersedes(stored("r1", NOW + 1), stored("r9", NOW))
    assert not supersedes(stored("r9", NOW), stored("r1", NOW + 1))
    assert supersedes(stored("r2", NOW), stored("r1", NOW))  # same millisecond: id decides
    assert not supersedes(stored("r1", NOW), stored("r1", NOW))  # duplicate
    assert StoredResponse.supersedes(stored("r2", NOW), stored("r1", NOW))


def test_stored_response_has_no_respondent_and_round_trips() -> None:
    event = response("a", 7, respondent="alice@example.com", department=None, answers=(("q1", 4, 5),))
    stored = StoredResponse.from_event(event)
    data = stored.to_bytes()
    assert b"alice" not in data
    assert b" " not in data  # compact
    assert StoredResponse.from_bytes(data) == stored
    assert StoredResponse.from_event(event).to_bytes() == data  # deterministic
    assert not hasattr(stored, "respondent")
    with pytest.raises(ValueError):
        StoredResponse.from_bytes(b'{"response_id": "r1"}')
    with pytest.raises(ValueError):
        StoredResponse.from_bytes(b"not json")


def test_response_key_is_a_keyed_hash_of_the_respondent() -> None:
    # HMAC-SHA256("test-secret", "alice@example.com") = 7c5f7656...a1f74319 (openssl dgst -hmac)
    assert response_key("s1", "alice@example.com", SECRET) == "s1|7c5f765698391e23ebffa5431fab5767"
    assert response_key("s2", "alice@example.com", SECRET).startswith("s2|")
    assert response_key("s1", "alice@example.com", b"other") != response_key(
        "s1", "alice@example.com", SECRET
    )
    assert response_key("s1", "bob", SECRET) != response_key("s1", "alice@example.com", SECRET)


# ----------------------------------------------------------------------------- pulse


def test_pulse_mean_and_favourable_share() -> None:
    # team a, q1 on 1-5: 5, 4, 3, 2, 5 -> mean 19/5 = 3.8; favourable (>= 4): 3/5 = 0.6
    #         q2 on 1-10: 10, 9, 8, 1, 7 -> mean 35/5 = 7.0; favourable (>= 9): 2/5 = 0.4
    # team b, q1: five 1s -> org q1: mean (19 + 5)/10 = 2.4, favourable 3/10 = 0.3
    q1 = [5, 4, 3, 2, 5]
    q2 = [10, 9, 8, 1, 7]
    events = [response("a", answers=(("q1", s1, 5), ("q2", s2, 10))) for s1, s2 in zip(q1, q2, strict=True)]
    events += [response("b", answers=(("q1", 1, 5),)) for _ in range(5)]
    view = pulse_view(views_of(events, dimensions=("team", "org")).partial(), "s1", K)
    assert view["survey_id"] == "s1"
    assert [q["question_id"] for q in view["questions"]] == ["q1", "q2"]
    q1_rows = by_group(view["questions"][0]["groups"])
    assert q1_rows["team:a"] == {
        "group": "team:a",
        "responses": 5,
        "suppressed": False,
        "mean_score": pytest.approx(3.8),
        "favourable_ratio": pytest.approx(0.6),
    }
    assert q1_rows["org"]["mean_score"] == pytest.approx(2.4)
    assert q1_rows["org"]["favourable_ratio"] == pytest.approx(0.3)
    q2_rows = by_group(view["questions"][1]["groups"])
    assert list(q2_rows) == ["org", "team:a"]
    assert q2_rows["team:a"]["mean_score"] == pytest.approx(7.0)
    assert q2_rows["team:a"]["favourable_ratio"] == pytest.approx(0.4)


def test_pulse_suppression_follows_survey_counts_and_each_question() -> None:
    # survey: a (10) and b (4) responses; b < 5 hidden, org - a = 4 hides a in every question.
    events = [response("a", answers=(("q1", 3, 5),)) for _ in range(10)]
    events += [response("b", answers=(("q1", 3, 5),)) for _ in range(4)]
    view = pulse_view(views_of(events, dimensions=("team", "org")).partial(), "s1", K)
    assert visible(view["questions"][0]["groups"]) == ["org"]
    # survey: a (10), b (10) visible; q2 skipped by 7 of b: b has 3 answers to q2 -> hidden,
    # and org q2 (13) - a q2 (10) = 3 would reveal them, so a is hidden for q2 too.
    events = [response("a", answers=(("q1", 3, 5), ("q2", 3, 5))) for _ in range(10)]
    events += [response("b", answers=(("q1", 3, 5), ("q2", 3, 5))) for _ in range(3)]
    events += [response("b", answers=(("q1", 3, 5),)) for _ in range(7)]
    view = pulse_view(views_of(events, dimensions=("team", "org")).partial(), "s1", K)
    assert visible(view["questions"][0]["groups"]) == ["org", "team:a", "team:b"]
    assert visible(view["questions"][1]["groups"]) == ["org"]


# ------------------------------------------------------------------- survey view and rate


def test_survey_view_response_rate_with_a_hidden_group() -> None:
    # teams a 6/10, b 7/10, c 2/4, d 3/6, e 0/5 (responses/invited), no departments.
    # c, d, e hidden (< 5); org - a - b = 5 >= 5 keeps a and b visible.
    # org: 18 responses / 35 invited; a: 6/10 = 0.6; b: 7/10 = 0.7
    events = scores("a", [10] * 6, department=None) + scores("b", [0] * 7, department=None)
    events += scores("c", [9] * 2, department=None) + scores("d", [8] * 3, department=None)
    invites = [invitation("a", 10), invitation("b", 10), invitation("c", 4), invitation("d", 6)]
    invites += [invitation("e", 5)]
    rows = by_group(enps_survey_view(views_of(events, invites, ("team", "org")).partial(), "s1", K))
    assert list(rows) == ["org", "team:a", "team:b", "team:c", "team:d", "team:e"]
    assert rows["org"]["responses"] == 18
    assert rows["org"]["invited"] == 35
    assert rows["org"]["response_rate"] == pytest.approx(18 / 35)
    # org: 8 promoters (6 + 2), 3 passives, 7 detractors -> 100*(8-7)/18 = 5.56
    assert rows["org"]["enps"] == pytest.approx(100 / 18)
    assert rows["team:a"]["response_rate"] == pytest.approx(0.6)
    assert rows["team:b"]["response_rate"] == pytest.approx(0.7)
    assert rows["team:a"]["enps"] == 100.0
    assert rows["team:c"] == {"group": "team:c", "responses": 2, "invited": 4, "suppressed": True}
    assert rows["team:e"] == {"group": "team:e", "responses": 0, "invited": 5, "suppressed": True}


def test_later_invitation_replaces_earlier_in_any_order() -> None:
    early = invitation("a", 8, sent_at=NOW - DAY_MS)
    late = invitation("a", 10, sent_at=NOW)
    forward = views_of([], [early, late], ("team",))
    backward = views_of([], [late, early], ("team",))
    assert forward.partial() == backward.partial()
    assert forward.partial()["invited"] == [["s1", "a", None, 10]]
    assert invitation_from_bytes(invitation_to_bytes(early)) == early


# ------------------------------------------------------------------------- windows, drops


def test_window_is_calendar_days_in_the_partials_time_zone() -> None:
    # 2024-03-14 23:30 UTC is 00:30 on 15 March in Paris: "today" there, "yesterday" in UTC.
    at = int(datetime(2024, 3, 14, 23, 30, tzinfo=UTC).timestamp() * 1000)
    paris = views_of([response("a", 10, at=at)], dimensions=("team",), tz=ZoneInfo("Europe/Paris"))
    utc = views_of([response("a", 10, at=at)], dimensions=("team",))
    assert [r["responses"] for r in enps_view(paris.partial(), 1, NOW, k=1)] == [1]
    assert enps_view(utc.partial(), 1, NOW, k=1) == []
    assert [r["responses"] for r in enps_view(utc.partial(), 2, NOW, k=1)] == [1]


def test_enps_drops_before_and_after_threshold() -> None:
    # team a: previous 30 days 4 promoters + 1 passive -> 80; last 30 days 2 P, 1 Pa, 2 D -> 0
    # team b: 5 passives in both windows -> 0 and 0
    # org: previous 4 P, 6 Pa -> 40; current 2 P, 6 Pa, 2 D -> 0: drop 40
    prev, cur = NOW - 40 * DAY_MS, NOW - DAY_MS
    events = scores("a", [10, 9, 9, 9, 8], at=prev) + scores("a", [10, 9, 7, 6, 0], at=cur)
    events += scores("b", [7] * 5, at=prev) + scores("b", [8] * 5, at=cur)
    partial = views_of(events, dimensions=("team", "org")).partial()
    assert enps_drops(partial, NOW, K, min_drop_points=79.9) == [
        {"group": "team:a", "previous": 80.0, "current": 0.0, "drop": 80.0}
    ]
    assert enps_drops(partial, NOW, K, min_drop_points=80.0) == []  # "more than" 80
    assert [row["group"] for row in enps_drops(partial, NOW, K, min_drop_points=39.9)] == ["team:a", "org"]


def test_enps_drops_needs_k_answers_in_both_windows_and_respects_window_edges() -> None:
    today = NOW
    # day today-59 is the oldest day of the previous window, today-29 the oldest of the current
    events = scores("a", [10] * 5, at=today - 59 * DAY_MS) + scores("a", [0] * 4, at=today - 29 * DAY_MS)
    # today-30 is in the previous window (still 100), today-60 in neither: counted there, its
    # 3 detractors would make the previous eNPS 100*(6-3)/9 = 33
    events += scores("a", [10], at=today - 30 * DAY_MS) + scores("a", [0] * 3, at=today - 60 * DAY_MS)
    partial = views_of(events, dimensions=("team",)).partial()
    assert enps_drops(partial, NOW, K, 10.0) == []  # 4 answers in the last 30 days < 5
    assert [r["responses"] for r in enps_view(partial, 30, NOW, K)] == [4]
    events += scores("a", [0], at=today)
    partial = views_of(events, dimensions=("team",)).partial()
    # previous: 6 promoters -> 100; current: 5 detractors -> -100; drop 200
    assert enps_drops(partial, NOW, K, 10.0) == [
        {"group": "team:a", "previous": 100.0, "current": -100.0, "drop": 200.0}
    ]


# ------------------------------------------------------------------- incremental, merging


def test_replacing_and_removing_everything_leaves_an_empty_partial() -> None:
    views = PulseViews(TZ)
    events = [
        response("a", 9, answers=(("q1", 5, 5), ("q2", 1, 5))),
        response("b", None, department=None, answers=(("q1", 2, 5),)),
        response("c", 0, survey="s2", at=NOW - 45 * DAY_MS),
    ]
    stored = [StoredResponse.from_event(e) for e in events]
    for s in stored:
        views.replace(None, s)
    corrected = StoredResponse.from_event(response("a", 3, response_id="r-late", at=NOW + 1))
    views.replace(stored[0], corrected)
    views.set_invitation(None, invitation("a", 10))
    views.set_invitation(invitation("a", 10), invitation("a", 12))
    assert views.partial()["enps_surveys"][0] == ["s1", "a", "eng", 0, 0, 1]
    views.replace(corrected, None)
    for s in stored[1:]:
        views.replace(s, None)
    views.set_invitation(invitation("a", 12), None)
    empty = PulseViews(TZ).partial()
    assert views.partial() == empty
    assert all(
        empty[name] == [] for name in ("enps_days", "enps_surveys", "responses", "questions", "invited")
    )


def test_merge_of_split_partials_equals_single() -> None:
    events = scores("a", [9, 10, 3, 7, 8], answers=(("q1", 4, 5),)) + scores(
        "b", [1, 2, 10], department="ops"
    )
    events += scores("c", [9, 9], department=None, survey="s2", at=NOW - 50 * DAY_MS)
    events += scores("a", [6, 6], at=NOW - 3 * DAY_MS)
    invites = [invitation("a", 10, department="eng"), invitation("b", 3, department="ops")]
    single = views_of(events, invites)
    # as Kafka would split them: by team key, over two partitions
    left = views_of([e for e in events if e.team == "a"], invites[:1])
    right = views_of([e for e in events if e.team != "a"], invites[1:])
    parts = [json.loads(json.dumps(p)) for p in (left.partial(), right.partial())]
    assert merge_partials(parts) == single.partial()
    assert merge_partials([single.partial()]) == single.partial()
    merged = merge_partials(parts)
    assert enps_view(merged, 90, NOW, K) == enps_view(single.partial(), 90, NOW, K)


def test_merge_refuses_mismatched_partials_and_accepts_none() -> None:
    utc = PulseViews(TZ).partial()
    paris = PulseViews(ZoneInfo("Europe/Paris")).partial()
    with pytest.raises(ValueError):
        merge_partials([utc, paris])
    with pytest.raises(ValueError):
        merge_partials([utc, PulseViews(TZ, ("team",)).partial()])
    # nothing reported yet: an empty partial, every view empty
    nothing = merge_partials([])
    assert enps_view(nothing, 30, NOW, K) == []
    assert enps_survey_view(nothing, "s1", K) == []
    assert pulse_view(nothing, "s1", K) == {"survey_id": "s1", "questions": []}
    assert enps_drops(nothing, NOW, K, 10.0) == []
