"""The importer's core: lines in, (key, value) records and rejections out; no Kafka."""

from __future__ import annotations

import argparse
import io
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from kafka.errors import KafkaTimeoutError

from agents import importer
from agents.importer import ImportReport, ProgressBar, import_lines
from agents.kafka_io import DeliveryError, describe_error
from agents.settings import Settings
from schemas.codec import Codec
from streams.pipelines import load_pipelines, load_rates

NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z
CONFIG = load_pipelines()
RATES = load_rates()


def deal(**changes: Any) -> dict[str, Any]:
    base = {
        "event_id": "e-1",
        "source": "import",
        "deal_id": "D-1",
        "event_type": "CREATED",
        "occurred_at": "2025-12-01T09:30:00Z",
        "pipeline": "default",
        "stage": "appointmentscheduled",
        "amount": "1200.5",
        "currency": "eur",
        "owner_id": "u-01",
        "team": "emea-smb",
        "region": "EMEA",
    }
    base.update(changes)
    return base


def response(**changes: Any) -> dict[str, Any]:
    base = {
        "response_id": "r-1",
        "survey_id": "pulse-2025-12-01",
        "submitted_at": 1_764_579_600_000,
        "respondent": "emp-1",
        "team": "apac",
        "department": "Sales",
        "enps_score": 9,
        "enps_scale_min": 0,
        "answers": [{"question_id": "q1", "score": 4, "scale_max": 5}],
    }
    base.update(changes)
    return base


def run(
    lines: list[str], kind: str = "deals", fmt: str = "jsonl"
) -> tuple[ImportReport, list[tuple[bytes, bytes]]]:
    sent: list[tuple[bytes, bytes]] = []
    report = import_lines(lines, kind, CONFIG, RATES, NOW, lambda k, v: sent.append((k, v)), fmt=fmt)
    return report, sent


def reasons(report: ImportReport) -> list[str]:
    return [reason for _, reason, _ in report.rejected]


def test_valid_deal_is_normalised_and_keyed_by_deal_id() -> None:
    report, sent = run([json.dumps(deal())])
    assert report.produced == 1 and report.rejected == []
    key, value = sent[0]
    assert key == b"D-1"
    record = Codec.for_record("DealEvent").decode(value)
    # upper-case currency, scale-2 amount, ISO time -> timestamp-millis
    assert record["currency"] == "EUR"
    assert record["amount"] == Decimal("1200.50")
    assert int(record["occurred_at"].timestamp() * 1000) == 1_764_581_400_000


@pytest.mark.parametrize(
    ("line", "kind", "reason"),
    [
        ('{"event_id": "e-1", ', "deals", "invalid_json"),
        ("[1, 2, 3]", "deals", "invalid_json"),
        (json.dumps({k: v for k, v in deal().items() if k != "deal_id"}), "deals", "missing_field"),
        (json.dumps(deal(event_type="MERGED")), "deals", "invalid_enum"),
        (json.dumps(deal(amount=-5)), "deals", "negative_amount"),
        (json.dumps(deal(currency="EURO")), "deals", "invalid_currency"),
        (json.dumps(deal(occurred_at=NOW + 3 * 86_400_000)), "deals", "future_timestamp"),
        (
            json.dumps(
                response(answers=[{"question_id": f"q{i}", "score": 3, "scale_max": 5} for i in range(11)])
            ),
            "surveys",
            "too_many_questions",
        ),
        (json.dumps(response(enps_score=11)), "surveys", "score_out_of_range"),
        (
            json.dumps(response(answers=[{"question_id": "q1", "score": 6, "scale_max": 5}])),
            "surveys",
            "score_out_of_range",
        ),
        (
            json.dumps({"survey_id": "s", "team": "apac", "invited": -1, "sent_at": NOW}),
            "invitations",
            "negative_count",
        ),
    ],
)
def test_every_rejection_reason_is_reachable_from_a_line(line: str, kind: str, reason: str) -> None:
    report, sent = run([line], kind)
    assert sent == []
    assert report.produced == 0
    assert [(n, r) for n, r, _ in report.rejected] == [(1, reason)]


def test_997_of_1000_lines_are_produced_and_the_3_bad_lines_are_named() -> None:
    lines = [json.dumps(deal(event_id=f"e-{i}", deal_id=f"D-{i}")) for i in range(1, 1001)]
    lines[9] = '{"broken": '  # line 10
    lines[499] = json.dumps(deal(event_id="e-500", amount="-1"))  # line 500
    lines[899] = json.dumps(deal(event_id="e-900", currency="XYZ"))  # line 900
    report, sent = run(lines)
    assert report.produced == 997 == len(sent)
    assert [(n, r) for n, r, _ in report.rejected] == [
        (10, "invalid_json"),
        (500, "negative_amount"),
        (900, "invalid_currency"),
    ]
    assert {k for k, _ in sent} == {f"D-{i}".encode() for i in range(1, 1001)} - {b"D-10", b"D-500", b"D-900"}


