"""The topics salesops uses, and ``salesops topics`` which creates (or lists) them.

Inputs and the dead-letter/alerts topics keep every record for the retention time
(``cleanup.policy=delete``); aggregate topics are keyed by a dimension and only the
latest value per key matters, so they are compacted, as is the internal ``partials``
topic the global merge reads (docs/design.md, principle 4).  Creation is idempotent; an
existing topic with fewer partitions than configured is reported, never altered (adding
partitions moves keys between partitions, an operator's decision).
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field

from kafka import KafkaAdminClient
from kafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from agents.kafka_io import BrokerUnavailable, describe_error, make_admin, quiet_client_logs
from agents.settings import Settings

log = logging.getLogger(__name__)

AGGREGATE_VIEWS = (
    "pipeline",
    "funnel",
    "stage-aging",
    "movement",
    "enps",
    "pulse",
    "forecast",
    "attainment",
    "commission",
)
INTERNAL_VIEWS = ("partials", "stall-checks")


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication: int
    configs: dict[str, str] = field(default_factory=dict)

    @property
    def cleanup_policy(self) -> str:
        return self.configs.get("cleanup.policy", "delete")


@dataclass(frozen=True)
class TopicStatus:
    spec: TopicSpec
    state: str  # created | exists | missing
    partitions: int | None = None  # what the broker has, when the topic exists
    warning: str | None = None


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic salesops reads or writes, with its partitions and cleanup policy."""
    n, r = settings.topic_partitions, settings.topic_replication
    delete = {"cleanup.policy": "delete"}
    compact = {"cleanup.policy": "compact"}
    specs = [
        TopicSpec(t, n, r, dict(delete))
        for t in (
            settings.deal_events_topic,
            settings.responses_topic,
            settings.invitations_topic,
            settings.dead_letter_topic,
            settings.alerts_topic,
        )
    ]
    specs += [TopicSpec(settings.topic(v), n, r, dict(compact)) for v in AGGREGATE_VIEWS + INTERNAL_VIEWS]
    return specs


def _existing_partitions(admin: KafkaAdminClient, names: list[str]) -> dict[str, int]:
    """Partition count of each named topic that exists."""
    existing = set(admin.list_topics())
    wanted = [n for n in names if n in existing]
    if not wanted:
        return {}
    out: dict[str, int] = {}
    for info in admin.describe_topics(wanted):
        name = info.get("name") or info.get("topic")  # kafka-python 3.x / 2.x key
        if name in existing and not info.get("error_code"):
            out[name] = len(info.get("partitions") or [])
    return out


def _check(spec: TopicSpec, partitions: int) -> str | None:
    if partitions < spec.partitions:
        return (
            f"topic {spec.name} has {partitions} partitions, {spec.partitions} configured "
            "(SALESOPS_TOPIC_PARTITIONS): the worker can use at most "
            f"{partitions} instances; add partitions with kafka-topics.sh --alter if intended"
        )
    return None


def ensure_specs(admin: KafkaAdminClient, specs: list[TopicSpec]) -> list[TopicStatus]:
    """Create the missing topics of ``specs``; report the existing ones."""
    have = _existing_partitions(admin, [s.name for s in specs])
    statuses: dict[str, TopicStatus] = {}
    missing = [s for s in specs if s.name not in have]
    for s in specs:
        if s.name in have:
            warning = _check(s, have[s.name])
            if warning:
                log.warning(
                    "topic_partitions_below_configured topic=%s partitions=%d configured=%d",
                    s.name,
                    have[s.name],
                    s.partitions,
                )
            statuses[s.name] = TopicStatus(s, "exists", have[s.name], warning)
    if missing:
        request = {
            s.name: {
                "num_partitions": s.partitions,
                "replication_factor": s.replication,
                "configs": s.configs,
            }
            for s in missing
        }
        result = admin.create_topics(request, raise_errors=False)
        outcome = {t["name"]: t for t in result.get("topics", [])}
        created = []
        for s in missing:
            code = outcome.get(s.name, {}).get("error_code", 0)
            if code == 0:
                created.append(s.name)
                log.info(
                    "topic_created topic=%s partitions=%d policy=%s", s.name, s.partitions, s.cleanup_policy
                )
                statuses[s.name] = TopicStatus(s, "created", s.partitions)
            elif for_code(code) is TopicAlreadyExistsError:  # created concurrently by someone else
                statuses[s.name] = TopicStatus(s, "exists")
            else:
                message = outcome[s.name].get("error_message") or ""
                raise KafkaError(
                    f"cannot create topic {s.name}: {for_code(code).__name__} {message}".rstrip()
                )
        if created and hasattr(admin, "wait_for_topics"):
            # The create response only means "accepted"; producers right after need leaders.
            admin.wait_for_topics(created, timeout_ms=15_000)
    return [statuses[s.name] for s in specs]


