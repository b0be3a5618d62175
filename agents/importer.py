"""``salesops import deals|surveys|invitations FILE``: validate a file and produce it.

Input formats (``--format``, default from the extension: ``.csv`` is CSV, ``.jsonl``,
``.ndjson`` and ``.json`` are JSON Lines):

* **JSON Lines**: one canonical event per line, field names as in the ``.avsc``
  (``schemas/``); timestamps ISO-8601 or epoch milliseconds, amounts numbers or strings,
  ``answers`` a list of ``{"question_id", "score", "scale_max"}``.  Blank lines are skipped.
* **CSV** with a header row naming the same fields; empty cells are absent values.
  Survey answers are spreadsheet columns, one per question: ``q_<question_id>`` holds the
  score (empty = not answered) and a single ``scale_max`` column gives the scale of every
  question of that row, e.g. ``response_id,...,enps_score,enps_scale_min,scale_max,q_q1,q_q2``.
  eNPS uses the columns ``enps_score`` and ``enps_scale_min``.

Every record is checked with :mod:`streams.validation` (the worker's checks, so a line
the importer accepts is one the worker accepts).  A rejected line is reported as
``FILE:LINE: reason: detail`` on stderr and skipped; the importer's own reasons are
``invalid_json`` (not a JSON object), ``invalid_csv`` (wrong number of cells) and
``invalid_encoding`` (not UTF-8).  What goes to Kafka is the *validated* record, Avro
single-object encoded, so it is normalised (upper-case currency, amount with scale 2,
epoch-ms timestamps).  Keys: ``deal_id`` for deals, ``team`` for surveys and invitations.

The target topic is created first when it does not exist (configured partitions and
replication, :func:`agents.topics.ensure_input_topics`), so a fresh broker without topic
auto-creation works.  ``FILE`` must be a file: a directory is a usage error (its files
may hold different kinds; import them one by one).

Exit status: 0 all produced (or ``--skip-invalid``), 1 lines were rejected, 2 usage or
configuration error (a missing file, a directory), 3 Kafka unreachable, the topic missing
and not creatable, or a record not acknowledged.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from kafka.errors import KafkaError

from agents.kafka_io import (
    BrokerUnavailable,
    DeliveryError,
    DeliveryTracker,
    describe_error,
    make_producer,
    quiet_client_logs,
)
from agents.settings import Settings
from agents.topics import prepare_tool_topics
from schemas.codec import Codec
from streams.pipelines import (
    DEFAULT_PIPELINES_FILE,
    DEFAULT_RATES_FILE,
    ConfigError,
    PipelineConfig,
    Rates,
    load_pipelines,
    load_rates,
)
from streams.validation import (
    Limits,
    Rejection,
    deal_to_record,
    invitation_to_record,
    response_to_record,
    validate_deal,
    validate_invitation,
    validate_response,
)

KINDS = ("deals", "surveys", "invitations")
FORMATS = ("jsonl", "csv")
ANSWER_PREFIX = "q_"
PROGRESS_MIN_LINES = 10_000

Send = Callable[[bytes, bytes], None]


@dataclass
class ImportReport:
    produced: int = 0
    rejected: list[tuple[int, str, str]] = field(default_factory=list)  # (line_no, reason, detail)


@dataclass(frozen=True)
class RecordKind:
    """One input kind as every producer of it (importer, simulator) must treat it: the
    Avro record, the field that is the Kafka key, the worker's validation and the record
    built from the validated event."""

    schema: str
    key_field: str
    validate: Callable[[Mapping[str, Any], Limits], Any]
    to_record: Callable[[Any], dict[str, Any]]


def record_kinds(config: PipelineConfig, rates: Rates) -> dict[str, RecordKind]:
    """The :class:`RecordKind` of each of :data:`KINDS`."""
    return {
        "deals": RecordKind(
            "DealEvent", "deal_id", lambda r, lim: validate_deal(r, config, rates, lim), deal_to_record
        ),
        "surveys": RecordKind("SurveyResponse", "team", validate_response, response_to_record),
        "invitations": RecordKind("SurveyInvitation", "team", validate_invitation, invitation_to_record),
    }


def _utf8_ok(text: str) -> bool:
    # Lines are decoded with surrogateescape so one bad byte sequence rejects one line,
    # not the whole file; the escaped bytes show up as lone surrogates here.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json_records(lines: Iterable[str]) -> Iterator[tuple[int, Mapping[str, Any] | Rejection]]:
    for line_no, line in enumerate(lines, start=1):
        if line_no == 1:
            line = line.removeprefix("\ufeff")
        if not line.strip():
            continue
        if not _utf8_ok(line):
            yield line_no, Rejection("invalid_encoding", "line is not valid UTF-8")
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            yield line_no, Rejection("invalid_json", f"{exc.msg} at column {exc.colno}")
            continue
        if not isinstance(raw, dict):
            yield line_no, Rejection("invalid_json", f"expected a JSON object, got {type(raw).__name__}")
            continue
        yield line_no, raw


def _csv_answers(row: dict[str, Any]) -> None:
    """Fold ``q_<id>`` columns and ``scale_max`` into the canonical ``answers`` list."""
    scale_max = row.pop("scale_max", None)
    answers = []
    for column in [c for c in row if c and c.startswith(ANSWER_PREFIX)]:
        score = row.pop(column)
        if score is None or score.strip() == "":
            continue
        answers.append(
            {"question_id": column[len(ANSWER_PREFIX) :], "score": score.strip(), "scale_max": scale_max}
        )
    row["answers"] = answers


def _csv_records(lines: Iterable[str], kind: str) -> Iterator[tuple[int, Mapping[str, Any] | Rejection]]:
    first = True

    def strip_bom(it: Iterable[str]) -> Iterator[str]:
        nonlocal first
        for line in it:
            if first:
                line = line.removeprefix("\ufeff")
                first = False
            yield line

    reader = csv.reader(strip_bom(lines))
    header: list[str] | None = None
    line_no = 0  # physical line where the current record starts
    for cells in reader:
        start, line_no = line_no + 1, reader.line_num
        if not cells or all(c.strip() == "" for c in cells):
            continue
        if header is None:
            header = [c.strip() for c in cells]
            continue
        if not all(_utf8_ok(c) for c in cells):
            yield start, Rejection("invalid_encoding", "line is not valid UTF-8")
            continue
        if len(cells) != len(header):
            yield start, Rejection("invalid_csv", f"{len(cells)} cells, the header has {len(header)}")
            continue
        row: dict[str, Any] = {
            h: (None if c.strip() == "" else c.strip()) for h, c in zip(header, cells, strict=True)
        }
        if kind == "surveys":
            _csv_answers(row)
        yield start, row


def import_lines(
    lines: Iterable[str],
    kind: str,
    config: PipelineConfig,
    rates: Rates,
    now_ms: int,
    send: Send,
    *,
    fmt: str = "jsonl",
    max_future_ms: int | None = None,
    on_record: Callable[[int, Rejection | None], None] | None = None,
) -> ImportReport:
    """Validate ``lines`` (JSON Lines or CSV) and ``send(key, value)`` each valid record.

    ``on_record(line_no, rejection_or_None)`` is called after each record, for progress
    and for reporting rejections as they happen.  Exceptions raised by ``send`` (a broken
    producer) propagate; bad input never raises.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    limits = Limits(now_ms) if max_future_ms is None else Limits(now_ms, max_future_ms)
    spec = record_kinds(config, rates)[kind]
    codec = Codec.for_record(spec.schema)
    report = ImportReport()
    records = _json_records(lines) if fmt == "jsonl" else _csv_records(lines, kind)
    for line_no, raw in records:
        result = raw if isinstance(raw, Rejection) else spec.validate(raw, limits)
        if not isinstance(result, Rejection):
            record = spec.to_record(result)
            try:
                value = codec.encode(record)
            except (ValueError, TypeError, OverflowError) as exc:  # validation should make this unreachable
                result = Rejection("invalid_type", f"cannot Avro-encode: {exc}")
            else:
                send(str(record[spec.key_field]).encode("utf-8"), value)
                report.produced += 1
        if isinstance(result, Rejection):
            report.rejected.append((line_no, result.reason, result.detail))
        if on_record is not None:
            on_record(line_no, result if isinstance(result, Rejection) else None)
    return report


