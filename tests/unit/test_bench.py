"""The bench's own arithmetic and its in-process path (tests/bench), without a broker."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from agents.records import DealRecord
from schemas.codec import Codec
from streams.events import DealEvent
from tests.bench.bench_worker import log_marks
from tests.bench.pipeline import CoreStep, InProcessWorker, build_dataset, created_deals, partition_of
from tests.bench.report import Progress, Report, Row, quantile, render


def test_quantile_interpolates_inside_the_bucket() -> None:
    before = {0.1: 5.0, 0.5: 5.0, 1.0: 5.0, float("inf"): 5.0}
    # deltas: 10 events <= 0.1 s, 80 in (0.1, 0.5], 10 in (0.5, 1.0]
    after = {0.1: 15.0, 0.5: 95.0, 1.0: 105.0, float("inf"): 105.0}
    # p50: rank 50 lies in (0.1, 0.5] holding ranks 10..90 -> 0.1 + 0.4 * 40/80 = 0.3
    assert quantile(before, after, 0.5) == pytest.approx(0.3)
    # p99: rank 99 lies in (0.5, 1.0] holding ranks 90..100 -> 0.5 + 0.5 * 9/10 = 0.95
    assert quantile(before, after, 0.99) == pytest.approx(0.95)


def test_quantile_past_the_last_finite_bucket_is_infinite() -> None:
    # 100 events: 50 <= 1 s, 50 above every finite bound: p99 is only known to be > 1 s
    after = {1.0: 50.0, float("inf"): 100.0}
    assert quantile({}, after, 0.99) == float("inf")
    assert quantile({}, {1.0: 0.0, float("inf"): 0.0}, 0.5) is None


def test_progress_rates_leave_start_up_out() -> None:
    prog = Progress(t0=0.0)
    # (seconds since start, events counted, CPU seconds): nothing in the first second
    prog.points += [(1.0, 0.0, 0.5), (2.0, 100.0, 1.0), (3.0, 1100.0, 2.0), (4.0, 2100.0, 3.0)]
    s = prog.summary()
    # from the first poll that saw events (2 s, 100) to the last (4 s, 2100): 2000 / 2 s
    assert s["sustained_rate"] == pytest.approx(1000.0)
    # 2 CPU seconds over 2 s; 2 CPU seconds over 2000 events = 1000 us each
    assert s["cpu_cores_used"] == pytest.approx(1.0)
    assert s["cpu_us_per_event"] == pytest.approx(1000.0)
    assert s["first_event_s"] == 2.0


def test_render_is_two_markdown_tables_with_target_and_met() -> None:
    report = Report()
    report.add(Row("end to end", 6000.0, "ev/s", ">= 5,000", True, headline=True))
    report.add(Row("p99", 0.75, "s", "< 500 ms", False, headline=True))
    report.add(Row("decode", 40000.0, "ev/s", note="in-process"))
    lines = render(report).splitlines()
    assert lines[:4] == [
        "| metric | value | target | met |",
        "|---|---|---|---|",
        "| end to end | 6,000 ev/s | >= 5,000 | yes |",
        "| p99 | 750 ms | < 500 ms | no |",
    ]
    assert lines[5:] == [
        "| breakdown | value | note |",
        "|---|---|---|",
        "| decode | 40,000 ev/s | in-process |",
    ]


def test_created_deals_are_distinct_open_deals_on_their_key_partition() -> None:
    records = created_deals(300, seed=7, partitions=6, templates=40)
    codec = Codec.for_record("DealEvent")
    decoded = [codec.decode(r.value) for r in records]
    assert len({r.key for r in records}) == 300
    assert {d["event_type"] for d in decoded} == {"CREATED"}
    assert all(r.partition == partition_of(r.key, 6) for r in records)
    assert all(d["deal_id"].encode() == r.key for d, r in zip(decoded, records, strict=True))


def test_in_process_worker_and_pure_step_agree() -> None:
    """The bench's two in-process paths: the worker's own batch handler and the pure step
    alone must end in the same deals and the same per-partition views."""
    data = build_dataset(1500, seed=11, partitions=6).records
    pipe = InProcessWorker(clock="watermark")
    pipe.handle(data)
    valid = [(r.partition, e) for r in data if isinstance(e := pipe.decode_validate(r.value), DealEvent)]
    core = CoreStep()
    for i in range(0, len(valid), 500):
        core.apply(valid[i : i + 500])

    assert pipe.counted("ok") == len(valid) > 0
    stored = {
        DealRecord.from_bytes(v).deal.deal_id: DealRecord.from_bytes(v).deal for v in pipe.table_values()
    }
    assert stored == {deal_id: rec.deal for deal_id, rec in core.table.items()}
    assert sorted(pipe.worker.partitions) == sorted(core.partitions)
    for p, part in core.partitions.items():
        assert pipe.worker.partitions[p].views.partial() == part.views.partial()


def test_restart_marks_come_from_the_new_part_of_the_log(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    old = "[2026-11-27 09:00:01,000] [7] [INFO] Restore complete! \n"  # the previous run's
    log.write_text(old)
    offset = log.stat().st_size
    with log.open("a") as fh:
        fh.write("[2026-11-27 10:00:05,500] [8] [INFO] Restore complete! \n")
        fh.write("  a continuation line without a time\n")
        fh.write("[2026-11-27 10:00:09,000] [8] [INFO] deal views rebuilt partitions=[0] deals=5\n")
        fh.write("[2026-11-27 10:00:30,000] [8] [INFO] Restore complete! \n")  # a later rebalance
    # started at 10:00:00: replayed 5.5 s later, views rebuilt 9.0 s later; first marks only
    marks = log_marks(log, offset, datetime(2026, 11, 27, 10, 0, 0))
    assert marks == {"changelog_replayed_s": 5.5, "views_rebuilt_s": 9.0}
