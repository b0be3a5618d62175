"""``python -m tests.bench.bench_worker``: the worker core's benchmarks.

Against the running local stack (``make up``; ``make bench`` starts it when needed), on
uniquely named topics (the integration tests' :class:`Names` scheme) of 6 partitions:

1. produce N pre-encoded simulated deal events (a four-month backfill) as fast as aiokafka
   batches allow; a raw aiokafka consumer reads them back (what the client alone costs);
2. end to end: one real worker (``python -m agents.cli worker``) consumes the topic; its
   rate, from the first to the last event counted in ``salesops_events_total``, is the
   end-to-end rate (every counted event has updated the table, its changelog and the views);
3. a naive Faust app (:mod:`tests.bench.naive_app`: decode, two table writes per event)
   consumes the same topic as a real subprocess in the same run: the worker's ratio to it;
4. in-process: the worker's own batch handler (:class:`~tests.bench.pipeline.InProcessWorker`)
   and the pure step alone, stage by stage, with a cProfile: where the time goes;
5. latency: a fresh, caught-up worker gets a paced 2,000 events/s and the
   ``salesops_event_to_view_seconds`` histogram delta gives p50/p99 (bucket resolution);
6. memory and restart: N open deals (one CREATED event each) into a worker with
   ``memory://`` tables (its VmRSS growth per open deal), stopped; then the time from
   starting a new worker process until ``/readyz`` answers 200 and ``/api/pipeline``
   shows the N open deals, with ``memory://`` (recovery from the changelog) and
   ``rocksdb://`` (first start without local files, then a restart from them).

Targets are printed next to the numbers and never asserted.  Results go to
``bench-results/latest.json`` and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import logging
import os
import pickle
import platform
import pstats
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from agents.app import BATCH_MAX_EVENTS
from streams.events import DealEvent
from tests.bench.pipeline import (
    HISTORY_DAYS,
    LIVE_MS,
    CoreStep,
    Dataset,
    InProcessWorker,
    Record,
    build_dataset,
    created_deals,
)
from tests.bench.report import Progress, Report, Row, forecast_rows, quantile, render
from tests.integration.conftest import BOOTSTRAP, ROOT, Names, WorkerProcess, free_port, kafka_unreachable

log = logging.getLogger("bench")

PARTITIONS = 6
RESULTS_DIR = ROOT / "bench-results"
MAX_SILENCE_S = 60.0  # give up on a process that counted nothing new for this long
# A whole /metrics page costs the worker ~20 ms of event-loop time (~1,400 series); the
# polls ask for their one family (?name[]=), so a 1 s poll costs the worker next to nothing.
POLL_S = 1.0
READY_POLL_S = 0.1  # /readyz is cheap: the restart time is read to this resolution

# The targets: one worker on this machine.
TARGET_WORKER_RATE = 5_000.0
AIM_WORKER_RATE = 10_000.0
TARGET_NAIVE_RATIO = 5.0
TARGET_P99_S = 0.5
TARGET_BYTES_PER_DEAL = 2048.0


class BenchError(RuntimeError):
    """A measurement could not be taken (worker died, stalled, broker unreachable)."""


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    # uncommitted changes of the code under test make the commit an approximation
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "agents", "streams", "schemas", "sinks"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "mem_total_mb": _meminfo_mb("MemTotal"),
        "git_commit": commit.stdout.strip() + ("+uncommitted" if dirty.stdout.strip() else ""),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        # a broker with thousands of leftover test topics runs hotter (background work
        # per partition) and answers every all-topics metadata request more slowly
        "broker_topics": broker_topic_count(),
    }


def broker_topic_count() -> int | None:
    from kafka import KafkaAdminClient

    try:
        admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP, request_timeout_ms=10_000)
    except Exception:  # the count is context for the report, never a reason to fail it
        return None
    try:
        return len(admin.list_topics())
    finally:
        admin.close()


def _meminfo_mb(key: str) -> int | None:
    with contextlib.suppress(OSError), open("/proc/meminfo") as fh:
        for ln in fh:
            if ln.startswith(key + ":"):
                return int(ln.split()[1]) // 1024
    return None


# --------------------------------------------------------------------------- Kafka


def new_names(kind: str, run_id: str) -> Names:
    return Names(uid=f"bench-{kind}-{run_id}", partitions=PARTITIONS)


async def produce_batches(topic: str, records: list[Record]) -> float:
    """Produce with one batch per partition at a time; returns seconds until all acked.

    Records are pre-partitioned with Kafka's default partitioner, so the per-key order and
    placement are what a keyed producer gives, without its per-record Python overhead.
    """
    producer = AIOKafkaProducer(
        bootstrap_servers=BOOTSTRAP, acks=1, linger_ms=5, max_batch_size=1 << 20, max_request_size=4 << 20
    )
    await producer.start()
    try:
        by_partition: dict[int, list[Record]] = {}
        for r in records:
            by_partition.setdefault(r.partition, []).append(r)
        t0 = time.perf_counter()
        futures = []
        for p, recs in by_partition.items():
            batch = producer.create_batch()
            for r in recs:
                if batch.append(key=r.key, value=r.value, timestamp=None) is None:
                    futures.append(await producer.send_batch(batch, topic, partition=p))
                    batch = producer.create_batch()
                    batch.append(key=r.key, value=r.value, timestamp=None)
            if batch.record_count():
                futures.append(await producer.send_batch(batch, topic, partition=p))
        await asyncio.gather(*futures)
        return time.perf_counter() - t0
    finally:
        await producer.stop()


async def produce_paced(
    topic: str, records: Iterator[Record], rate: float, seconds: float
) -> tuple[int, float]:
    """Send at ``rate`` records/s for ``seconds`` (keyed, default partitioner); (sent, elapsed)."""
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks=1, linger_ms=0)
    await producer.start()
    try:
        sent, futures = 0, []
        t0 = time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < seconds:
            due = int(rate * elapsed)
            while sent < due:
                r = next(records)
                futures.append(await producer.send(topic, key=r.key, value=r.value, partition=r.partition))
                sent += 1
            await asyncio.sleep(0.002)
        await asyncio.gather(*futures)
        return sent, time.perf_counter() - t0
    finally:
        await producer.stop()


@dataclass
class ConsumeResult:
    records: int
    seconds: float  # from the partitions being assigned to the last record handled
    first_s: float  # time to the first batch

    @property
    def rate(self) -> float:
        return self.records / self.seconds


FetchWork = Callable[[list[tuple[int, bytes | None, bytes | None]]], Awaitable[None]]


async def consume_raw(
    topic: str, n: int, work: FetchWork | None = None, timeout: float = 300.0
) -> ConsumeResult:
    """Read ``n`` records from the beginning with a group-less aiokafka consumer; ``work``
    gets each fetch as one batch of (partition, key, value), as the worker's agent does."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=BOOTSTRAP,
        enable_auto_commit=False,
        group_id=None,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 << 20,
        fetch_max_bytes=64 << 20,
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        await consumer.seek_to_beginning()
        got, first = 0, None
        t0 = time.perf_counter()
        while got < n:
            if time.perf_counter() - t0 > timeout:
                raise BenchError(f"raw consumer read {got}/{n} records of {topic} in {timeout:.0f}s")
            # the worker's batch size: what one take from its stream hands the handler
            batch = await consumer.getmany(timeout_ms=1000, max_records=BATCH_MAX_EVENTS)
            if first is None and batch:
                first = time.perf_counter() - t0
            records = [(tp.partition, r.key, r.value) for tp, recs in batch.items() for r in recs]
            if work is not None and records:
                await work(records)
            got += len(records)
        return ConsumeResult(got, time.perf_counter() - t0, first or 0.0)
    finally:
        await consumer.stop()


