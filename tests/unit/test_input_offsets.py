"""Which input partitions a seek must rewind (agents/start_offsets.py).

The whole effect (no lost first fetch after a crash) is checked on a real broker by
tests/integration/test_crash_stress.py; this pins the selection rule.
"""

from __future__ import annotations

from typing import NamedTuple

from agents.start_offsets import unstarted


class TP(NamedTuple):
    topic: str
    partition: int


def test_never_committed_and_zero_committed_input_partitions_are_rewound() -> None:
    assignment = {
        TP("deals", 0),
        TP("deals", 1),
        TP("deals", 2),
        TP("app-deals-changelog", 0),
        TP("checks", 0),
    }
    committed = {TP("deals", 1): 500, TP("deals", 2): 0}
    # deals:0 never committed, deals:2 committed at 0 (aiokafka does not seek there),
    # checks:0 never committed; deals:1 is sought to 500 by Faust; changelogs are Faust's own
    assert unstarted(assignment, committed.get, {"deals", "checks"}) == [
        TP("checks", 0),
        TP("deals", 0),
        TP("deals", 2),
    ]