def ensure_topics(settings: Settings) -> list[str]:
    """Create (idempotently) every topic salesops uses; return their names.

    Raises :class:`~agents.kafka_io.BrokerUnavailable` when no broker answers.
    """
    admin = make_admin(settings)
    try:
        return [st.spec.name for st in ensure_specs(admin, topic_specs(settings))]
    finally:
        admin.close()


def ensure_input_topics(settings: Settings, names: list[str]) -> list[TopicStatus]:
    """Create (idempotently) the input topics a command line tool is about to write to.

    ``salesops import`` and ``salesops simulate`` call it before producing: a broker that
    does not auto-create topics would otherwise leave the producer waiting for metadata
    that never comes.  New topics get the configured partitions and replication and
    ``cleanup.policy=delete``, like the worker's inputs.  Raises
    :class:`~agents.kafka_io.BrokerUnavailable` when no broker answers and ``KafkaError``
    naming the topic when one cannot be created.
    """
    n, r = settings.topic_partitions, settings.topic_replication
    specs = [TopicSpec(name, n, r, {"cleanup.policy": "delete"}) for name in dict.fromkeys(names)]
    admin = make_admin(settings)
    try:
        return ensure_specs(admin, specs)
    finally:
        admin.close()


def prepare_tool_topics(settings: Settings, names: list[str], tool: str) -> str | None:
    """:func:`ensure_input_topics` for a command line tool: ``None`` when the topics are
    there (a created topic and a partition warning are reported on stderr), else the
    one-line reason to print before exiting with status 3."""
    try:
        statuses = ensure_input_topics(settings, names)
    except BrokerUnavailable as exc:
        return f"{tool}: {exc}"
    except KafkaError as exc:
        what = f"topic {names[0]}" if len(names) == 1 else f"topics {', '.join(names)}"
        return (
            f"{tool}: cannot make sure {what} exists at {settings.kafka_bootstrap}: "
            f"{describe_error(exc)}; create it beforehand (`salesops topics` creates the configured "
            "topics; it needs the right to create topics) or fix SALESOPS_TOPIC_REPLICATION"
        )
    for st in statuses:
        if st.state == "created":
            print(
                f"{tool}: created topic {st.spec.name} (partitions={st.spec.partitions} "
                f"replication={st.spec.replication})",
                file=sys.stderr,
            )
        if st.warning:
            print(f"warning: {st.warning}", file=sys.stderr)
    return None


def list_topics(settings: Settings) -> list[TopicStatus]:
    """Which salesops topics exist, with their partition counts (creates nothing)."""
    admin = make_admin(settings)
    try:
        specs = topic_specs(settings)
        have = _existing_partitions(admin, [s.name for s in specs])
    finally:
        admin.close()
    return [
        TopicStatus(s, "exists", have[s.name], _check(s, have[s.name]))
        if s.name in have
        else TopicStatus(s, "missing")
        for s in specs
    ]


def _print(statuses: list[TopicStatus]) -> None:
    width = max(len(st.spec.name) for st in statuses)
    for st in statuses:
        line = f"{st.state:<8} {st.spec.name:<{width}}"
        if st.partitions is not None:
            line += f"  partitions={st.partitions}"
        if st.state == "created":
            line += f" replication={st.spec.replication} cleanup.policy={st.spec.cleanup_policy}"
        print(line.rstrip())
    for st in statuses:
        if st.warning:
            print(f"warning: {st.warning}", file=sys.stderr)


def run_topics(args: argparse.Namespace, settings: Settings) -> int:
    """``salesops topics [--list]``: 0 ok, 3 Kafka unreachable or a topic not creatable."""
    quiet_client_logs(settings)
    try:
        if args.list:
            statuses = list_topics(settings)
        else:
            admin = make_admin(settings)
            try:
                statuses = ensure_specs(admin, topic_specs(settings))
            finally:
                admin.close()
    except BrokerUnavailable as exc:
        print(f"salesops topics: {exc}", file=sys.stderr)
        return 3
    except KafkaError as exc:
        print(
            f"salesops topics: {describe_error(exc)} (Kafka at {settings.kafka_bootstrap})", file=sys.stderr
        )
        return 3
    _print(statuses)
    return 0