def create_topic(name: str, partitions: int = PARTITIONS, configs: dict[str, str] | None = None) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP, request_timeout_ms=10_000)
    try:
        admin.create_topics([NewTopic(name, partitions, 1, topic_configs=configs or {})])
    finally:
        admin.close()


def delete_topics(run_id: str) -> int:
    """Delete the topics this run made: inputs, worker outputs and changelogs all carry
    the run's app id ``bench-<kind>-<run_id>``."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP, request_timeout_ms=10_000)
    try:
        mine = [t for t in admin.list_topics() if "bench-" in t and run_id in t]
        if mine:
            admin.delete_topics(mine)
        return len(mine)
    finally:
        admin.close()


def check_broker() -> None:
    problem = kafka_unreachable()
    if problem:
        raise BenchError(problem)


# --------------------------------------------------------------------------- processes


def follow(
    counted: Callable[[], float],
    alive: Callable[[], None],
    n: float,
    what: str,
    on_poll: Callable[[float, float], None] | None = None,
    budget_s: float | None = None,
) -> tuple[float, float]:
    """Poll ``counted()`` until it reaches ``n`` or ``budget_s`` has passed: (time, count).
    Raise when the process dies (``alive``) or counts nothing new for ``MAX_SILENCE_S``."""
    last, last_change = -1.0, time.perf_counter()
    deadline = None if budget_s is None else last_change + budget_s
    while True:
        alive()
        now = time.perf_counter()
        try:
            c = counted()
        except (OSError, ValueError):
            c = last
        if on_poll is not None:
            on_poll(now, c)
        if c >= n or (deadline is not None and now >= deadline):
            return now, c
        if c != last:
            last, last_change = c, now
        elif now - last_change > MAX_SILENCE_S:
            raise BenchError(f"{what} counted {c:.0f}/{n:.0f} and nothing more for {MAX_SILENCE_S:.0f}s")
        time.sleep(POLL_S)


def proc_status(pid: int, key: str) -> int:
    """A ``/proc/<pid>/status`` field in bytes (VmRSS, VmHWM)."""
    with open(f"/proc/{pid}/status") as fh:
        for ln in fh:
            if ln.startswith(key + ":"):
                return int(ln.split()[1]) * 1024
    raise BenchError(f"{key} not in /proc/{pid}/status")


def proc_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class BenchWorker:
    """A real worker subprocess (the integration tests' :class:`WorkerProcess`) plus the
    reads the bench needs: event counts, readiness, open deals, the latency histogram,
    VmRSS and CPU time."""

    def __init__(self, names: Names, logs: Path, log_name: str | None = None, **env: str) -> None:
        # The production publication interval, not the tests' 0.5 s; no Redis sink: this
        # measures the deal path, and Redis is written by the publisher timer only.
        settings = {"SALESOPS_REDIS_URL": "", "SALESOPS_FLUSH_INTERVAL_S": "2.0", **env}
        self.names = names
        log_path = logs / f"{log_name or names.uid}.log"
        self.proc = WorkerProcess(env=names.env(**settings), log_path=log_path)
        self.command = [sys.executable, "-m", "agents.cli", "worker"]

    def __enter__(self) -> BenchWorker:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def start(self) -> BenchWorker:
        """What :meth:`WorkerProcess.start` does, with a replaceable command line."""
        w = self.proc
        env = {**os.environ, **w.env, "SALESOPS_WEB_PORT": str(w.port), "PYTHONUNBUFFERED": "1"}
        env.setdefault("SALESOPS_DATA_DIR", str(w.log_path.parent / f"data-{w.port}"))
        w._log = w.log_path.open("ab")
        w.proc = subprocess.Popen(self.command, cwd=ROOT, env=env, stdout=w._log, stderr=subprocess.STDOUT)
        return self

    def stop(self) -> None:
        """SIGTERM (graceful, as Kubernetes stops it), SIGKILL after 60 s."""
        p = self.proc.proc
        if p is None:
            return
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        self.proc._log.close()
        self.proc.proc = None

    @property
    def pid(self) -> int:
        assert self.proc.proc is not None
        return self.proc.proc.pid

    def alive(self) -> None:
        if self.proc.proc is None:
            raise BenchError("worker not started")
        if self.proc.proc.poll() is not None:
            raise BenchError(
                f"worker exited with {self.proc.proc.returncode}; log:\n{self.proc.log_tail(30)}"
            )

    def wait_ready(self, timeout: float = 90.0) -> float:
        """Seconds until ``/readyz`` answers 200."""
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout:
            self.alive()
            with contextlib.suppress(OSError):
                if self.proc.get("/readyz")[0] == 200:
                    return time.perf_counter() - t0
            time.sleep(0.2)
        raise BenchError(f"worker not ready after {timeout:.0f}s; log:\n{self.proc.log_tail(30)}")

    def samples(self, *names: str) -> list[Any]:
        text = self.proc.metrics(*names)
        return [s for fam in text_string_to_metric_families(text) for s in fam.samples]

    def counted(self) -> float:
        """Deal events handled: ``ok`` + ``dead_letter`` of the deal topic."""
        topic = self.names.deal_events
        return sum(
            s.value
            for s in self.samples("salesops_events_total")
            if s.name == "salesops_events_total"
            and s.labels.get("topic") == topic
            and s.labels.get("outcome") in ("ok", "dead_letter")
        )

    def open_deals(self) -> int | None:
        """Open deals in ``/api/pipeline`` (the merged view), None while it answers 503."""
        status, body = self.proc.get("/api/pipeline")
        if status != 200:
            return None
        return sum(int(row["deals"]) for row in json.loads(body)["by_stage"])

    def histogram(self, name: str) -> dict[float, float]:
        """Cumulative bucket counts of an unlabelled histogram, by upper bound."""
        return {
            float(s.labels["le"]): s.value
            for s in self.samples(f"{name}_bucket")
            if s.name == f"{name}_bucket"
        }

    def wait_counted(
        self, n: int, on_poll: Callable[[float, float], None] | None = None, budget_s: float | None = None
    ) -> tuple[float, float]:
        try:
            return follow(self.counted, self.alive, n, "worker", on_poll, budget_s)
        except BenchError as exc:
            raise BenchError(f"{exc}; log:\n{self.proc.log_tail(30)}") from None

    def status(self, key: str) -> int:
        return proc_status(self.pid, key)

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.pid)


class NaiveApp:
    """The naive Faust app (:mod:`tests.bench.naive_app`) as a real subprocess."""

    def __init__(self, topic: str, app_id: str, logs: Path) -> None:
        self.port = free_port()
        self.log_path = logs / f"{app_id}.log"
        self.command = [
            sys.executable,
            "-m",
            "tests.bench.naive_app",
            f"--topic={topic}",
            f"--app-id={app_id}",
            f"--port={self.port}",
            f"--data-dir={logs / 'naive-data'}",
            f"--bootstrap={BOOTSTRAP}",
            f"--partitions={PARTITIONS}",
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> NaiveApp:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.command, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT)
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()

    def alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace").splitlines()[-30:]
            raise BenchError(f"naive app exited with {self.proc.returncode}; log:\n" + "\n".join(tail))

    def counted(self) -> float:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/count", timeout=10) as resp:
            return float(json.loads(resp.read())["events"])

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        return proc_cpu_seconds(self.proc.pid)


# --------------------------------------------------------------------------- phases


def phase_produce(report: Report, names: Names, data: list[Record]) -> None:
    create_topic(names.deal_events)
    seconds = asyncio.run(produce_batches(names.deal_events, data))
    report.details["produce"] = {"topic": names.deal_events, "records": len(data), "seconds": seconds}
    report.add(Row("produce (aiokafka batches, acks=1)", len(data) / seconds, "ev/s"))
    log.info("produced %d records in %.2fs", len(data), seconds)


def phase_baselines(report: Report, names: Names, n: int, work_n: int) -> float:
    raw = asyncio.run(consume_raw(names.deal_events, n))
    report.details["baseline_consumer"] = vars(raw)
    report.add(
        Row("raw aiokafka consumer (no group, no work)", raw.rate, "rec/s", note="what the client costs")
    )
    log.info("raw consumer %.0f rec/s", raw.rate)

    # the same consumer handing each fetch to the worker's own batch handler, in-process:
    # what the worker would do without Faust's stream machinery and changelog I/O
    pipe = InProcessWorker(clock="watermark")

    async def work(records: list[tuple[int, bytes | None, bytes | None]]) -> None:
        await pipe.handle_batch(pipe.events(records))

    with_all = asyncio.run(consume_raw(names.deal_events, work_n, work))
    report.add(
        Row(
            "aiokafka + the worker's batch handler, no Faust",
            with_all.rate,
            "ev/s",
            note=f"first {work_n:,} events; changelog records counted, not sent",
        )
    )
    report.details["consumer_plus_worker_handler"] = vars(with_all)
    return raw.rate


def phase_worker(
    report: Report, names: Names, n: int, logs: Path, budget_s: float, runs: int = 1, warmup: int = 0
) -> float | None:
    """``runs`` workers one after the other on the same topic, each from the beginning in
    a consumer group (and changelog) of its own; the headline is their median.  On this
    machine one run's rate moves by up to 20 % from the next one's (same data, same code):
    one figure is an anecdote.

    First a warm-up worker over the first ``warmup`` events, reported but not counted: the
    bench broker is a fresh JVM (deploy/local/run-bench.sh), and the first worker run
    against it was measured 10-30 % slower than the next ones while the broker's JIT
    compiled its produce path (a long-running broker is warm)."""
    warm = _worker_run(names, min(warmup, n), logs, budget_s, "warmup", runs) if warmup else None
    results = [_worker_run(names, n, logs, budget_s, i, runs) for i in range(runs)]
    rates = [r["sustained_rate"] for r in results if r["sustained_rate"]]
    rate = statistics.median(rates) if rates else None
    report.details["worker"] = {
        "topic": names.deal_events,
        "events": n,
        "budget_s": budget_s,
        "runs": results,
        "warmup": warm,
    }
    each = ", ".join(
        f"{r['sustained_rate'] or 0:,.0f} ev/s ({r['done']}, {r['cpu_cores_used'] or 0:.2f} cores, "
        f"{r['cpu_us_per_event'] or 0:,.0f} us CPU/event)"
        for r in results
    )
    what = f"median of {runs} runs" if runs > 1 else "one run"
    if warm is not None:
        what += f" after an uncounted warm-up run over the first {min(warmup, n):,} events"
    report.add(
        Row(
            "end to end, one worker (events/s)",
            rate,
            "ev/s",
            f">= {TARGET_WORKER_RATE:,.0f} (aim {AIM_WORKER_RATE:,.0f})",
            rate is not None and rate >= TARGET_WORKER_RATE,
            f"{n:,}-event backfill, {what}: {each}; every counted event has updated its table "
            "record, changelog and views",
            headline=True,
        )
    )
    return float(rate) if rate else None


def _worker_run(names: Names, n: int, logs: Path, budget_s: float, i: int | str, runs: int) -> dict[str, Any]:
    """One worker over the first ``n`` events of the topic; ``i`` names the run (its own
    consumer group and output topics when there is more than one run)."""
    own = runs > 1 or not isinstance(i, int)
    run = {"SALESOPS_APP_ID": f"{names.uid}-run{i}", "log_name": f"{names.uid}-run{i}"} if own else {}
    run |= {"SALESOPS_OUTPUT_TOPIC_PREFIX": f"{names.uid}.out.run{i}."} if own else {}
    # A four-month backfill is a replay: stall detection on event time (the documented
    # replay setting), so only visits that really stalled raise checks and alerts.
    with BenchWorker(names, logs, SALESOPS_CLOCK="watermark", **run) as w:
        t_spawn = time.perf_counter()
        ready_s = w.start().wait_ready()
        prog = Progress(t_spawn)
        w.wait_counted(n, lambda now, c: prog.points.append((now - t_spawn, c, w.cpu_seconds())), budget_s)
        rss = w.status("VmRSS")
    s = prog.summary()
    done = "all" if s["counted"] >= n else f"{s['counted']:,.0f} of {n:,} in the {budget_s:.0f} s budget"
    log.info(
        "worker run %s/%d: %.0f ev/s (%s), %.2f cores",
        i + 1 if isinstance(i, int) else i,
        runs,
        s["sustained_rate"] or 0,
        done,
        s["cpu_cores_used"] or 0,
    )
    return {"ready_s": ready_s, "rss_after": rss, "done": done, **s}


def phase_naive(
    report: Report, names: Names, n: int, logs: Path, budget_s: float, worker_rate: float | None
) -> None:
    """The naive Faust app on the worker's topic, from the beginning, own consumer group."""
    with NaiveApp(names.deal_events, f"{names.uid}-naive", logs) as app:
        t_spawn = time.perf_counter()
        prog = Progress(t_spawn)
        follow(
            app.counted,
            app.alive,
            n,
            "naive app",
            lambda now, c: prog.points.append((now - t_spawn, c, app.cpu_seconds())),
            budget_s,
        )
    s = prog.summary()
    rate = s["sustained_rate"]
    report.details["naive"] = {"topic": names.deal_events, "events": n, "budget_s": budget_s, **s}
    done = "all" if s["counted"] >= n else f"{s['counted']:,.0f} of {n:,} in the {budget_s:.0f} s budget"
    report.add(
        Row(
            "naive Faust app (events/s)",
            rate,
            "ev/s",
            note=f"same topic, same run: decode + 2 table writes per event, per-event stream; {done}; "
            f"{s['cpu_cores_used'] or 0:.2f} cores busy",
            headline=True,
        )
    )
    ratio = worker_rate / rate if worker_rate and rate else None
    report.add(
        Row(
            "worker / naive Faust app",
            ratio,
            "x",
            f">= {TARGET_NAIVE_RATIO:.0f} x",
            None if ratio is None else ratio >= TARGET_NAIVE_RATIO,
            headline=True,
        )
    )
    log.info("naive app %.0f ev/s (%s); worker/naive %s", rate or 0, done, ratio)


def _timed(fn: Callable[[Any], Any], items: list[Any]) -> float:
    """Seconds to call ``fn(item)`` over ``items``."""
    t0 = time.perf_counter()
    for item in items:
        fn(item)
    return time.perf_counter() - t0


def _chunks(items: list[Any], size: int = BATCH_MAX_EVENTS) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


# Parts of the worker's batch handler whose cumulative profiled time is reported per event:
# (label, file, function); a part the code no longer has is left out.
HANDLER_PARTS = (
    ("the whole batch handler", "agents/app.py", "handle_deal_batch"),
    ("decode + validate", "agents/app.py", "_deal_item"),
    ("pure step", "streams/deal_step.py", "apply_batch"),
    ("table record reads", "agents/records.py", "from_bytes"),
    ("table record writes", "agents/records.py", "to_bytes"),
    ("changelog flush (records acknowledged at once)", "agents/changelog.py", "flush"),
)


def phase_in_process(report: Report, data: list[Record], profile_n: int) -> None:
    """In one process: the pure step alone, and the worker's own batch handler (decode,
    validation, step, table bytes in Faust's table, the batch barrier); a cProfile of the
    handler says which part costs what."""
    n = len(data)
    pipe = InProcessWorker(clock="watermark")
    valid = [(r.partition, e) for r in data if isinstance(e := pipe.decode_validate(r.value), DealEvent)]
    core = CoreStep()
    core_s = _timed(core.apply, _chunks(valid))
    batches = pipe.batches(data)
    t0 = time.perf_counter()
    pipe.run(batches)
    whole_s = time.perf_counter() - t0
    rates = {"pure_step": len(valid) / core_s, "worker_batch_handler": n / whole_s}
    report.details["in_process"] = {
        "events": n,
        "valid": len(valid),
        "rates": rates,
        "us_per_event": {k: 1e6 / v for k, v in rates.items()},
        "alerts": pipe.alerts,
        "dead_letters": pipe.rejected,
        "deals": len(pipe.table_values()),
        "changelog_records": pipe.producer.records,
    }
    report.add(
        Row(
            "in-process: the pure step alone (streams.deal_step.apply_batch)",
            rates["pure_step"],
            "ev/s",
            note=f"first {n:,} events, validated beforehand; table as objects; batches of "
            f"{BATCH_MAX_EVENTS:,}",
        )
    )
    report.add(
        Row(
            "in-process: the worker's batch handler",
            rates["worker_batch_handler"],
            "ev/s",
            note=f"first {n:,} events: decode, validate, step, table bytes, "
            f"{pipe.producer.records:,} changelog records (acknowledged at once)",
        )
    )

    prof = cProfile.Profile()
    profiled = InProcessWorker(clock="watermark")
    sample = data[:profile_n]
    sample_batches = profiled.batches(sample)
    prof.enable()
    profiled.run(sample_batches)
    prof.disable()
    stats = pstats.Stats(prof)
    report.details["profile"] = profile_rows(stats, len(sample))
    parts = handler_parts(stats, len(sample))
    report.details["profile_parts_us_per_event"] = parts
    for label, us in parts.items():
        report.add(
            Row(
                f"profiled: {label}",
                us,
                "us",
                note=f"cumulative CPU per event under cProfile ({len(sample):,} events; "
                "cProfile inflates, compare the parts)",
            )
        )


def handler_parts(stats: pstats.Stats, events: int) -> dict[str, float]:
    """Cumulative profiled microseconds per event of each of :data:`HANDLER_PARTS`."""
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    out: dict[str, float] = {}
    for label, where, func in HANDLER_PARTS:
        cumulative = sum(
            ct
            for (filename, _line, name), (_cc, _nc, _tt, ct, _callers) in raw.items()
            if name == func and filename.endswith(where)
        )
        if cumulative:
            out[label] = cumulative / events * 1e6
    return out


def _package(filename: str) -> str:
    """Where a profiled function lives: a site-package, a salesops folder, a stdlib module."""
    if filename in ("~", "") or filename.startswith("<"):
        return "builtins and C code"
    parts = Path(filename).parts
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1]
    if str(ROOT) in filename:
        return "/".join(parts[len(ROOT.parts) : len(ROOT.parts) + 1])
    lib = next((i for i, part in enumerate(parts) if part.startswith("python3")), None)
    if lib is not None and lib + 1 < len(parts):
        return "stdlib " + parts[lib + 1].removesuffix(".py")
    return parts[-1]