def test_blank_lines_and_a_byte_order_mark_are_not_rejections() -> None:
    report, _ = run(["\ufeff" + json.dumps(deal()), "", "   ", json.dumps(deal(event_id="e-2"))])
    assert report.produced == 2 and report.rejected == []


def test_non_utf8_line_is_rejected_alone() -> None:
    bad = b'{"deal_id": "\xff"}'.decode("utf-8", errors="surrogateescape")
    report, _ = run([json.dumps(deal()), bad, json.dumps(deal(event_id="e-2"))])
    assert report.produced == 2
    assert [(n, r) for n, r, _ in report.rejected] == [(2, "invalid_encoding")]


def test_csv_deals_with_empty_optional_cells() -> None:
    lines = [
        "event_id,source,deal_id,event_type,occurred_at,pipeline,stage,amount,currency,owner_id,probability\n",
        "e-1,import,D-1,CREATED,1764579600000,default,appointmentscheduled,100,USD,,\n",
        'e-2,import,D-2,WON,2025-12-01,enterprise,won,"2,000",USD,u-02,0.5\n',  # "2,000" is not a number
        "e-3,import,D-3,LOST,2025-12-01T10:00:00+01:00,enterprise,lost,0,GBP,u-02,1.5\n",
        "e-4,import,D-4\n",
    ]
    report, sent = run(lines, fmt="csv")
    assert report.produced == 1
    assert [(n, r) for n, r, _ in report.rejected] == [
        (3, "invalid_type"),
        (4, "invalid_probability"),
        (5, "invalid_csv"),
    ]
    record = Codec.for_record("DealEvent").decode(sent[0][1])
    assert record["owner_id"] is None and record["probability"] is None


def test_csv_surveys_fold_question_columns_into_answers() -> None:
    lines = [
        "response_id,survey_id,submitted_at,respondent,team,department,enps_score,enps_scale_min,scale_max,q_q1,q_q2\n",
        "r-1,pulse-1,1764579600000,emp-1,apac,Sales,9,0,5,4,\n",  # q2 not answered
        "r-2,pulse-1,1764579600000,emp-2,apac,Sales,1,1,5,5,2\n",
        "r-3,pulse-1,1764579600000,emp-3,apac,Sales,7,0,5,6,2\n",  # q1 score 6 on a 1-5 scale
        "r-4,pulse-1,1764579600000,emp-4,apac,Sales,0,1,5,3,3\n",  # 0 on a 1-10 eNPS scale
    ]
    report, sent = run(lines, "surveys", "csv")
    assert report.produced == 2
    assert [(n, r) for n, r, _ in report.rejected] == [(4, "score_out_of_range"), (5, "score_out_of_range")]
    codec = Codec.for_record("SurveyResponse")
    first, second = (codec.decode(v) for _, v in sent)
    assert sent[0][0] == b"apac"
    assert first["answers"] == [{"question_id": "q1", "score": 4, "scale_max": 5}]
    assert second["enps_scale_min"] == 1
    assert [a["question_id"] for a in second["answers"]] == ["q1", "q2"]


def test_csv_with_more_than_ten_question_columns_answered() -> None:
    questions = [f"q_q{i}" for i in range(1, 12)]
    lines = [
        "response_id,survey_id,submitted_at,respondent,team,scale_max," + ",".join(questions) + "\n",
        "r-1,pulse-1,1764579600000,emp-1,apac,5," + ",".join(["3"] * 11) + "\n",
        "r-2,pulse-1,1764579600000,emp-2,apac,5," + ",".join(["3"] * 10) + ",\n",
    ]
    report, _ = run(lines, "surveys", "csv")
    assert report.produced == 1
    assert reasons(report) == ["too_many_questions"]


def test_csv_quoted_newline_reports_the_line_where_the_record_starts() -> None:
    lines = [
        "survey_id,team,department,invited,sent_at\n",
        'pulse-1,apac,"Sales\n',
        'and Marketing",12,1764579600000\n',
        "pulse-1,na-smb,Sales,-3,1764579600000\n",
    ]
    report, sent = run(lines, "invitations", "csv")
    assert report.produced == 1 and sent[0][0] == b"apac"
    assert report.rejected[0][:2] == (4, "negative_count")


