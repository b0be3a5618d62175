"""Memory per open deal, in a fresh interpreter so earlier bench phases do not blur it.

``python -m tests.bench.memory RECORDS.pickle --mode rss|trace`` loads pre-encoded CREATED
events (one per deal), then holds them the way the worker does (:class:`InProcessDeals`:
table value bytes in a dict, per-partition ``PipelineViews`` and ``StallIndex``) and prints
one JSON object.  ``rss`` reads the resident set from ``/proc/self/statm`` before and
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

from tests.bench.pipeline import InProcessDeals, Record

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE


def load(records: list[Record]) -> InProcessDeals:
    pipe = InProcessDeals()
    for r in records:
        pipe.handle(r.partition, r.value)
    return pipe


def measure(records: list[Record], mode: str) -> dict[str, object]:
    # warm the code paths and the per-partition structures on a throwaway instance, so the
    # delta below is the deals and not imports, caches or first-use allocations
    load(records[:200])
    gc.collect()
    out: dict[str, object] = {"deals": len(records), "mode": mode}
    if mode == "rss":
        before = rss_bytes()
        pipe = load(records)
        gc.collect()
        after = rss_bytes()
        out["rss_before"], out["rss_after"] = before, after
        out["bytes_per_deal"] = (after - before) / len(records)
    else:
        tracemalloc.start(1)
        base, _ = tracemalloc.get_traced_memory()
        pipe = load(records)
        gc.collect()
        current, peak = tracemalloc.get_traced_memory()
        snapshot = tracemalloc.take_snapshot()
        tracemalloc.stop()
        out["bytes_per_deal"] = (current - base) / len(records)
        out["peak_bytes_per_deal"] = (peak - base) / len(records)
        by_file: dict[str, int] = {}
        for stat in snapshot.statistics("filename"):
            name = stat.traceback[0].filename
            parts = Path(name).parts
            short = (
                "/".join(parts[-2:])
                if "site-packages" not in parts
                else parts[parts.index("site-packages") + 1]
            )
            by_file[short] = by_file.get(short, 0) + stat.size
        out["by_file_bytes_per_deal"] = {
            k: v / len(records)
            for k, v in sorted(by_file.items(), key=lambda kv: -kv[1])
            if v / len(records) >= 1
        }
    table = pipe.table
    out["table_value_bytes_per_deal"] = sum(len(v) for v in table.values()) / max(len(table), 1)
    out["open_deals"] = len(table)
    out["stall_indexed"] = sum(len(p.index) for p in pipe.partitions.values())
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