def profile_rows(prof: cProfile.Profile | pstats.Stats, events: int, top: int = 20) -> dict[str, Any]:
    stats = prof if isinstance(prof, pstats.Stats) else pstats.Stats(prof)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(tt for (_cc, _nc, tt, _ct, _callers) in raw.values())
    rows = []
    for (filename, line, func), (_cc, nc, tt, ct, _callers) in sorted(raw.items(), key=lambda kv: -kv[1][2])[
        :top
    ]:
        path = Path(filename)
        where = "/".join(path.parts[-2:]) if filename not in ("~", "") else ""
        rows.append(
            {
                "function": f"{where}:{line}({func})" if where else func,
                "calls": nc,
                "tottime_s": tt,
                "cumtime_s": ct,
                "share": tt / total if total else 0.0,
                "us_per_event": tt / events * 1e6,
            }
        )
    packages: dict[str, float] = {}
    for (filename, _line, _func), (_cc, _nc, tt, _ct, _callers) in raw.items():
        name = _package(filename)
        packages[name] = packages.get(name, 0.0) + tt
    by_package = [
        {"package": k, "tottime_s": v, "share": v / total if total else 0.0}
        for k, v in sorted(packages.items(), key=lambda kv: -kv[1])[:12]
    ]
    return {"events": events, "total_s": total, "top": rows, "by_package": by_package}