def test_invitation_key_is_the_team() -> None:
    line = json.dumps({"survey_id": "s", "team": "émea", "invited": 3, "sent_at": "2025-12-01T00:00:00Z"})
    _, sent = run([line], "invitations")
    assert sent[0][0] == "émea".encode()


def test_send_failure_propagates() -> None:
    def broken(_key: bytes, _value: bytes) -> None:
        raise RuntimeError("producer closed")

    with pytest.raises(RuntimeError, match="producer closed"):
        import_lines([json.dumps(deal())], "deals", CONFIG, RATES, NOW, broken)


def test_progress_bar_is_throttled_and_redraws_in_place() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    bar = ProgressBar(1000, out, min_interval_s=3600)
    for i in range(1, 1001):
        bar.update(i)
    bar.close(1000)
    text = out.getvalue()
    assert text.count("\r") == 2  # the first draw and the final one, nothing in between
    assert "100% 1,000/1,000 lines" in text


def test_run_import_reports_bad_lines_without_a_broker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[tuple[str, bytes, bytes]] = []

    class FakeTracker:
        delivered = 0

        def __init__(self, _producer: object) -> None:
            pass

        def send(self, topic: str, key: bytes, value: bytes) -> None:
            sent.append((topic, key, value))

        def flush(self) -> None:
            pass

        def close(self) -> None:
            pass

    ensured: list[list[str]] = []
    monkeypatch.setattr(importer, "prepare_tool_topics", lambda _s, names, _tool: ensured.append(names))
    monkeypatch.setattr(importer, "make_producer", lambda _settings: object())
    monkeypatch.setattr(importer, "DeliveryTracker", FakeTracker)
    path = tmp_path / "deals.jsonl"
    path.write_text(json.dumps(deal()) + "\n" + "nope\n" + json.dumps(deal(amount=-1)) + "\n")
    args = argparse.Namespace(
        kind="deals", file=path, format=None, skip_invalid=False, topic=None, no_progress=True
    )
    assert importer.run_import(args, Settings()) == 1
    captured = capsys.readouterr()
    assert f"{path}:2: invalid_json:" in captured.err
    assert f"{path}:3: negative_amount:" in captured.err
    assert captured.out.strip() == f"produced 1, rejected 2 ({path})"
    assert [t for t, _, _ in sent] == ["crm.deal-events"]
    assert ensured == [["crm.deal-events"]]
    args.skip_invalid = True
    assert importer.run_import(args, Settings()) == 0


def test_run_import_refuses_an_unknown_extension(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "deals.txt"
    path.write_text("{}\n")
    args = argparse.Namespace(
        kind="deals", file=path, format=None, skip_invalid=False, topic=None, no_progress=True
    )
    assert importer.run_import(args, Settings()) == 2
    assert "--format" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", [None, "jsonl"])
def test_run_import_of_a_directory_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str | None
) -> None:
    folder = tmp_path / "export.jsonl"
    folder.mkdir()
    (folder / "deals.jsonl").write_text(json.dumps(deal()) + "\n")
    args = argparse.Namespace(
        kind="deals", file=folder, format=fmt, skip_invalid=False, topic=None, no_progress=True
    )
    assert importer.run_import(args, Settings()) == 2
    assert capsys.readouterr().err.strip() == (
        f"salesops import: {folder} is a directory; give a .jsonl or .csv file"
    )


def test_run_import_stops_before_producing_when_its_topic_cannot_be_made(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_producer(_settings: Settings) -> None:
        raise AssertionError("the producer must not be created")

    monkeypatch.setattr(importer, "prepare_tool_topics", lambda _s, names, tool: f"{tool}: cannot {names}")
    monkeypatch.setattr(importer, "make_producer", no_producer)
    path = tmp_path / "deals.jsonl"
    path.write_text(json.dumps(deal()) + "\n")
    args = argparse.Namespace(
        kind="deals", file=path, format=None, skip_invalid=False, topic="my-deals", no_progress=True
    )
    assert importer.run_import(args, Settings()) == 3
    assert capsys.readouterr().err.strip() == "salesops import: cannot ['my-deals']"


def test_kafka_errors_are_described_once_and_delivery_errors_as_they_are() -> None:
    assert describe_error(KafkaTimeoutError("no metadata")) == "KafkaTimeoutError: no metadata"
    assert describe_error(ValueError()) == "ValueError"
    assert describe_error(DeliveryError("3 of 10 records were not acknowledged")) == (
        "3 of 10 records were not acknowledged"
    )
