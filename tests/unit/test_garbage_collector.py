"""The worker's garbage-collector settings (agents/app.py, tune_garbage_collector)."""

from __future__ import annotations

import gc
import weakref
from typing import Any

from agents.app import GC_THRESHOLDS, tune_garbage_collector


class Node:
    me: Any = None


def test_the_worker_freezes_what_exists_and_collects_the_young_generation_less_often() -> None:
    before = gc.get_threshold()
    try:
        tune_garbage_collector()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert GC_THRESHOLDS[0] > before[0]
        assert gc.get_freeze_count() > 0
        # a cycle made after the freeze is still found and freed
        node = Node()
        node.me = node
        gone = weakref.ref(node)
        del node
        assert gone() is not None  # a cycle: reference counting alone never frees it
        gc.collect()
        assert gone() is None
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