def render_profile(title: str, profile: dict[str, Any]) -> str:
    lines = [
        f"{title} over {profile['events']:,} events "
        f"({profile['total_s']:.2f} s profiled, sorted by own time)",
        f"{'own s':>7} {'share':>6} {'us/ev':>7} {'cum s':>7} {'calls':>9}  function",
    ]
    for r in profile["top"]:
        lines.append(
            f"{r['tottime_s']:7.3f} {r['share']:6.1%} {r['us_per_event']:7.2f} {r['cumtime_s']:7.3f} "
            f"{r['calls']:9,}  {r['function']}"
        )
    lines.append(
        "  own time by package: "
        + ", ".join(f"{p['package']} {p['share']:.0%}" for p in profile["by_package"])
    )
    return "\n".join(lines)


def phase_latency(
    report: Report,
    names: Names,
    pool: list[Record],
    rate: float,
    seconds: float,
    logs: Path,
    label: str,
    headline: bool = True,
) -> None:
    """Paced ``rate`` events/s for ``seconds`` into a fresh, caught-up worker; the latency
    histogram's delta over the paced events (those handled within the drain budget).

    The topic stamps records with the broker's append time: the histogram then starts
    when the record is in Kafka, not when this process's producer queued it (on a small
    machine the bench's own producer can lag seconds behind, which is not the worker's)."""
    create_topic(names.deal_events, configs={"message.timestamp.type": "LogAppendTime"})
    warmup, paced = pool[:500], pool[500:]
    with BenchWorker(names, logs) as w:
        w.start().wait_ready()
        # a warm-up batch proves the partitions are assigned and the worker caught up
        asyncio.run(produce_batches(names.deal_events, warmup))
        w.wait_counted(len(warmup))
        before = w.histogram("salesops_event_to_view_seconds")
        cpu0, load0 = w.cpu_seconds(), os.getloadavg()[0]
        sent, elapsed = asyncio.run(produce_paced(names.deal_events, iter(paced), rate, seconds))
        cores = (w.cpu_seconds() - cpu0) / elapsed
        t_sent = time.perf_counter()
        drain_s = max(30.0, seconds * 3)
        t_end, counted = w.wait_counted(len(warmup) + sent, budget_s=drain_s)
        after = w.histogram("salesops_event_to_view_seconds")
    handled = counted - len(warmup)
    p50, p99 = quantile(before, after, 0.5), quantile(before, after, 0.99)
    delta = {str(b): after[b] - before.get(b, 0.0) for b in sorted(after)}
    key = f"latency_{label}"
    report.details[key] = {
        "rate_target": rate,
        "rate_sent": sent / elapsed,
        "events": sent,
        "handled": handled,
        "seconds": elapsed,
        "drain_after_paced_s": t_end - t_sent,
        "worker_cores_while_paced": cores,
        "loadavg_1m": [load0, os.getloadavg()[0]],
        "p50_s": p50,
        "p99_s": p99,
        "bucket_deltas": delta,
    }
    note = f"{sent / elapsed:,.0f} ev/s for {elapsed:.0f} s, worker {cores:.2f} cores; bucket resolution"
    if handled < sent:
        note += f"; only {handled:,.0f}/{sent:,} handled {drain_s:.0f} s later (saturated)"
    report.add(Row(f"event-to-view latency p50 @ {rate:,.0f} ev/s paced", p50, "s", note=note))
    report.add(
        Row(
            f"event-to-view latency p99 @ {rate:,.0f} ev/s paced",
            p99,
            "s",
            target=f"< {TARGET_P99_S * 1000:.0f} ms",
            met=p99 is not None and p99 < TARGET_P99_S,
            note=note,
            headline=headline,
        )
    )
    log.info("latency at %.0f ev/s: p50 %s p99 %s (%d/%d handled)", rate, p50, p99, handled, sent)


