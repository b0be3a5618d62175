"""``salesops simulate``: realistic, seeded deal lifecycles and pulse-survey waves.

The generators are pure functions of their arguments (``random.Random(seed)``, times
relative to ``start_ms``/``now_ms``), so a seed reproduces a data set exactly and tests
run without Kafka:

* :func:`generate_deals`: deals of every configured pipeline walk their stages in order
  (sometimes skipping one, sometimes regressing one), get amount and owner updates, and
  end won, lost, still open, or stalled (sitting in a stage longer than its
  ``stalled_after_days``; a ``stall_rate`` share).  A few are deleted and restored.
* :func:`generate_surveys`: a wave every 14 days, the last one sent at most
  ``LAST_WAVE_AGE_MS`` (10 days) before ``now_ms`` so the trailing 30- and 90-day eNPS
  windows hold answers; 5-8 teams of varied sizes in 2-3 departments, one of them
  smaller than the anonymity threshold of 5; ~70% respond; eNPS on 0-10 (some
  respondents on 1-10) and 3-6 pulse questions on 1-5; a few respond twice.
* :func:`deliver`: what a real feed does to the canonical stream: duplicates (same
  ``event_id``) and swaps of nearby events of the same deal (or team).

All canonical events have times <= ``now_ms``.  The CLI validates every generated record
with :mod:`streams.validation` before it writes or produces it, and creates the three
input topics first when they do not exist (configured partitions and replication).
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import json
import math
import random
import signal
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from kafka.errors import KafkaError

from agents.importer import KINDS, load_config, record_kinds, topic_for
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
from streams.events import DAY_MS
from streams.pipelines import ConfigError, Pipeline, PipelineConfig, Rates
from streams.validation import Limits, Rejection

HOUR_MS = 3_600_000
MINUTE_MS = 60_000
SOURCE = "simulator"

TEAM_REGIONS = {"emea-smb": "EMEA", "emea-ent": "EMEA", "na-smb": "NA", "na-ent": "NA", "apac": "APAC"}
OWNERS = {f"u-{i:02d}": list(TEAM_REGIONS)[(i - 1) % len(TEAM_REGIONS)] for i in range(1, 21)}
# (currency, weight) per region; every currency is in streams/default_rates.toml.
REGION_CURRENCIES = {
    "EMEA": (("EUR", 0.55), ("GBP", 0.3), ("USD", 0.15)),
    "NA": (("USD", 1.0),),
    "APAC": (("JPY", 0.6), ("USD", 0.4)),
}
USD_PER_UNIT = {"USD": 1.0, "EUR": 1.08, "GBP": 1.27, "JPY": 0.0067}
MEDIAN_DEAL_USD = {"default": 15_000.0, "enterprise": 90_000.0, "renewals": 30_000.0}
PIPELINE_WEIGHT = {"default": 0.55, "enterprise": 0.25, "renewals": 0.2}
DEFAULT_STALL_DAYS = 14.0

OPEN_SHARE = 0.3  # of the non-stalled deals, still open now
SKIP_P = 0.08
REGRESS_P = 0.06
UPDATE_P = 0.3  # an UPDATED (amount or owner change) while in a stage
DELETE_P = 0.05  # of the open deals

DEPARTMENTS = {
    "Sales": ("emea-smb", "emea-ent", "na-smb", "na-ent", "apac"),
    "Customer Success": ("cs-emea", "cs-na", "cs-apac"),
    "Engineering": ("platform", "data", "mobile"),
}
WAVE_EVERY_MS = 14 * DAY_MS
# Answers come within 7 days + 1 hour of a wave (a repeat answer up to 2 days later), so a
# wave sent 10 days ago is (nearly) complete and sits inside the 30-day eNPS window.
LAST_WAVE_AGE_MS = 10 * DAY_MS
RESPONSE_RATE = 0.7
SCALE_1_10_SHARE = 0.15
ANSWER_TWICE_P = 0.04


# --------------------------------------------------------------------------- deals


def _amount_str(value: float, currency: str) -> str:
    step = 1000 if currency == "JPY" else 10
    return str(Decimal(max(round(value / step), 1) * step).quantize(Decimal("0.01")))


def _dwell_ms(rng: random.Random, threshold_days: float) -> int:
    """Time spent in a stage by a deal that moves on: well below the stall threshold."""
    share = min(max(math.exp(rng.gauss(math.log(0.3), 0.5)), 0.05), 0.85)
    return max(int(share * threshold_days * DAY_MS), HOUR_MS)


def _threshold(pipeline: Pipeline, stage: str) -> float:
    s = pipeline.stage(stage)
    return s.stalled_after_days if s is not None and s.stalled_after_days else DEFAULT_STALL_DAYS


def _walk(rng: random.Random, pipeline: Pipeline) -> tuple[list[str], str]:
    """The open stages a deal visits, in order, and how it would end (won or lost)."""
    stages = pipeline.stages
    i, regressions = 0, 0
    path = [stages[0].id]
    while True:
        p_lost = 0.25 * (1.0 - stages[i].probability) + 0.03
        r = rng.random()
        if r < p_lost:
            return path, "lost"
        if i > 0 and regressions < 2 and r < p_lost + REGRESS_P:
            i -= 1
            regressions += 1
        elif r < p_lost + REGRESS_P + SKIP_P:
            i += 2
        else:
            i += 1
        if i >= len(stages):
            return path, "won"
        path.append(stages[i].id)


def _choose(rng: random.Random, weighted: tuple[tuple[str, float], ...]) -> str:
    return rng.choices([w[0] for w in weighted], weights=[w[1] for w in weighted])[0]


def _teams_for(pipeline_id: str) -> list[str]:
    if pipeline_id == "enterprise":
        return ["emea-ent", "na-ent", "apac"]
    if pipeline_id == "default":
        return ["emea-smb", "na-smb", "apac"]
    return list(TEAM_REGIONS)


def _one_deal(
    rng: random.Random, pipeline: Pipeline, start_ms: int, now_ms: int, stall_rate: float
) -> list[tuple[int, dict[str, Any]]]:
    """(occurred_at, partial event) of one deal, in order; ids are filled in by the caller."""
    path, outcome = _walk(rng, pipeline)
    u = rng.random()
    if u < stall_rate:
        fate = "stalled"
    elif u < stall_rate + (1 - stall_rate) * OPEN_SHARE:
        fate = "open"
    else:
        fate = outcome
    dwells = [_dwell_ms(rng, _threshold(pipeline, s)) for s in path]
    if fate in ("open", "stalled"):
        k = rng.randrange(len(path))
        path = path[: k + 1]
        age_share = rng.uniform(1.15, 2.0) if fate == "stalled" else rng.uniform(0.05, 0.8)
        entered_last = now_ms - int(age_share * _threshold(pipeline, path[-1]) * DAY_MS)
        prior = dwells[:k]
        room = entered_last - start_ms
        if sum(prior) > room > 0:  # squeeze the earlier stages into the simulated span
            prior = [max(int(d * room / sum(prior)), MINUTE_MS) for d in prior]
        created = entered_last - sum(prior)
        entries = [created + sum(prior[:i]) for i in range(len(path))]
        end = now_ms
    else:
        span = max(now_ms - start_ms, HOUR_MS)
        total = sum(dwells)
        if total > 0.9 * span:
            dwells = [max(int(d * 0.9 * span / total), MINUTE_MS) for d in dwells]
            total = sum(dwells)
        created = start_ms + int(rng.random() * max(span - total, 0))
        entries = [created + sum(dwells[:i]) for i in range(len(path))]
        end = created + total  # the close

    team = rng.choice(_teams_for(pipeline.id))
    region = TEAM_REGIONS[team]
    owners = [o for o, t in OWNERS.items() if t == team]
    owner = rng.choice(owners)
    currency = _choose(rng, REGION_CURRENCIES[region])
    usd = MEDIAN_DEAL_USD.get(pipeline.id, 20_000.0) * math.exp(rng.gauss(0.0, 0.7))
    amount = usd / USD_PER_UNIT[currency]
    expected_close = datetime.fromtimestamp((created + rng.randint(20, 90) * DAY_MS) / 1000, UTC).date()
    probability = round(rng.uniform(0.1, 0.9), 2) if rng.random() < 0.05 else None

    state: dict[str, Any] = {
        "pipeline": pipeline.id,
        "stage": path[0],
        "amount": _amount_str(amount, currency),
        "currency": currency,
        "owner_id": owner,
        "team": team,
        "region": region,
        "expected_close_date": expected_close.isoformat(),
        "probability": probability,
    }
    out: list[tuple[int, dict[str, Any]]] = []

    def emit(event_type: str, at: int, **changes: Any) -> None:
        state.update(changes)
        out.append((at, {"event_type": event_type, **state}))

    emit("CREATED", entries[0])
    for i, stage in enumerate(path):
        if i > 0:
            emit("STAGE_CHANGED", entries[i], stage=stage)
        leaves = entries[i + 1] if i + 1 < len(path) else end
        if fate == "stalled" and i == len(path) - 1:
            break  # a stalled deal sees no activity in the stage it is stuck in
        if rng.random() < UPDATE_P and leaves - entries[i] > 2 * MINUTE_MS:
            at = entries[i] + int(rng.uniform(0.2, 0.8) * (leaves - entries[i]))
            if rng.random() < 0.3 and len(owners) > 1:
                emit("UPDATED", at, owner_id=rng.choice([o for o in owners if o != state["owner_id"]]))
            else:
                amount *= rng.uniform(0.8, 1.3)
                emit("UPDATED", at, amount=_amount_str(amount, currency))
    if fate == "won":
        emit("WON", end, stage=pipeline.won_stage)
    elif fate == "lost":
        emit("LOST", end, stage=pipeline.lost_stage)
    elif fate == "open" and rng.random() < DELETE_P and now_ms - out[-1][0] > 4 * MINUTE_MS:
        deleted = out[-1][0] + int(rng.uniform(0.3, 0.6) * (now_ms - out[-1][0]))
        emit("DELETED", deleted)
        if rng.random() < 0.5:
            emit("RESTORED", deleted + int(rng.uniform(0.3, 0.9) * (now_ms - deleted)))
    # Squeezing can push a deal past now when the span is tiny: shift it back whole.
    overshoot = out[-1][0] - now_ms
    if overshoot > 0:
        out = [(t - overshoot, e) for t, e in out]
    return out


def generate_deals(
    seed: int,
    n_deals: int,
    start_ms: int,
    config: PipelineConfig,
    stall_rate: float = 0.1,
    *,
    now_ms: int | None = None,
) -> list[dict[str, Any]]:
    """Canonical deal events (DealEvent.avsc field names, JSON-able), ordered by time.

    ``occurred_at`` is epoch ms in ``[start_ms, now_ms]`` (stalled and open deals are
    placed relative to ``now_ms`` and may start earlier when the span is short);
    ``amount`` is a string with 2 decimals; ``event_id`` is ``sim-<seed>-<n>`` and
    ``deal_id`` ``D-<seed>-<n>``.  ``now_ms`` defaults to the wall clock; pass it for
    reproducible output.
    """
    if not 0.0 <= stall_rate <= 1.0:
        raise ValueError(f"stall_rate must be in 0..1, got {stall_rate}")
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    if start_ms >= now_ms:
        raise ValueError("start_ms must be before now_ms")
    rng = random.Random(seed)
    pipelines = list(config.pipelines.values())
    weights = [PIPELINE_WEIGHT.get(p.id, 0.2) for p in pipelines]
    rows: list[tuple[int, int, dict[str, Any]]] = []
    n = 0
    for d in range(1, n_deals + 1):
        pipeline = rng.choices(pipelines, weights=weights)[0]
        for at, event in _one_deal(rng, pipeline, start_ms, now_ms, stall_rate):
            n += 1
            full = {
                "event_id": f"sim-{seed}-{n}",
                "source": SOURCE,
                "deal_id": f"D-{seed}-{d}",
                "event_type": event.pop("event_type"),
                "occurred_at": at,
                **event,
            }
            rows.append((at, n, full))
    rows.sort(key=lambda r: (r[0], r[1]))
    return [r[2] for r in rows]


# --------------------------------------------------------------------------- surveys


def _teams(rng: random.Random, employees: int) -> list[tuple[str, str, int]]:
    """(team, department, headcount): 5-8 teams in 2-3 departments, one smaller than 5."""
    departments = rng.sample(sorted(DEPARTMENTS), rng.choice((2, 3)))
    pool = [(t, d) for d in departments for t in DEPARTMENTS[d]]
    chosen = [(rng.choice(DEPARTMENTS[d]), d) for d in departments]  # each department has a team
    rest = [p for p in pool if p not in chosen]
    rng.shuffle(rest)
    chosen += rest[: max(0, min(rng.randint(5, 8), len(pool)) - len(chosen))]
    if employees < len(chosen) + 2:
        raise ValueError(f"need at least {len(chosen) + 2} employees for {len(chosen)} teams")
    small = rng.randint(2, 4)
    weights = [rng.uniform(0.5, 2.0) for _ in chosen[1:]]
    remaining = employees - small
    sizes = [max(1, int(remaining * w / sum(weights))) for w in weights]
    sizes[-1] += remaining - sum(sizes)
    if sizes[-1] < 1:
        raise ValueError(f"cannot split {employees} employees into {len(chosen)} teams")
    return [(chosen[0][0], chosen[0][1], small)] + [
        (t, d, s) for (t, d), s in zip(chosen[1:], sizes, strict=True)
    ]


def _clamp(x: float, lo: int, hi: int) -> int:
    return int(min(max(round(x), lo), hi))


def first_wave_ms(waves: int, start_ms: int, now_ms: int) -> int:
    """When the first of ``waves`` waves (14 days apart) is sent: ``start_ms``, or later
    so that the last one is sent ``LAST_WAVE_AGE_MS`` before ``now_ms``."""
    return max(start_ms, now_ms - LAST_WAVE_AGE_MS - (waves - 1) * WAVE_EVERY_MS)


def generate_surveys(
    seed: int,
    waves: int,
    employees: int,
    start_ms: int,
    *,
    now_ms: int | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(responses, invitations), canonical dicts with SurveyResponse/SurveyInvitation
    field names, each ordered by time.

    Waves are sent every 14 days from :func:`first_wave_ms` on: ``start_ms``, or later
    when that is needed for the last wave to be sent ``LAST_WAVE_AGE_MS`` before
    ``now_ms`` (so 2 waves over the default 120 days are sent 24 and 10 days ago, not
    120 and 106: the trailing eNPS windows are filled).  Waves after ``now_ms`` (a short
    span) and answers not yet submitted by ``now_ms`` are left out."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    rng = random.Random(seed)
    teams = _teams(rng, employees)
    mood = {t: rng.uniform(6.5, 9.0) for t, _, _ in teams}
    declining = rng.choice(teams)[0]  # one team's eNPS drops wave after wave (an alert to see)
    people: list[tuple[str, str, str, int, float]] = []  # (id, team, department, scale_min, mood offset)
    for team, dept, size in teams:
        for _ in range(size):
            emp = "emp-" + hashlib.sha256(f"{seed}:{len(people)}".encode()).hexdigest()[:12]
            scale_min = 1 if rng.random() < SCALE_1_10_SHARE else 0
            people.append((emp, team, dept, scale_min, rng.gauss(0.0, 1.0)))

    responses: list[dict[str, Any]] = []
    invitations: list[dict[str, Any]] = []
    n = 0
    first = first_wave_ms(waves, start_ms, now_ms)
    for w in range(waves):
        sent = first + w * WAVE_EVERY_MS
        if sent > now_ms:
            break
        survey_id = "pulse-" + datetime.fromtimestamp(sent / 1000, UTC).date().isoformat()
        questions = [f"q{i}" for i in range(1, rng.randint(3, 6) + 1)]
        for team, dept, size in teams:
            invitations.append(
                {"survey_id": survey_id, "team": team, "department": dept, "invited": size, "sent_at": sent}
            )
        for emp, team, dept, scale_min, offset in people:
            if rng.random() >= RESPONSE_RATE:
                continue
            level = mood[team] + offset - (1.2 * w if team == declining else 0.0)
            at = sent + int(min(rng.expovariate(1 / 1.5), 7.0) * DAY_MS) + rng.randint(0, HOUR_MS)
            for _ in range(2 if rng.random() < ANSWER_TWICE_P else 1):
                if at > now_ms:
                    break
                n += 1
                enps = None if rng.random() < 0.04 else _clamp(rng.gauss(level, 1.3), scale_min, 10)
                responses.append(
                    {
                        "response_id": f"r-{seed}-{n}",
                        "survey_id": survey_id,
                        "submitted_at": at,
                        "respondent": emp,
                        "team": team,
                        "department": dept,
                        "enps_score": enps,
                        "enps_scale_min": scale_min,
                        "answers": [
                            {
                                "question_id": q,
                                "score": _clamp(1 + level * 0.4 + rng.gauss(0, 0.8), 1, 5),
                                "scale_max": 5,
                            }
                            for q in questions
                        ],
                    }
                )
                at += rng.randint(HOUR_MS, 2 * DAY_MS)  # the second answer comes later
    responses.sort(key=lambda r: (r["submitted_at"], r["response_id"]))
    invitations.sort(key=lambda r: (r["sent_at"], r["team"]))
    return responses, invitations


# --------------------------------------------------------------------------- delivery


def _entity_key(event: dict[str, Any]) -> Any:
    return event.get("deal_id") or event.get("team")


def deliver(
    events: list[dict[str, Any]],
    seed: int,
    duplicate_rate: float = 0.0,
    reorder_rate: float = 0.0,
    *,
    key: Callable[[dict[str, Any]], Any] = _entity_key,
    window: int = 20,
) -> list[dict[str, Any]]:
    """``events`` as an at-least-once, unordered feed delivers them.

    With probability ``reorder_rate`` an event swaps places with a later event of the same
    ``key`` (deal, else team) at most ``window`` positions ahead; with probability
    ``duplicate_rate`` a copy of an event (same ``event_id``) follows up to ``window``
    positions later.  The set of distinct events is unchanged.
    """
    rng = random.Random(seed)
    out = list(events)
    for i in range(len(out)):
        if rng.random() < reorder_rate:
            k = key(out[i])
            for j in range(i + 1, min(i + 1 + window, len(out))):
                if key(out[j]) == k:
                    out[i], out[j] = out[j], out[i]
                    break
    slots: list[tuple[float, dict[str, Any]]] = [(float(i), e) for i, e in enumerate(out)]
    for i, e in enumerate(out):
        if rng.random() < duplicate_rate:
            slots.append((i + rng.randint(1, window) + 0.5, dict(e)))
    slots.sort(key=lambda s: s[0])
    return [e for _, e in slots]


# --------------------------------------------------------------------------- CLI

KIND_TIME = {"deals": "occurred_at", "surveys": "submitted_at", "invitations": "sent_at"}
OUTPUT_FILES = {"deals": "deals.jsonl", "surveys": "surveys.jsonl", "invitations": "invitations.jsonl"}
KIND_LABEL = {"deals": "deal events", "surveys": "survey responses", "invitations": "survey invitations"}


class SimulatorBug(RuntimeError):
    """A generated record failed validation: the generator is wrong, not the input."""


class RecordEncoder:
    """Validate a generated record as the worker would, then Avro-encode it."""

    def __init__(self, config: PipelineConfig, rates: Rates, max_future_ms: int = DAY_MS) -> None:
        self.kinds = record_kinds(config, rates)
        self.max_future_ms = max_future_ms
        self.codecs = {kind: Codec.for_record(spec.schema) for kind, spec in self.kinds.items()}

    def check(self, kind: str, raw: dict[str, Any], now_ms: int) -> dict[str, Any]:
        """The Avro record of ``raw``; :class:`SimulatorBug` when it does not validate."""
        spec = self.kinds[kind]
        result = spec.validate(raw, Limits(now_ms, self.max_future_ms))
        if isinstance(result, Rejection):
            raise SimulatorBug(
                f"generated {kind} record failed validation: {result.reason}: {result.detail}: {raw}"
            )
        return spec.to_record(result)

    def encode(self, kind: str, raw: dict[str, Any], now_ms: int) -> tuple[bytes, bytes]:
        record = self.check(kind, raw, now_ms)
        key_field = self.kinds[kind].key_field
        return str(record[key_field]).encode("utf-8"), self.codecs[kind].encode(record)


def _parse_start(text: str | None, now_ms: int) -> int:
    if not text:
        return now_ms - 120 * DAY_MS
    if text.strip().lstrip("-").isdigit():
        return int(text)
    parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def _batch(
    args: argparse.Namespace, config: PipelineConfig, seed: int, start_ms: int, now_ms: int, surveys: bool
) -> dict[str, list[dict[str, Any]]]:
    """One generated data set, as delivered (duplicates, reordering), per kind."""
    canonical = {"deals": generate_deals(seed, args.deals, start_ms, config, args.stall_rate, now_ms=now_ms)}
    if surveys and args.survey_waves > 0:
        canonical["surveys"], canonical["invitations"] = generate_surveys(
            seed, args.survey_waves, args.employees, start_ms, now_ms=now_ms
        )
    return {
        kind: deliver(events, seed + i, args.duplicate_rate, args.reorder_rate)
        for i, (kind, events) in enumerate(canonical.items())
    }


def _interleave(batch: dict[str, list[dict[str, Any]]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """One stream in (roughly) event-time order, keeping each kind's delivery order."""
    streams = [[(e[KIND_TIME[kind]], kind, e) for e in events] for kind, events in batch.items()]
    for _, kind, event in heapq.merge(*streams, key=lambda row: row[0]):
        yield kind, event