class ProgressBar:
    """A one-line progress bar on a stream, redrawn at most ``1 / min_interval_s`` per second.

    On a terminal it redraws in place (``\\r``); otherwise (a log file) it writes a plain
    line at most every ``log_interval_s``.
    """

    def __init__(self, total: int, stream: TextIO, min_interval_s: float = 0.2, log_interval_s: float = 5.0):
        self.total = max(total, 1)
        self.stream = stream
        self.tty = stream.isatty()
        self.interval = min_interval_s if self.tty else log_interval_s
        self.started = time.monotonic()
        self._last = float("-inf")
        self._drawn = False

    def update(self, done: int, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        frac = min(done / self.total, 1.0)
        elapsed = now - self.started
        text = f"{frac:4.0%} {done:,}/{self.total:,} lines"
        if elapsed >= 0.5:  # a rate over a few milliseconds is noise
            text += f" {done / elapsed:,.0f}/s"
        if self.tty:
            width = 30
            filled = int(frac * width)
            self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {text}\x1b[K")
            self._drawn = True
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def clear(self) -> None:
        """Erase the bar so a message can be printed on a clean line."""
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self._drawn = False

    def close(self, done: int) -> None:
        self.update(done, force=True)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _format_of(path: Path, explicit: str | None) -> str | None:
    if explicit:
        return explicit
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    return None


def _count_lines(path: Path) -> int:
    n = 0
    last = b"\n"
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (last != b"\n")


def load_config(settings: Settings) -> tuple[PipelineConfig, Rates]:
    """The pipelines and rates of ``settings`` (built-in defaults when unset); ConfigError."""
    return (
        load_pipelines(settings.pipelines_file or DEFAULT_PIPELINES_FILE),
        load_rates(settings.rates_file or DEFAULT_RATES_FILE),
    )


def topic_for(kind: str, settings: Settings) -> str:
    """The input topic of one of :data:`KINDS`."""
    return {
        "deals": settings.deal_events_topic,
        "surveys": settings.responses_topic,
        "invitations": settings.invitations_topic,
    }[kind]


def run_import(args: argparse.Namespace, settings: Settings) -> int:
    path: Path = args.file
    if path.is_dir():
        print(f"salesops import: {path} is a directory; give a .jsonl or .csv file", file=sys.stderr)
        return 2
    fmt = _format_of(path, args.format)
    if fmt is None:
        print(
            f"salesops import: cannot tell the format of {path} from its extension; pass --format",
            file=sys.stderr,
        )
        return 2
    if not path.is_file():
        print(f"salesops import: {path}: no such file", file=sys.stderr)
        return 2
    try:
        config, rates = load_config(settings)
    except ConfigError as exc:
        print(f"salesops import: configuration error: {exc}", file=sys.stderr)
        return 2
    topic = args.topic or topic_for(args.kind, settings)

    quiet_client_logs(settings)
    problem = prepare_tool_topics(settings, [topic], "salesops import")
    if problem is not None:
        print(problem, file=sys.stderr)
        return 3
    try:
        producer = make_producer(settings)
    except BrokerUnavailable as exc:
        print(f"salesops import: {exc}", file=sys.stderr)
        return 3
    tracker = DeliveryTracker(producer)

    total = _count_lines(path)
    show_progress = not args.no_progress and (sys.stderr.isatty() or total > PROGRESS_MIN_LINES)
    bar = ProgressBar(total, sys.stderr) if show_progress else None

    rejected = 0

    def on_record(line_no: int, rejection: Rejection | None) -> None:
        nonlocal rejected
        if rejection is not None:
            rejected += 1
            if bar:
                bar.clear()
            print(f"{path}:{line_no}: {rejection.reason}: {rejection.detail}", file=sys.stderr)
        if bar:
            bar.update(line_no)

    report = ImportReport()
    failure: str | None = None
    try:
        # surrogateescape: an undecodable byte rejects its line, not the whole file.
        with path.open(encoding="utf-8", errors="surrogateescape", newline="") as fh:
            report = import_lines(
                fh,
                args.kind,
                config,
                rates,
                int(time.time() * 1000),
                lambda key, value: tracker.send(topic, key, value),
                fmt=fmt,
                max_future_ms=settings.max_future_s * 1000,
                on_record=on_record,
            )
        if bar:
            bar.close(total)
        tracker.flush()
    except (DeliveryError, KafkaError) as exc:
        if bar:
            bar.clear()
        failure = describe_error(exc)
    finally:
        tracker.close()

    if failure is not None:
        print(
            f"salesops import: producing to {topic} at {settings.kafka_bootstrap} failed: {failure}",
            file=sys.stderr,
        )
        print(f"produced {tracker.delivered}, rejected {rejected} ({path})")
        return 3
    print(f"produced {report.produced}, rejected {len(report.rejected)} ({path})")
    if report.rejected and not args.skip_invalid:
        return 1
    return 0
