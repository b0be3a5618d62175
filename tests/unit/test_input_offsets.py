"""Which input partitions a seek must rewind (agents/input_offsets.py).

The whole effect (no lost first fetch after a crash) is checked on a real broker by
tests/integration/test_crash_stress.py; this pins the selection rule.
"""

from __future__ import annotations

from typing import NamedTuple

from agents.input_offsets import InputPositions, unstarted


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


def test_a_record_past_the_expected_offset_asks_once_for_the_missing_ones() -> None:
    committed = {TP("deals", 0): 10}
    pos = InputPositions(committed.get, {"deals"})
    # from the committed offset 10: 10, 11 in order; 15 skips 12-14 -> seek back to 12
    assert [pos.observe(TP("deals", 0), o) for o in (10, 11, 15, 16)] == [None, None, 12, None]
    # the re-fetched 12.. arrive, then the duplicates 15, 16 again: all in order now
    assert [pos.observe(TP("deals", 0), o) for o in (12, 13, 14, 15, 16, 17)] == [None] * 6
    # a never-committed partition expects offset 0; compacted topics are not followed
    assert pos.observe(TP("deals", 1), 2000) == 0
    assert pos.observe(TP("checks", 0), 99) is None
    # after a seek (rebalance), positions restart from the committed offsets
    pos.reset()
    assert pos.observe(TP("deals", 0), 10) is None


def test_a_partition_commits_only_when_its_acked_offsets_start_at_its_start() -> None:
    committed = {TP("deals", 0): 100}
    pos = InputPositions(committed.get, {"deals"})
    pos.reset(earliest={TP("deals", 1): 40})  # deals:1 never committed, its log starts at 40
    # committed 100: acked 101.. leaves record 100 unprocessed (Faust let one through)
    assert not pos.may_commit(TP("deals", 0), [101, 102])
    assert pos.may_commit(TP("deals", 0), [100, 101])
    # never committed: the acked run must start at the earliest offset
    assert not pos.may_commit(TP("deals", 1), [956, 957])
    assert pos.may_commit(TP("deals", 1), [40, 41, 956])
    assert pos.observe(TP("deals", 1), 40) is None
    # not followed (compacted) and nothing acked: Faust decides
    assert pos.may_commit(TP("checks", 0), [7])
    assert pos.may_commit(TP("deals", 0), [])