def _write_files(
    batch: dict[str, list[dict[str, Any]]], encoder: RecordEncoder, out_dir: Path, now_ms: int
) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for kind, filename in OUTPUT_FILES.items():
        events = batch.get(kind, [])
        path = out_dir / filename
        with path.open("w", encoding="utf-8") as fh:
            for event in events:
                encoder.check(kind, event, now_ms)
                fh.write(json.dumps(event, separators=(",", ":")) + "\n")
        print(f"wrote {len(events):,} {KIND_LABEL[kind]} to {path}")


class _Stop:
    """Set by SIGINT/SIGTERM; a second signal kills the process the default way."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Stop:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, _frame: Any) -> None:
        self.requested = True
        signal.signal(signum, signal.SIG_DFL)

    def __exit__(self, *_exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.requested and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.1))


def _now_ms() -> int:
    return int(time.time() * 1000)


def run_simulate(args: argparse.Namespace, settings: Settings) -> int:
    for name in ("duplicate_rate", "reorder_rate", "stall_rate"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            print(f"salesops simulate: --{name.replace('_', '-')} must be in 0..1", file=sys.stderr)
            return 2
    if args.rate < 0 or args.duration < 0 or args.count < 0 or args.deals < 0:
        print("salesops simulate: --rate, --duration, --count and --deals must be >= 0", file=sys.stderr)
        return 2
    try:
        config, rates = load_config(settings)
    except ConfigError as exc:
        print(f"salesops simulate: configuration error: {exc}", file=sys.stderr)
        return 2
    now = _now_ms()
    try:
        start = _parse_start(args.start, now)
        if start >= now:
            raise ValueError("--start must be in the past")
        first = _batch(args, config, args.seed, start, now, surveys=True)
    except ValueError as exc:
        print(f"salesops simulate: {exc}", file=sys.stderr)
        return 2
    encoder = RecordEncoder(config, rates, settings.max_future_s * 1000)

    if args.output_dir:
        _write_files(first, encoder, args.output_dir, _now_ms())
        return 0

    quiet_client_logs(settings)
    topics = {kind: topic_for(kind, settings) for kind in KINDS}
    problem = prepare_tool_topics(settings, list(topics.values()), "salesops simulate")
    if problem is not None:
        print(problem, file=sys.stderr)
        return 3
    try:
        producer = make_producer(settings)
    except BrokerUnavailable as exc:
        print(f"salesops simulate: {exc}", file=sys.stderr)
        return 3
    tracker = DeliveryTracker(producer)

    def batches() -> Iterator[tuple[str, dict[str, Any]]]:
        yield from _interleave(first)
        k = 0
        while args.loop:
            # New deals with event times near now, so a dashboard's counters keep rising.
            k += 1
            at = _now_ms()
            yield from _interleave(_batch(args, config, args.seed + k, at - DAY_MS, at, surveys=False))

    sent = {kind: 0 for kind in topics}
    total = 0
    failure: str | None = None
    t0 = time.monotonic()
    last_progress = t0
    with _Stop() as stop:
        try:
            for kind, event in batches():
                if stop.requested or (args.count and total >= args.count):
                    break
                elapsed = time.monotonic() - t0
                if args.duration and elapsed >= args.duration:
                    break
                if args.rate:
                    stop.sleep(t0 + total / args.rate - time.monotonic())
                    if stop.requested:
                        break
                key, value = encoder.encode(kind, event, _now_ms())
                tracker.send(topics[kind], key, value)
                sent[kind] += 1
                total += 1
                if time.monotonic() - last_progress >= 5.0:
                    last_progress = time.monotonic()
                    rate = total / (last_progress - t0)
                    print(f"simulate: sent {total:,} events ({rate:,.1f}/s)", file=sys.stderr, flush=True)
            tracker.flush()
        except (DeliveryError, KafkaError) as exc:
            failure = describe_error(exc)
        finally:
            tracker.close()
    elapsed = time.monotonic() - t0
    summary = (
        f"sent {total:,} events (deals {sent['deals']:,}, responses {sent['surveys']:,}, "
        f"invitations {sent['invitations']:,}) in {elapsed:.1f} s"
    )
    if failure is not None:
        print(
            f"salesops simulate: producing to Kafka at {settings.kafka_bootstrap} failed: {failure}",
            file=sys.stderr,
        )
        print(summary)
        return 3
    print(summary)
    return 0
