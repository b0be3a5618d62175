"""Memory per open deal, in a fresh interpreter so earlier bench phases do not blur it.

``python -m tests.bench.memory RECORDS.pickle --mode rss|trace`` loads pre-encoded CREATED
events (one per deal) through the worker's own batch handler (:class:`InProcessWorker`:
the deals table in Faust's memory store, per-partition views, stall index and watermark)
and prints one JSON object.  ``rss`` reads the resident set from ``/proc/self/statm`` before and
after; ``trace`` uses tracemalloc (exact Python allocations, grouped by the file that
allocated them) and is run separately because tracing inflates the RSS it would measure.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pickle
import sys
import tracemalloc
from pathlib import Path

from tests.bench.pipeline import InProcessWorker, Record

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE


def load(records: list[Record], pipe: InProcessWorker | None = None) -> InProcessWorker:
    pipe = pipe or InProcessWorker()
    pipe.handle(records)
    return pipe


def _short(filename: str) -> str:
    parts = Path(filename).parts
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1]
    return "/".join(parts[-2:])


def _by_file(stats: list[tracemalloc.StatisticDiff], deals: int) -> dict[str, float]:
    out: dict[str, int] = {}
    for stat in stats:
        name = _short(stat.traceback[0].filename)
        out[name] = out.get(name, 0) + stat.size_diff
    return {k: v / deals for k, v in sorted(out.items(), key=lambda kv: -kv[1]) if abs(v / deals) >= 1}


def measure(records: list[Record], mode: str) -> dict[str, object]:
    """Bytes per deal over all deals, and over the second half alone: the second half
    leaves out fixed costs (per-partition structures, the views' bounded cache of recently
    changed deals) that a small run would otherwise spread over few deals."""
    # warm the code paths on a throwaway instance, so the delta below is the deals and not
    # imports, caches or first-use allocations
    load(records[:200])
    gc.collect()
    half = len(records) // 2
    out: dict[str, object] = {"deals": len(records), "mode": mode}
    pipe = InProcessWorker()
    if mode == "rss":
        before = rss_bytes()
        load(records[:half], pipe)
        gc.collect()
        middle = rss_bytes()
        load(records[half:], pipe)
        gc.collect()
        after = rss_bytes()
        out |= {"rss_before": before, "rss_middle": middle, "rss_after": after}
        out["bytes_per_deal"] = (after - before) / len(records)
        out["marginal_bytes_per_deal"] = (after - middle) / (len(records) - half)
    else:
        # the snapshots themselves are traced (tracemalloc.py): left out of every figure
        mine = [tracemalloc.Filter(False, tracemalloc.__file__)]
        tracemalloc.start(1)
        start = tracemalloc.take_snapshot().filter_traces(mine)
        load(records[:half], pipe)
        gc.collect()
        mid_snapshot = tracemalloc.take_snapshot().filter_traces(mine)
        load(records[half:], pipe)
        gc.collect()
        end = tracemalloc.take_snapshot().filter_traces(mine)
        tracemalloc.stop()
        whole = end.compare_to(start, "filename")
        second = end.compare_to(mid_snapshot, "filename")
        out["bytes_per_deal"] = sum(s.size_diff for s in whole) / len(records)
        out["marginal_bytes_per_deal"] = sum(s.size_diff for s in second) / (len(records) - half)
        out["by_file_bytes_per_deal"] = _by_file(whole, len(records))
        out["marginal_by_file_bytes_per_deal"] = _by_file(second, len(records) - half)
    table = pipe.table_values()
    out["table_value_bytes_per_deal"] = sum(len(v) for v in table) / max(len(table), 1)
    out["open_deals"] = len(table)
    out["stall_indexed"] = pipe.stall_indexed
    out["rejected"] = pipe.rejected
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", type=Path, help="pickled list of tests.bench.pipeline.Record")
    parser.add_argument("--mode", choices=["rss", "trace"], default="rss")
    args = parser.parse_args(argv)
    with args.records.open("rb") as fh:
        records = pickle.load(fh)
    json.dump(measure(records, args.mode), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
