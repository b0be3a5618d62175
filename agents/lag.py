"""Consumer lag of this worker's assigned input partitions, exported as Prometheus gauges.

Per assigned partition of the input topics (deal events, stall checks, survey responses,
invitations, and the alerts topic when this worker delivers webhooks):

* ``salesops_consumer_lag_records{topic,partition}`` = the partition's end offset (high
  watermark, asked from the broker) minus the group's committed offset: the records a
  restart would read again or that are still to be processed, as
  ``kafka-consumer-groups.sh --describe`` shows it.  Before the group has committed
  anything in a partition, the partition's earliest offset stands in for the commit;
* ``salesops_consumer_committed_offset{topic,partition}``: the offset the group resumes
  from, the one the lag counts from (the committed offset, else the earliest): a stuck
  consumer is one whose lag stays above 0 while this does not move;
* ``salesops_assigned_partitions{topic}``: how many partitions of each topic this
  worker has (0 for a topic it has none of, so an idle worker is visible).

A timer refreshes them every :data:`LAG_INTERVAL_S`; a partition given up in a rebalance
loses its series at once (Faust's ``on_partitions_revoked`` signal) and the next refresh
replaces the whole families, so no worker keeps reporting a partition it no longer owns.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import faust

from sinks.metrics import SalesopsMetrics, set_gauge_family

log = logging.getLogger(__name__)
LAG_INTERVAL_S = 5.0


def partition_lag(highwater: int | None, committed: int | None, earliest: int | None) -> int | None:
    """Records after the committed offset; None when the end offset is unknown.  Without a
    commit the earliest offset counts as committed; never negative (the end offset can be
    read just before a commit that overtakes it)."""
    if highwater is None:
        return None
    start = committed if committed is not None else (earliest or 0)
    return max(0, highwater - start)


class LagMonitor:
    """Reads positions from Faust's consumer and sets the lag gauges of ``metrics``."""

    def __init__(self, app: faust.App, metrics: SalesopsMetrics, topics: Iterable[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.topics = tuple(dict.fromkeys(topics))
        self._failing = False

    def assigned(self) -> list[Any]:
        """The input partitions currently assigned to this worker, sorted."""
        return sorted(
            (tp for tp in self.app.assignor.assigned_actives() if tp.topic in self.topics),
            key=lambda tp: (tp.topic, tp.partition),
        )

    async def collect(self) -> None:
        """One refresh: ask the broker for end offsets, read Faust's committed offsets."""
        tps = self.assigned()
        counts = dict.fromkeys(self.topics, 0.0)
        for tp in tps:
            counts[tp.topic] += 1
        set_gauge_family(self.metrics.assigned_partitions, {(t,): n for t, n in counts.items()})
        consumer: Any = self.app.consumer
        try:
            highwaters: Mapping[Any, int] = await consumer.highwaters(*tps) if tps else {}
            # Faust's view of the group's commits (a defaultdict: .get does not insert)
            committed = {tp: consumer._committed_offset.get(tp) for tp in tps}
            missing = [tp for tp in tps if committed[tp] is None]
            earliest: Mapping[Any, int] = await consumer.earliest_offsets(*missing) if missing else {}
        except Exception as exc:  # not started yet, rebalancing, broker away: try again later
            if not self._failing:
                log.warning("consumer_lag_unavailable error=%r retry_in_s=%s", exc, LAG_INTERVAL_S)
            self._failing = True
            # keep the last values of the partitions still assigned, drop the others
            owned = {(tp.topic, str(tp.partition)) for tp in tps}
            self._remove(lambda labels: labels not in owned)
            return
        if self._failing:
            log.info("consumer_lag_available partitions=%s", len(tps))
        self._failing = False
        lags: dict[tuple[str, ...], float] = {}
        offsets: dict[tuple[str, ...], float] = {}
        for tp in tps:
            labels = (tp.topic, str(tp.partition))
            lag = partition_lag(highwaters.get(tp), committed[tp], earliest.get(tp))
            if lag is not None:
                lags[labels] = lag
            resume = committed[tp] if committed[tp] is not None else earliest.get(tp)
            if resume is not None:
                offsets[labels] = resume
        set_gauge_family(self.metrics.consumer_lag, lags)
        set_gauge_family(self.metrics.consumer_committed, offsets)

    def forget(self, revoked: Iterable[Any]) -> None:
        """Drop the series of partitions given up in a rebalance."""
        gone = {(tp.topic, str(tp.partition)) for tp in revoked}
        self._remove(lambda labels: labels in gone)

    def _remove(self, matches: Callable[[tuple[str, ...]], bool]) -> None:
        for gauge in (self.metrics.consumer_lag, self.metrics.consumer_committed):
            # client_python keeps a gauge's children keyed by their label values
            for labels in [tuple(labels) for labels in gauge._metrics]:
                if matches(labels):
                    gauge.remove(*labels)


def install(app: faust.App, metrics: SalesopsMetrics, topics: Iterable[str]) -> LagMonitor:
    """Export the lag of ``topics``' assigned partitions: a timer and a revocation hook."""
    monitor = LagMonitor(app, metrics, topics)

    def on_revoked(_sender: Any, /, *args: Any, signal: Any, **_kwargs: Any) -> None:
        monitor.forget(args[0])  # the revoked partitions

    app.on_partitions_revoked.connect(on_revoked)
    app.timer(LAG_INTERVAL_S, name="consumer-lag")(monitor.collect)
    return monitor
