"""One survey partition's step: a batch of responses and invitations in, changes out.

The worker and the tests call :func:`apply_batch`; nothing else decides what a survey
record does.  Contract:

* ``items`` are one partition's validated :class:`~streams.events.SurveyResponse` s and
  :class:`~streams.events.SurveyInvitation` s in offset order.  ``responses`` and
  ``invitations`` are that partition's tables (raw bytes per key: Faust tables written
  through the batch's writer in the worker, dicts in tests); each item is folded in turn
  with :func:`streams.pulse.apply_response` / :func:`~streams.pulse.apply_invitation`,
  so a batch gives exactly the state the same items give one by one, and a duplicate or a
  superseded response changes nothing (the tables keep the latest per key).
* The partition's views (:class:`SurveyPartition`) are updated in place; ``dirty`` is set
  when any item changed them, so the worker republishes that partition's partial.  After a
  restart the views are rebuilt from the tables (:meth:`SurveyPartition.restore`), never
  from counters.
* An item that raises is reported as data (``internal_error`` with its index, like the
  deal step), and the rest of the batch is applied: the worker dead-letters that one.
* The respondent never leaves the step: only its keyed hash (``secret``) is stored.
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from streams import pulse
from streams.deal_step import ItemProblem
from streams.events import SurveyInvitation, SurveyResponse


@dataclass
class SurveyPartition:
    """The derived state of one survey partition: its pulse views, and whether they
    changed since its partial was last published."""

    views: pulse.PulseViews
    dirty: bool = True

    @classmethod
    def empty(cls, tz: ZoneInfo) -> SurveyPartition:
        return cls(pulse.PulseViews(tz))

    def restore_response(self, raw: bytes) -> None:
        """Add one stored response (the responses table's value) after a restart."""
        self.views.replace(None, pulse.StoredResponse.from_bytes(raw))

    def restore_invitation(self, raw: bytes) -> None:
        """Add one stored invitation (the invitations table's value) after a restart."""
        self.views.set_invitation(None, pulse.invitation_from_bytes(raw))


@dataclass
class SurveyOutcome:
    changed: int = 0  # items that changed the views
    problems: list[ItemProblem] = field(default_factory=list)


def apply_batch(
    part: SurveyPartition,
    responses: MutableMapping[str, bytes],
    invitations: MutableMapping[str, bytes],
    items: Sequence[SurveyResponse | SurveyInvitation],
    secret: bytes,
) -> SurveyOutcome:
    """Fold ``items`` in order into the tables and the partition's views."""
    out = SurveyOutcome()
    for i, item in enumerate(items):
        try:
            if isinstance(item, SurveyResponse):
                out.changed += pulse.apply_response(responses, part.views, item, secret)
            else:
                out.changed += pulse.apply_invitation(invitations, part.views, item)
        except Exception as exc:  # a bug on one item must not stop the partition
            out.problems.append(ItemProblem(i, "internal_error", f"{type(exc).__name__}: {exc}"))
    if out.changed:
        part.dirty = True
    return out