def phase_memory_in_process(report: Report, created: list[Record], scratch: Path, trace_n: int) -> None:
    path = scratch / "created.pickle"
    with path.open("wb") as fh:
        pickle.dump(created, fh)
    rss = _probe(path, "rss")
    report.details["memory_in_process_rss"] = rss
    report.add(
        Row(
            "memory / open deal, in-process RSS",
            rss["bytes_per_deal"],
            "B",
            note=f"the worker's batch handler, {rss['deals']:,} open deals; "
            f"2nd half alone: {rss['marginal_bytes_per_deal']:,.0f} B/deal",
        )
    )
    if trace_n:
        with path.open("wb") as fh:
            pickle.dump(created[:trace_n], fh)
        traced = _probe(path, "trace")
        report.details["memory_in_process_tracemalloc"] = traced
        report.add(
            Row(
                "memory / open deal, tracemalloc",
                traced["bytes_per_deal"],
                "B",
                note=f"{traced['deals']:,} deals; 2nd half alone: "
                f"{traced['marginal_bytes_per_deal']:,.0f} B/deal",
            )
        )
    path.unlink()


def _probe(path: Path, mode: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "tests.bench.memory", str(path), "--mode", mode],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        raise BenchError(f"memory probe ({mode}) failed:\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _secs(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f} s"


def _until_ready(w: BenchWorker, expect: int, t0: float, budget_s: float) -> dict[str, Any]:
    """Seconds from ``t0`` (the process was started) until the web server answers, until
    ``/readyz`` is 200, and until ``/api/pipeline`` shows ``expect`` open deals."""
    http_s = ready_s = None
    deals = None
    while True:
        w.alive()
        now = time.perf_counter() - t0
        if now > budget_s:
            raise BenchError(
                f"worker not ready with {expect:,} open deals after {budget_s:.0f}s "
                f"(readyz 200 at {ready_s}, open deals {deals}); log:\n{w.proc.log_tail(30)}"
            )
        try:
            status: int | None = w.proc.get("/readyz")[0]
        except OSError:  # not listening yet, or the event loop busy past the timeout
            status = None
        if status is not None and http_s is None:
            http_s = now
        if status == 200:
            if ready_s is None:
                ready_s = now
            with contextlib.suppress(OSError, ValueError, KeyError):
                deals = w.open_deals()
            if deals is not None and deals >= expect:
                return {"http_s": http_s, "readyz_s": ready_s, "ready_s": now, "open_deals": deals}
        time.sleep(READY_POLL_S)


# Log lines that mark a restarting worker's progress: Faust's, when the changelogs are
# replayed (before the recovery callbacks), and the worker's, when its views are rebuilt.
RESTART_MARKS = {"changelog_replayed_s": "Restore complete!", "views_rebuilt_s": "deal views rebuilt"}
_LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")


def log_marks(path: Path, offset: int, started: datetime) -> dict[str, float]:
    """Seconds from ``started`` (local time, as the log's) to the first line of each of
    :data:`RESTART_MARKS` written after byte ``offset`` of the log; missing marks are left out."""
    out: dict[str, float] = {}
    with path.open("rb") as fh:
        fh.seek(offset)
        for raw in fh:
            line = raw.decode(errors="replace")
            m = _LOG_TIME.match(line)
            if not m:
                continue
            for key, text in RESTART_MARKS.items():
                if key not in out and text in line:
                    at = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f")
                    out[key] = (at - started).total_seconds()
    return out


def phase_restart(report: Report, names: Names, deals: list[Record], logs: Path, budget_s: float) -> None:
    """Open deals into a ``memory://`` worker (VmRSS per open deal), then restart-to-ready
    with each store: ``memory://`` recovers from the changelog; ``rocksdb://`` first
    without local files (a new node), then restarted from the files that run left."""
    create_topic(names.deal_events)
    n = len(deals)
    warmup = deals[:500]
    data_root = logs / "restart-data"
    try:
        with BenchWorker(
            names, logs, SALESOPS_STORE="memory://", SALESOPS_DATA_DIR=str(data_root / "load")
        ) as w:
            w.start().wait_ready()
            asyncio.run(produce_batches(names.deal_events, warmup))
            w.wait_counted(len(warmup))
            before = w.status("VmRSS")
            t_load = time.perf_counter()
            asyncio.run(produce_batches(names.deal_events, deals[len(warmup) :]))
            w.wait_counted(n, budget_s=budget_s)
            load_s = time.perf_counter() - t_load
            # the views have been published once more: what a scrape or /api then holds
            shown = _until_ready(w, n, time.perf_counter(), 120.0)
            after, hwm = w.status("VmRSS"), w.status("VmHWM")
        per_deal = (after - before) / (n - len(warmup))
        report.details["memory_worker"] = {
            "store": "memory://",
            "deals": n,
            "rss_before": before,
            "rss_after": after,
            "vm_hwm": hwm,
            "bytes_per_deal": per_deal,
            "load_s": load_s,
            "open_deals_shown": shown["open_deals"],
        }
        report.add(
            Row(
                f"worker RSS per open deal ({n:,} open deals)",
                per_deal,
                "B",
                f"< {TARGET_BYTES_PER_DEAL:,.0f} B",
                per_deal < TARGET_BYTES_PER_DEAL,
                f"memory:// tables; VmRSS {before / 2**20:,.0f} -> {after / 2**20:,.0f} MiB after "
                f"{n - len(warmup):,} CREATED events (loaded at {n / load_s:,.0f} ev/s)",
                headline=True,
            )
        )
        log.info("worker RSS %.0f B per open deal over %d deals", per_deal, n)

        runs = [
            ("memory://", "memory", f"restart to ready, {n:,} deals, memory://", True),
            ("rocksdb://", "rocksdb", f"first start, {n:,} deals, rocksdb:// without local files", False),
            ("rocksdb://", "rocksdb", f"restart to ready, {n:,} deals, rocksdb:// (local files)", True),
        ]
        results = []
        for store, directory, label, headline in runs:
            with BenchWorker(
                names, logs, SALESOPS_STORE=store, SALESOPS_DATA_DIR=str(data_root / directory)
            ) as w:
                offset = w.proc.log_path.stat().st_size if w.proc.log_path.exists() else 0
                started = datetime.now()
                t0 = time.perf_counter()
                w.start()
                r = _until_ready(w, n, t0, budget_s)
                r |= {"store": store, "label": label, "rss": w.status("VmRSS")}
            r |= log_marks(w.proc.log_path, offset, started)
            results.append(r)
            report.add(
                Row(
                    label,
                    r["ready_s"],
                    "s",
                    note=f"from process start: web up {r['http_s']:.1f} s, changelog replayed "
                    f"{_secs(r.get('changelog_replayed_s'))}, views rebuilt "
                    f"{_secs(r.get('views_rebuilt_s'))}, "
                    f"/readyz 200 {r['readyz_s']:.1f} s, /api/pipeline shows {r['open_deals']:,} open "
                    f"deals {r['ready_s']:.1f} s; VmRSS then {r['rss'] / 2**20:,.0f} MiB",
                    headline=headline,
                )
            )
            log.info("%s: ready in %.1fs", label, r["ready_s"])
        report.details["restart"] = results
    finally:
        shutil.rmtree(data_root, ignore_errors=True)


def phase_worker_profile(report: Report, names: Names, data: list[Record], logs: Path) -> None:
    """The worker under cProfile (main thread: agents, timers, web; aiokafka's consumer
    runs in its own thread and is not seen).  Slower than unprofiled: read the shares."""
    create_topic(names.deal_events)
    asyncio.run(produce_batches(names.deal_events, data))
    out = logs / f"{names.uid}.prof"
    with BenchWorker(names, logs) as w:
        w.command = [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "agents.cli", "worker"]
        w.start().wait_ready()
        w.wait_counted(len(data))
        w.stop()
    report.details["worker_profile"] = profile_rows(pstats.Stats(str(out)), len(data))


# --------------------------------------------------------------------------- main


def phase_forecast(report: Report, seed: int) -> None:
    """The forecast's Monte Carlo at the issue's size, in this process (no Kafka)."""
    from tests.bench.forecast_bench import run as run_forecast

    deals, trials = 100_000, 10_000
    seconds, peak, _result = run_forecast(deals, trials, seed, None)
    for row in forecast_rows(seconds, peak, deals, trials):
        report.add(row)


def run(args: argparse.Namespace) -> Report:
    report = Report()
    run_id = uuid4().hex[:8]
    logs = RESULTS_DIR / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    check_broker()
    t0 = time.perf_counter()
    dataset: Dataset = build_dataset(args.events, args.seed, PARTITIONS)
    data = dataset.records
    live = build_dataset(
        int(args.latency_rate * args.latency_seconds) + 1000, args.seed + 2, PARTITIONS, live=True
    )
    report.details["dataset"] = {
        "events": len(data),
        "span_days": HISTORY_DAYS,
        "deals": dataset.deals,
        "event_types": dataset.event_types,
        "mean_value_bytes": dataset.value_bytes / len(data),
        "latency_pool": {"events": len(live.records), "span_s": LIVE_MS / 1000, "deals": live.deals},
        "build_s": time.perf_counter() - t0,
        "seed": args.seed,
    }
    log.info("data set: %d events of %d deals in %.1fs", len(data), dataset.deals, time.perf_counter() - t0)

    def step(name: str, fn: Callable[[], Any]) -> Any:
        if args.only and name.split()[0] not in args.only:
            return None
        t = time.perf_counter()
        log.info("== %s", name)
        try:
            return fn()
        except BenchError as exc:
            report.errors.append(f"{name}: {exc}")
            log.error("%s failed: %s", name, exc)
            return None
        finally:
            report.details.setdefault("phase_seconds", {})[name] = round(time.perf_counter() - t, 1)

    try:
        names = new_names("tp", run_id)
        work_n = min(len(data), args.in_process_events)
        step("produce", lambda: phase_produce(report, names, data))
        step("baseline", lambda: phase_baselines(report, names, len(data), work_n))
        worker_rate = step(
            "worker",
            lambda: phase_worker(
                report, names, len(data), logs, args.worker_seconds, args.worker_runs, args.worker_warmup
            ),
        )
        step("naive", lambda: phase_naive(report, names, len(data), logs, args.naive_seconds, worker_rate))
        step("in-process", lambda: phase_in_process(report, data[:work_n], args.profile_events))
        step("forecast", lambda: phase_forecast(report, args.seed))
        step(
            "latency",
            lambda: phase_latency(
                report,
                new_names("lat", run_id),
                live.records,
                args.latency_rate,
                args.latency_seconds,
                logs,
                "target_rate",
            ),
        )
        if worker_rate and worker_rate < args.latency_rate:
            # the target rate saturates this worker: also measure where it is not queueing
            easy = round(worker_rate * 0.5, -1) or 10.0
            step(
                "latency at half capacity",
                lambda: phase_latency(
                    report,
                    new_names("lat2", run_id),
                    live.records,
                    easy,
                    args.latency_seconds,
                    logs,
                    "half_capacity",
                    headline=False,
                ),
            )
        if args.memory_deals:
            step(
                "memory in-process",
                lambda: phase_memory_in_process(
                    report,
                    created_deals(args.memory_deals, args.seed + 1, PARTITIONS),
                    logs,
                    args.trace_deals,
                ),
            )
        if args.restart_deals:
            step(
                "restart",
                lambda: phase_restart(
                    report,
                    new_names("restart", run_id),
                    created_deals(args.restart_deals, args.seed + 3, PARTITIONS),
                    logs,
                    args.restart_seconds,
                ),
            )
        if args.profile_worker:
            step(
                "profile",
                lambda: phase_worker_profile(
                    report, new_names("prof", run_id), data[: args.profile_worker], logs
                ),
            )
    finally:
        if not args.keep_topics:
            with contextlib.suppress(Exception):
                report.details["topics_deleted"] = delete_topics(run_id)
    return report


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.bench_worker",
        description="Throughput, latency, memory and restart time of the salesops worker "
        "against the local stack.",
    )
    add = parser.add_argument
    add("--events", type=int, help="events of the throughput runs (default 200000; --quick 20000)")
    add("--quick", action="store_true", help="smoke run with small sizes (~5 minutes)")
    add("--seed", type=int, default=42, help="simulator seed of the data set")
    add("--worker-seconds", type=float, help="time budget of the worker run (default 180; --quick 60)")
    add("--naive-seconds", type=float, help="time budget of the naive app run (default 120; --quick 45)")
    add("--in-process-events", type=int, default=50_000, help="events of the in-process runs")
    add("--profile-events", type=int, default=25_000, help="events of the in-process cProfile run")
    add("--latency-rate", type=float, default=2000.0, help="paced events/s of the latency run")
    add("--latency-seconds", type=float, help="length of the paced runs (default 20; --quick 5)")
    add(
        "--memory-deals",
        type=int,
        help="open deals of the in-process memory run (default 100000; --quick 20000; 0: skip)",
    )
    add(
        "--trace-deals",
        type=int,
        help="deals of the tracemalloc breakdown (default 20000; --quick 5000; 0: skip)",
    )
    add(
        "--restart-deals",
        type=int,
        help="open deals of the worker memory and restart runs (default 500000; --quick 50000; 0: skip)",
    )
    add(
        "--restart-seconds",
        type=float,
        help="time budget of loading them and of each restart (default 900; --quick 300)",
    )
    add(
        "--profile-worker",
        type=int,
        default=0,
        metavar="N",
        help="also run the worker under cProfile over N events",
    )
    add(
        "--only",
        type=lambda text: {p.strip() for p in text.split(",") if p.strip()},
        default=set(),
        metavar="PHASES",
        help="run only these phases, comma-separated: produce, baseline, worker, naive, "
        "in-process, forecast, latency, memory (in-process), restart (worker memory and restarts), "
        "profile; worker and naive need produce",
    )
    add("--worker-runs", type=int, help="end-to-end worker runs, the median reported (default 3; --quick 1)")
    add(
        "--worker-warmup",
        type=int,
        help="events of the uncounted warm-up worker run before them (default 20000; --quick 5000; 0: none)",
    )
    add("--keep-topics", action="store_true", help="keep this run's bench-* topics")
    add("--output", type=Path, default=RESULTS_DIR / "latest.json")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "events": (20_000, 200_000),
        "worker_seconds": (60.0, 180.0),
        "worker_runs": (1, 3),
        "worker_warmup": (5_000, 20_000),
        "naive_seconds": (45.0, 120.0),
        "latency_seconds": (5.0, 20.0),
        "memory_deals": (20_000, 100_000),
        "trace_deals": (5_000, 20_000),
        "restart_deals": (50_000, 500_000),
        "restart_seconds": (300.0, 900.0),
    }
    for name, (small, full) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s bench %(message)s", stream=sys.stderr)
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    logging.getLogger("kafka").setLevel(logging.ERROR)

    started = datetime.now(UTC)
    t0 = time.perf_counter()
    try:
        report = run(args)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    m = machine()
    result = {
        "started_at": started.isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - t0, 1),
        "command": " ".join(
            ["python -m tests.bench.bench_worker", *(argv if argv is not None else sys.argv[1:])]
        ),
        "machine": m,
        "kafka_bootstrap": BOOTSTRAP,
        "partitions": PARTITIONS,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "rows": [vars(r) for r in report.rows],
        "table_markdown": render(report),
        "errors": report.errors,
        "details": report.details,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(summary(result, report, args.output))
    return 1 if report.errors else 0


