"""Pulse surveys and eNPS: the latest answer per respondent, rolling views, anonymity.

State.  The worker keeps one :class:`StoredResponse` per (survey, respondent) in a
Kafka-backed table under :func:`response_key`: the survey id plus a truncated HMAC of the
respondent, so the pseudonymous respondent key never reaches the changelog topic, a
partial, a log line or an output.  A newer response (by ``(submitted_at, response_id)``,
see :meth:`StoredResponse.supersedes`) replaces the stored one; an older or duplicate one
is dropped.  Whatever the order and multiplicity of delivery, the table ends up holding
the same latest responses, and the views below are a function of the table only.

Views.  :class:`PulseViews` keeps counters per Kafka partition and updates them
incrementally with ``replace(old, new)`` (subtract the old response, add the new one), so
a superseding answer is corrected exactly and a rebuild from the recovered table gives
the same numbers.  Counters are kept per *cell* ``(team, department)``; the reporting
groups ``team:<name>``, ``department:<name>`` and ``org`` are sums of cells, formed at
query time.  Cells, not groups, because the differencing guard below needs to know how
many of a department's responses each team holds, and because one update per response
(instead of one per group) keeps ``replace`` cheap.  A response without a department
belongs to no department group but still to its team and to ``org``.

Partials.  :meth:`PulseViews.partial` is a plain JSON dict of unsuppressed counters (see
:func:`merge_partials` for its layout); global views merge the latest partial of every
partition by summing.  Partials hold small groups' exact counts: they are internal and
must never be published as they are.  Suppression happens only in the query functions,
on the merged partial, at output time.

Anonymity rule (``k``, default 5), applied separately to every output table (a window, a
survey, a survey question):

1. A group with fewer than ``k`` responses behind the table's figures is *suppressed*:
   its row shows counts only (responses, and invited in the survey view), never a score,
   a share, a mean or a margin.
2. Differencing guard.  The relations are ``org`` -> departments, ``org`` -> teams and
   each department -> its teams; a child counts with its responses *inside* the parent
   (a team's share of a department), and ``org`` -> departments has a *remainder*, the
   responses without a department.  Within one relation an observer can subtract (a
   visible parent minus its visible children leaves the *residual*: the hidden
   children's parts plus the remainder) or add (the visible children lying wholly inside
   a hidden parent).  Protected, in every output table: no such single subtraction or
   addition yields the figures of fewer than ``k`` people or of a hidden group, i.e.

   a. the residual of a visible parent is empty, or holds at least ``k`` responses and is
      not exactly the responses of one hidden group (a lone hidden child, a hidden team
      that is all the remainder, ...);
   b. the visible children lying wholly inside a hidden parent never make up all of it.

   The hidden set is the *smallest* one that satisfies a and b and contains the groups of
   rule 1, the forced groups (a survey's hidden groups in each of its questions) and any
   group with exactly the responses of a forced group (it would show its figures).  Only
   departments and teams are added (``org`` stays visible unless rule 1 or forcing hides
   it; a group holding all of the org's responses is never added, the org shows it).
   Ties: fewest responses in the added groups, then the first set met by a depth-first
   search that closes the open relation with the fewest candidate groups first (then
   ``org`` -> departments, ``org`` -> teams, departments by name) and tries candidates
   by fewest responses, then reporting order (departments before teams, by name).  The
   result is a function of the counts: it does not depend on the order in which parents
   are checked or cells are listed.  (The rule of earlier versions checked parents in a
   fixed order and hid the smallest visible child of each until its residual reached
   ``k``: it could hide a group that resolving a lower level first made unnecessary, and
   it let a hidden group be read off a parent minus its visible children.)  The search
   is a branch and bound; past :data:`SEARCH_BUDGET` examined sets (not reached in
   measurements with a few hundred teams) it answers the best set found so far, which still
   satisfies a and b but may not be the smallest.

Known limits.  Differencing *across* tables is not guarded: the 30-day and the 90-day
window of a group, two survey waves, or a window moved by a day, can be subtracted from
one another; nor are combinations of several relations of one table beyond a and b (the
general cell-suppression problem).  Rolling windows count responses, not people: someone
who answered two waves within the window counts twice.  The latest-answer rule holds
within one partition's table: two responses of one respondent that arrive on different
partitions (a team change between answers, with the topic keyed by team) are both counted.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence, Set
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from streams.events import SurveyInvitation, SurveyResponse
from streams.periods import Period, day_of, trailing_period

DEFAULT_DIMENSIONS = ("team", "department", "org")
DEFAULT_ANONYMITY_THRESHOLD = 5
PARTIAL_VERSION = 1
DROP_WINDOW_DAYS = 30

_DIMENSION_ORDER = ("org", "department", "team")
# Partial section -> number of key columns in its rows (the rest are counters).
_SECTIONS = {"enps_days": 3, "enps_surveys": 3, "responses": 3, "questions": 4, "invited": 3}

Cell = tuple[str, str | None]
Answer = tuple[str, int, int]
Counters = dict[tuple[Any, ...], list[int]]


# ---------------------------------------------------------------------------------- state


def response_key(survey_id: str, respondent: str, secret: bytes) -> str:
    """Table key of a respondent's latest response to a survey.

    ``survey_id + "|" + HMAC-SHA256(secret, respondent)`` in hex, truncated to 32 chars
    (128 bits: collisions are negligible).  A keyed hash, not a plain one, because the
    respondent space is small enough to enumerate: without the secret nobody can map a key
    back to a person.  Rotating the secret changes every key, so a respondent's answer
    sent after a rotation no longer replaces one stored before it.
    """
    digest = hmac.new(secret, respondent.encode("utf-8"), hashlib.sha256).hexdigest()
    return f"{survey_id}|{digest[:32]}"


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A validated response as the table stores it: everything but the respondent.

    ``answers`` are ``(question_id, score, scale_max)`` triples in the event's order.
    """

    response_id: str
    survey_id: str
    submitted_at: int
    team: str
    department: str | None
    enps_score: int | None
    enps_scale_min: int
    answers: tuple[Answer, ...]

    @classmethod
    def from_event(cls, event: SurveyResponse) -> StoredResponse:
        """Drop the respondent; the event is expected to have passed ``validate_response``."""
        return cls(
            response_id=event.response_id,
            survey_id=event.survey_id,
            submitted_at=event.submitted_at,
            team=event.team,
            department=event.department,
            enps_score=event.enps_score,
            enps_scale_min=event.enps_scale_min,
            answers=tuple((a.question_id, a.score, a.scale_max) for a in event.answers),
        )

    def to_bytes(self) -> bytes:
        """Compact JSON with sorted keys: equal responses give equal bytes (changelog-friendly)."""
        doc = {
            "response_id": self.response_id,
            "survey_id": self.survey_id,
            "submitted_at": self.submitted_at,
            "team": self.team,
            "department": self.department,
            "enps_score": self.enps_score,
            "enps_scale_min": self.enps_scale_min,
            "answers": [list(a) for a in self.answers],
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> StoredResponse:
        """Inverse of :meth:`to_bytes`; raise ``ValueError`` on anything else."""
        try:
            doc = json.loads(data)
            return cls(
                response_id=str(doc["response_id"]),
                survey_id=str(doc["survey_id"]),
                submitted_at=int(doc["submitted_at"]),
                team=str(doc["team"]),
                department=None if doc["department"] is None else str(doc["department"]),
                enps_score=None if doc["enps_score"] is None else int(doc["enps_score"]),
                enps_scale_min=int(doc["enps_scale_min"]),
                answers=tuple((str(q), int(s), int(m)) for q, s, m in doc["answers"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a stored survey response: {exc}") from None

    def supersedes(self, old: StoredResponse | None) -> bool:
        """True when ``self`` should replace ``old`` (the respondent's stored response).

        Newer by ``(submitted_at, response_id)``: the response id breaks ties between two
        answers in the same millisecond so every delivery order keeps the same one.  An
        equal key is a redelivery and does not supersede, so duplicates are no-ops.
        Usable as ``StoredResponse.supersedes(new, old)`` or ``supersedes(new, old)``.
        """
        if old is None:
            return True
        return (self.submitted_at, self.response_id) > (old.submitted_at, old.response_id)


supersedes = StoredResponse.supersedes


def invitation_key(invitation: SurveyInvitation) -> str:
    """Table key of an invitation: a later record for (survey, team, department) replaces it."""
    return json.dumps([invitation.survey_id, invitation.team, invitation.department], ensure_ascii=False)


def invitation_supersedes(new: SurveyInvitation, old: SurveyInvitation | None) -> bool:
    """True when ``new`` replaces ``old``: later ``sent_at``; ties go to the larger count."""
    if old is None:
        return True
    return (new.sent_at, new.invited) > (old.sent_at, old.invited)


def apply_response(
    table: MutableMapping[str, bytes], views: PulseViews, event: SurveyResponse, secret: bytes
) -> bool:
    """Fold one validated response into the responses table and the views.

    The table (a Faust table of raw bytes in the worker, a dict in tests) keeps the latest
    response per :func:`response_key`; the views follow it with ``replace(old, new)``.
    Returns whether anything changed (False for a duplicate or an older response), so
    redelivery and reordering are no-ops.  After a restart, rebuild the views by
    ``replace(None, StoredResponse.from_bytes(value))`` over the recovered table.
    """
    key = response_key(event.survey_id, event.respondent, secret)
    new = StoredResponse.from_event(event)
    raw = table.get(key)
    old = None if raw is None else StoredResponse.from_bytes(raw)
    if not new.supersedes(old):
        return False
    table[key] = new.to_bytes()
    views.replace(old, new)
    return True


def apply_invitation(
    table: MutableMapping[str, bytes], views: PulseViews, invitation: SurveyInvitation
) -> bool:
    """Fold one invitation into the invitations table and the views, like :func:`apply_response`."""
    key = invitation_key(invitation)
    raw = table.get(key)
    old = None if raw is None else invitation_from_bytes(raw)
    if not invitation_supersedes(invitation, old):
        return False
    table[key] = invitation_to_bytes(invitation)
    views.set_invitation(old, invitation)
    return True


def invitation_to_bytes(invitation: SurveyInvitation) -> bytes:
    """Compact JSON with sorted keys, like :meth:`StoredResponse.to_bytes`."""
    doc = {
        "survey_id": invitation.survey_id,
        "team": invitation.team,
        "department": invitation.department,
        "invited": invitation.invited,
        "sent_at": invitation.sent_at,
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def invitation_from_bytes(data: bytes) -> SurveyInvitation:
    """Inverse of :func:`invitation_to_bytes`; raise ``ValueError`` on anything else."""
    try:
        doc = json.loads(data)
        department = doc["department"]
        return SurveyInvitation(
            survey_id=str(doc["survey_id"]),
            team=str(doc["team"]),
            department=None if department is None else str(department),
            invited=int(doc["invited"]),
            sent_at=int(doc["sent_at"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a stored survey invitation: {exc}") from None


# ----------------------------------------------------------------------------------- eNPS


def enps_category(score: int) -> int:
    """0 promoter (9-10), 1 passive (7-8), 2 detractor (<= 6); the same on 0-10 and 1-10."""
    if score >= 9:
        return 0
    if score >= 7:
        return 1
    return 2


def enps(promoters: int, passives: int, detractors: int) -> float | None:
    """``100 * (P - D) / n`` in [-100, 100]; ``None`` without answers."""
    n = promoters + passives + detractors
    if n == 0:
        return None
    return 100.0 * (promoters - detractors) / n


def enps_margin(promoters: int, passives: int, detractors: int) -> float | None:
    """95% margin of error in eNPS points: ``1.96 * 100 * sqrt((p + d - (p - d)^2) / n)``.

    ``p`` and ``d`` are the promoter and detractor shares; the bracket is the variance of a
    single answer scored +1/0/-1.  ``None`` without answers.
    """
    n = promoters + passives + detractors
    if n == 0:
        return None
    p, d = promoters / n, detractors / n
    # Mathematically >= 0; clamp the float noise of p + d == (p - d)^2 (all one category).
    variance = max(0.0, p + d - (p - d) ** 2)
    return 1.96 * 100.0 * math.sqrt(variance / n)


# ---------------------------------------------------------------------------------- views


def _bump(table: Counters, key: tuple[Any, ...], delta: Sequence[int], sign: int) -> None:
    row = table.get(key)
    if row is None:
        row = table[key] = [0] * len(delta)
    for i, d in enumerate(delta):
        row[i] += sign * d
    if not any(row):
        # Keys that reach zero go, so removing everything leaves an empty partial.
        del table[key]


def _check_dimensions(dimensions: Iterable[str]) -> tuple[str, ...]:
    dims = tuple(dimensions)
    unknown = set(dims) - set(_DIMENSION_ORDER)
    if unknown or not dims or len(set(dims)) != len(dims):
        raise ValueError(f"dimensions must be distinct names from {_DIMENSION_ORDER}, got {dims!r}")
    return tuple(d for d in _DIMENSION_ORDER if d in dims)


class PulseViews:
    """Incremental eNPS and pulse counters of one partition's responses and invitations.

    Counters (all per cell ``(team, department)``; keys reaching 0 are deleted):
    per day of ``submitted_at`` in ``tz``: promoters/passives/detractors (rolling windows);
    per survey: the same (per-survey eNPS) and the response count (response rate);
    per survey and question: answers, score sum, favourable (score >= scale_max - 1);
    per survey: invited.
    """

    def __init__(self, tz: ZoneInfo, dimensions: Iterable[str] = DEFAULT_DIMENSIONS) -> None:
        if tz.key is None:
            raise ValueError("the time zone needs a key (ZoneInfo('Europe/Paris')), it goes into partials")
        self.tz = tz
        self.dimensions = _check_dimensions(dimensions)
        self._tables: dict[str, Counters] = {name: {} for name in _SECTIONS}

    def replace(self, old: StoredResponse | None, new: StoredResponse | None) -> None:
        """Subtract ``old``'s contributions and add ``new``'s.

        ``old`` must be exactly the response previously added for this table key (what
        the table held), ``None`` for a first response; ``new`` is ``None`` to remove.
        """
        if old is not None:
            self._apply(old, -1)
        if new is not None:
            self._apply(new, 1)

    def _apply(self, r: StoredResponse, sign: int) -> None:
        t = self._tables
        if r.enps_score is not None:
            shares = [0, 0, 0]
            shares[enps_category(r.enps_score)] = 1
            _bump(t["enps_days"], (day_of(r.submitted_at, self.tz), r.team, r.department), shares, sign)
            _bump(t["enps_surveys"], (r.survey_id, r.team, r.department), shares, sign)
        _bump(t["responses"], (r.survey_id, r.team, r.department), (1,), sign)
        for question_id, score, scale_max in r.answers:
            favourable = int(score >= scale_max - 1)
            key = (r.survey_id, question_id, r.team, r.department)
            _bump(t["questions"], key, (1, score, favourable), sign)

    def set_invitation(self, old: SurveyInvitation | None, new: SurveyInvitation | None) -> None:
        """Replace the invited count ``old`` (previously set for this key) by ``new``'s."""
        for inv, sign in ((old, -1), (new, 1)):
            if inv is not None:
                key = (inv.survey_id, inv.team, inv.department)
                _bump(self._tables["invited"], key, (inv.invited,), sign)

    def partial(self) -> dict[str, Any]:
        """This partition's counters as a JSON-serialisable dict (layout: :func:`merge_partials`)."""
        head = {"version": PARTIAL_VERSION, "tz": self.tz.key, "dimensions": list(self.dimensions)}
        return head | _rows(self._tables)


def _order(key: tuple[Any, ...]) -> tuple[Any, ...]:
    # Every key ends with the department: None (no department) sorts after every name and
    # never meets a str in a comparison.
    return key[:-1], key[-1] is None, key[-1] or ""


def _rows(tables: Mapping[str, Counters]) -> dict[str, list[list[Any]]]:
    return {
        name: [[*key, *tables[name][key]] for key in sorted(tables[name], key=_order)] for name in _SECTIONS
    }


def merge_partials(parts: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Sum partials (one per partition) into one partial of the same layout.

    Layout: ``{"version": 1, "tz": "<zone>", "dimensions": [...]`` plus sections of rows,
    each row key columns then counters, rows sorted by key, ``department`` ``null`` when
    the response has none::

        enps_days    [day_ordinal, team, department, promoters, passives, detractors]
        enps_surveys [survey_id, team, department, promoters, passives, detractors]
        responses    [survey_id, team, department, responses]
        questions    [survey_id, question_id, team, department, answers, score_sum, favourable]
        invited      [survey_id, team, department, invited]

    All parts must share version, time zone and dimensions (``ValueError`` otherwise).
    Merging nothing (no survey partition reported yet) gives an empty UTC partial, on which
    every query answers nothing.
    """
    head: dict[str, Any] | None = None
    tables: dict[str, Counters] = {name: {} for name in _SECTIONS}
    for part in parts:
        this = {"version": part["version"], "tz": part["tz"], "dimensions": list(part["dimensions"])}
        if head is None:
            head = this
        elif this != head:
            raise ValueError(f"cannot merge partials of different shape: {head} vs {this}")
        for name, width in _SECTIONS.items():
            for row in part[name]:
                _bump(tables[name], tuple(row[:width]), row[width:], 1)
    if head is None:
        return PulseViews(ZoneInfo("UTC")).partial()
    if head["version"] != PARTIAL_VERSION:
        raise ValueError(f"partial version {head['version']} is not {PARTIAL_VERSION}")
    return head | _rows(tables)


# ------------------------------------------------------------------------------ anonymity


def _groups(cell: Cell, dims: Sequence[str]) -> list[str]:
    team, department = cell
    out = []
    if "org" in dims:
        out.append("org")
    if "department" in dims and department is not None:
        out.append(f"department:{department}")
    if "team" in dims:
        out.append(f"team:{team}")
    return out


def _group_order(group: str) -> tuple[int, str]:
    kind, _, name = group.partition(":")
    return _DIMENSION_ORDER.index(kind), name


def _sum_by_group(cells: Mapping[Cell, Sequence[int]], dims: Sequence[str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for cell, values in cells.items():
        for group in _groups(cell, dims):
            acc = out.setdefault(group, [0] * len(values))
            for i, v in enumerate(values):
                acc[i] += v
    return out


# Hidden sets the exact search may examine per output table before it settles for the best
# one found so far (module docstring, rule 2).  Realistic organisations need far fewer.
SEARCH_BUDGET = 5_000


@dataclass(frozen=True)
class _Relation:
    """A parent and one of its child sets, children in reporting order."""

    parent: str
    children: tuple[str, ...]


class _OverBudget(Exception):
    pass


class _Guard:
    """The differencing guard of one output table (module docstring, rule 2).

    Groups are bit sets of the table's cells, so "the residual is exactly the responses of
    group g" is one integer comparison.
    """

    def __init__(self, cell_counts: Mapping[Cell, int], dims: Sequence[str], k: int) -> None:
        self.k = k
        cells = sorted((c for c, n in cell_counts.items() if n > 0), key=_order)
        self.mask: dict[str, int] = {}
        self.n: dict[str, int] = {}
        for i, cell in enumerate(cells):
            for group in _groups(cell, dims):
                self.mask[group] = self.mask.get(group, 0) | 1 << i
                self.n[group] = self.n.get(group, 0) + cell_counts[cell]
        ordered = sorted(self.mask, key=_group_order)
        self.same_cells: dict[int, list[str]] = defaultdict(list)
        for group in ordered:
            self.same_cells[self.mask[group]].append(group)
        departments = [g for g in ordered if g.startswith("department:")]
        teams = [g for g in ordered if g.startswith("team:")]
        self.relations: list[_Relation] = []
        if "org" in self.mask:
            self.relations += [_Relation("org", tuple(ch)) for ch in (departments, teams) if ch]
        for department in departments:
            inside = tuple(t for t in teams if self.mask[t] & self.mask[department])
            if inside:
                self.relations.append(_Relation(department, inside))
        # per relation: the responses each child has inside the parent
        self.part = [
            {
                c: sum(cell_counts[cells[i]] for i in _bits(self.mask[c] & self.mask[r.parent]))
                for c in r.children
            }
            for r in self.relations
        ]
        self.hideable: frozenset[str] = frozenset()
        self._budget = 0
        self._best: tuple[tuple[int, int], frozenset[str]] | None = None

    def open_relations(self, hidden: Set[str]) -> list[tuple[int, tuple[str, ...]]]:
        """The relations ``hidden`` leaves open, each with the hideable groups one of which
        any closing superset of ``hidden`` must add: (relation index, those groups)."""
        self._budget -= 1
        if self._budget < 0:
            raise _OverBudget
        out = []
        for i, rel in enumerate(self.relations):
            whole = self.mask[rel.parent]
            visible = [c for c in rel.children if c not in hidden]
            covered = 0
            if rel.parent not in hidden:
                # parent minus visible children: empty, or >= k responses and no hidden group
                for c in visible:
                    covered |= self.mask[c]
                residual = whole & ~covered
                if not residual:
                    continue
                count = self.n[rel.parent] - sum(self.part[i][c] for c in visible)
                if count >= self.k and not any(g in hidden for g in self.same_cells[residual]):
                    continue
                fixers = [rel.parent, *visible]  # hiding more children grows the residual
            else:
                # a hidden parent must not be the sum of the visible children inside it
                inside = [c for c in visible if not self.mask[c] & ~whole]
                for c in inside:
                    covered |= self.mask[c]
                if covered != whole:
                    continue
                fixers = inside
            out.append((i, tuple(g for g in fixers if g in self.hideable)))
        return out

    def smallest(self, base: frozenset[str], hideable: frozenset[str]) -> frozenset[str]:
        """The closing superset of ``base`` within ``base | hideable`` that adds the fewest
        groups, then the fewest responses; of equals, the first the search meets.  Past
        :data:`SEARCH_BUDGET` nodes, the best found so far, or the greedy one."""
        self.hideable = hideable
        self._best = None
        self._budget = SEARCH_BUDGET
        with contextlib.suppress(_OverBudget):
            self._branch(base, base, set())
        return self._greedy(base) if self._best is None else self._best[1]

    def _branch(self, base: frozenset[str], hidden: frozenset[str], seen: set[frozenset[str]]) -> None:
        """Depth-first branch and bound.  Every closing superset of ``hidden`` adds one of
        the fixers of each relation ``hidden`` leaves open, so branching on the fixers of
        one open relation reaches every closing set; a subtree that cannot do strictly
        better than the best set found is cut."""
        open_ = self.open_relations(hidden)
        added = hidden - base
        size, total = len(added), sum(self.n[g] for g in added)
        if not open_:
            if self._best is None or (size, total) < self._best[0]:
                self._best = ((size, total), hidden)
            return
        more_groups, more_responses = self._lower_bound(open_)
        if self._best is not None and (size + more_groups, total + more_responses) >= self._best[0]:
            return
        _, fixers = min(open_, key=lambda o: (len(o[1]), o[0]))
        for group in sorted(fixers, key=lambda g: (self.n[g], _group_order(g))):
            more = hidden | {group}
            if more in seen:
                continue
            seen.add(more)
            # Hiding `group` leaves open every open relation it is no fixer of (it is
            # neither their parent nor a child): a bound without evaluating `more`.
            more_groups, more_responses = self._lower_bound([o for o in open_ if group not in o[1]])
            bound = (size + 1 + more_groups, total + self.n[group] + more_responses)
            if self._best is None or bound < self._best[0]:
                self._branch(base, more, seen)

    def _lower_bound(self, open_: Sequence[tuple[int, tuple[str, ...]]]) -> tuple[int, int]:
        """(groups, responses) still to add, at least: open relations whose fixers are
        pairwise disjoint need one fixer each; one without fixers cannot be closed."""
        used: set[str] = set()
        groups = responses = 0
        for _, fixers in sorted(open_, key=lambda o: (len(o[1]), o[0])):
            if not fixers:
                return 1 << 30, 0
            if used.isdisjoint(fixers):
                used.update(fixers)
                groups += 1
                responses += min(self.n[g] for g in fixers)
        return groups, responses

    def _greedy(self, base: frozenset[str]) -> frozenset[str]:
        """Close the first open relation with its fixer of fewest responses (then reporting
        order) until none is open, then drop every addition not needed."""
        self._budget = 1 << 62
        hidden = set(base)
        while open_ := self.open_relations(hidden):
            hidden.add(min(open_[0][1], key=lambda g: (self.n[g], _group_order(g))))
        for group in sorted(hidden - base, key=_group_order, reverse=True):
            if not self.open_relations(hidden - {group}):
                hidden.remove(group)
        return frozenset(hidden)


def _bits(mask: int) -> Iterator[int]:
    i = 0
    while mask:
        if mask & 1:
            yield i
        mask >>= 1
        i += 1


def suppressed_groups(
    cell_counts: Mapping[Cell, int],
    dimensions: Sequence[str],
    k: int,
    forced: Iterable[str] = (),
) -> set[str]:
    """The groups of one output table whose figures must be hidden (module docstring rule).

    ``cell_counts`` are the responses behind the table's figures per ``(team, department)``;
    ``forced`` are groups hidden already (a survey's hidden groups for each of its
    questions).  The answer is a function of the counts only, not of any iteration order.
    """
    if k < 1:
        raise ValueError(f"anonymity threshold must be >= 1, got {k}")
    guard = _Guard(cell_counts, _check_dimensions(dimensions), k)
    forced = set(forced)
    base = {g for g, n in guard.n.items() if n < k} | (forced & guard.n.keys())
    # a group holding exactly the responses of a forced group shows its figures
    base.update(g for f in forced & guard.n.keys() for g in guard.same_cells[guard.mask[f]])
    org = guard.mask.get("org")
    hideable = frozenset(g for g in guard.n if g not in base and g != "org" and guard.mask[g] != org)
    return set(guard.smallest(frozenset(base), hideable)) | forced


# -------------------------------------------------------------------------------- queries


def _head(partial: Mapping[str, Any], k: int) -> tuple[ZoneInfo, tuple[str, ...]]:
    if k < 1:
        raise ValueError(f"anonymity threshold must be >= 1, got {k}")
    if partial["version"] != PARTIAL_VERSION:
        raise ValueError(f"partial version {partial['version']} is not {PARTIAL_VERSION}")
    return ZoneInfo(partial["tz"]), _check_dimensions(partial["dimensions"])


def _cells(rows: Iterable[Sequence[Any]], width: int, match: Callable[[Any], bool]) -> dict[Cell, list[int]]:
    """Sum rows whose first key column satisfies ``match`` by their cell (last 2 key columns)."""
    out: dict[Cell, list[int]] = {}
    for row in rows:
        if match(row[0]):
            counters = row[width:]
            acc = out.setdefault((row[width - 2], row[width - 1]), [0] * len(counters))
            for i, v in enumerate(counters):
                acc[i] += v
    return out


def _enps_fields(p: int, pa: int, d: int) -> dict[str, Any]:
    return {
        "promoters": p,
        "passives": pa,
        "detractors": d,
        "enps": enps(p, pa, d),
        "margin_of_error": enps_margin(p, pa, d),
    }


def _window_table(
    partial: Mapping[str, Any], period: Period, dims: Sequence[str], k: int
) -> tuple[dict[str, list[int]], set[str]]:
    cells = _cells(partial["enps_days"], 3, period.contains)
    hidden = suppressed_groups({c: sum(v) for c, v in cells.items()}, dims, k)
    return _sum_by_group(cells, dims), hidden


def enps_view(partial: Mapping[str, Any], window_days: int, now_ms: int, k: int) -> list[dict[str, Any]]:
    """eNPS per group over the last ``window_days`` calendar days up to ``day_of(now)``.

    One row per group with eNPS answers in the window (org, departments, teams, by name):
    ``group``, ``responses`` (eNPS answers), ``suppressed``, and when visible
    ``promoters``, ``passives``, ``detractors``, ``enps``, ``margin_of_error``.
    """
    tz, dims = _head(partial, k)
    if window_days < 1:
        raise ValueError(f"window_days must be >= 1, got {window_days}")
    by_group, hidden = _window_table(partial, trailing_period(window_days, now_ms, tz), dims, k)
    rows = []
    for group in sorted(by_group, key=_group_order):
        p, pa, d = by_group[group]
        row: dict[str, Any] = {"group": group, "responses": p + pa + d, "suppressed": group in hidden}
        if group not in hidden:
            row |= _enps_fields(p, pa, d)
        rows.append(row)
    return rows


def enps_survey_view(partial: Mapping[str, Any], survey_id: str, k: int) -> list[dict[str, Any]]:
    """eNPS and response rate per group for one survey.

    Rows: ``group``, ``responses`` (all responses), ``invited``, ``suppressed``, and when
    visible ``response_rate`` (responses / invited, ``None`` without invitations; above 1
    when invitations are missing) and the eNPS fields.  Suppression counts the eNPS
    answers, the people behind the score (equal to responses when eNPS is mandatory).  A
    suppressed row shows ``responses`` and ``invited`` only; hidden groups still count in
    their parents' responses, invited and rate.
    """
    _, dims = _head(partial, k)

    def mine(s: str) -> bool:
        return s == survey_id

    enps_cells = _cells(partial["enps_surveys"], 3, mine)
    hidden = suppressed_groups({c: sum(v) for c, v in enps_cells.items()}, dims, k)
    scores = _sum_by_group(enps_cells, dims)
    responses = _sum_by_group(_cells(partial["responses"], 3, mine), dims)
    invited = _sum_by_group(_cells(partial["invited"], 3, mine), dims)
    rows = []
    for group in sorted(scores.keys() | responses.keys() | invited.keys(), key=_group_order):
        n = responses.get(group, [0])[0]
        inv = invited.get(group, [0])[0]
        suppressed = group in hidden or group not in scores
        row: dict[str, Any] = {"group": group, "responses": n, "invited": inv, "suppressed": suppressed}
        if not suppressed:
            row["response_rate"] = n / inv if inv else None
            row |= _enps_fields(*scores[group])
        rows.append(row)
    return rows


def pulse_view(partial: Mapping[str, Any], survey_id: str, k: int) -> dict[str, Any]:
    """Per question and group of one survey: answers, mean score, favourable share.

    ``{"survey_id", "questions": [{"question_id", "groups": [row, ...]}, ...]}``, questions
    by id, each row ``group``, ``responses`` (answers to the question), ``suppressed`` and
    when visible ``mean_score`` and ``favourable_ratio`` (top two boxes).  Groups the rule
    hides on the survey's response counts are hidden in every question; each question is
    then its own table (its own answer counts), so a skipped question cannot be differenced.
    """
    _, dims = _head(partial, k)
    response_cells = _cells(partial["responses"], 3, lambda s: s == survey_id)
    survey_hidden = suppressed_groups({c: v[0] for c, v in response_cells.items()}, dims, k)
    per_question: dict[str, list[list[Any]]] = defaultdict(list)
    for raw in partial["questions"]:
        if raw[0] == survey_id:
            per_question[raw[1]].append(raw[1:])
    questions = []
    for question_id in sorted(per_question):
        cells = _cells(per_question[question_id], 3, lambda _: True)
        hidden = suppressed_groups({c: v[0] for c, v in cells.items()}, dims, k, forced=survey_hidden)
        by_group = _sum_by_group(cells, dims)
        rows = []
        for group in sorted(by_group, key=_group_order):
            n, score_sum, favourable = by_group[group]
            row: dict[str, Any] = {"group": group, "responses": n, "suppressed": group in hidden}
            if group not in hidden:
                row |= {"mean_score": score_sum / n, "favourable_ratio": favourable / n}
            rows.append(row)
        questions.append({"question_id": question_id, "groups": rows})
    return {"survey_id": survey_id, "questions": questions}


def enps_drops(
    partial: Mapping[str, Any], now_ms: int, k: int, min_drop_points: float
) -> list[dict[str, Any]]:
    """Groups whose 30-day eNPS fell by more than ``min_drop_points`` against the 30 days before.

    Current window: the 30 days ending with ``day_of(now)``; previous: days 31..60 back.
    A group qualifies only when it is visible in both windows' tables (at least ``k``
    answers and not hidden by the differencing guard), since the alert shows both scores.
    Rows ``group``, ``previous``, ``current``, ``drop``; the largest drop first.
    """
    drops: list[dict[str, Any]] = []
    for group, (prev_counts, cur_counts) in _drop_windows(partial, now_ms, k).items():
        before, now = enps(*prev_counts), enps(*cur_counts)
        assert before is not None and now is not None  # visible groups have >= k >= 1 answers
        if before - now > min_drop_points:
            drops.append({"group": group, "previous": before, "current": now, "drop": before - now})
    drops.sort(key=lambda r: (-r["drop"], _group_order(r["group"])))
    return drops


def enps_drop_margins(partial: Mapping[str, Any], now_ms: int, k: int) -> dict[str, float]:
    """95% margin of error of each group's drop (the groups :func:`enps_drops` reports):
    ``sqrt(m_previous^2 + m_current^2)`` in points, the margin of the difference of two
    independent estimates, each from :func:`enps_margin`.  A drop smaller than this is
    within the noise of the two samples."""
    margins = {}
    for group, (prev_counts, cur_counts) in _drop_windows(partial, now_ms, k).items():
        before, now = enps_margin(*prev_counts), enps_margin(*cur_counts)
        assert before is not None and now is not None  # visible groups have >= k >= 1 answers
        margins[group] = math.hypot(before, now)
    return margins


def _drop_windows(partial: Mapping[str, Any], now_ms: int, k: int) -> dict[str, tuple[list[int], list[int]]]:
    """group -> (previous, current) [promoters, passives, detractors] of the drop windows:
    current = the 30 days ending with ``day_of(now)``, previous = days 31..60 back; only
    groups visible in both windows' tables."""
    tz, dims = _head(partial, k)
    current = trailing_period(DROP_WINDOW_DAYS, now_ms, tz)
    previous = Period("previous-30d", current.first_day - DROP_WINDOW_DAYS, current.first_day - 1)
    cur_groups, cur_hidden = _window_table(partial, current, dims, k)
    prev_groups, prev_hidden = _window_table(partial, previous, dims, k)
    return {
        group: (prev_groups[group], cur_groups[group])
        for group in cur_groups.keys() & prev_groups.keys()
        if group not in cur_hidden and group not in prev_hidden
    }