def summary(result: dict[str, Any], report: Report, output: Path) -> str:
    m = result["machine"]
    out = [
        f"salesops bench: {result['seconds']:.0f} s; {m['nproc']} CPUs ({m['cpu']}), "
        f"{m['mem_total_mb']:,} MB, Python {m['python']}, commit {m['git_commit']}, "
        f"load average at the end {m['loadavg']}, {m.get('broker_topics')} topics on the broker",
        "",
        render(report),
        "",
        "notes:",
        *(f"  {r.metric}: {r.note}" for r in report.rows if r.note and r.headline),
        "",
    ]
    d = report.details
    if "profile" in d:
        out += [render_profile("cProfile of the worker's batch handler, in-process", d["profile"]), ""]
    if "worker_profile" in d:
        out += [render_profile("cProfile of the worker's main thread", d["worker_profile"]), ""]
    traced = d.get("memory_in_process_tracemalloc")
    if traced:
        out.append(f"tracemalloc per open deal by allocating file (2nd half of {traced['deals']:,} deals):")
        out += [f"  {v:8,.0f} B  {k}" for k, v in traced["marginal_by_file_bytes_per_deal"].items()]
        out.append("")
    if report.errors:
        out += ["errors:", *(f"  {e}" for e in report.errors), ""]
    out.append(f"written to {output}")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
