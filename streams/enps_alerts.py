"""eNPS-drop alerts: when a group's 30-day eNPS fell by more than a threshold.

The drop itself is measured by :func:`streams.pulse.enps_drops` (a group's eNPS over the
last 30 days against the 30 days before them, for groups visible in both windows).  This
module decides the alert lifecycle on top of it, the way :mod:`streams.stalled` does for
stalled deals: pure functions from (known alerts, current drops, threshold, now) to
(new known alerts, Alert records to emit).

Rules of :func:`decide`:

* a group *drops* when its row's ``drop > threshold`` (strictly more, as the setting
  says); a group with no row (not visible in both windows) does not drop;
* it only *starts* dropping when the drop is also larger than its 95 % margin of error
  (``margins``, from :func:`streams.pulse.enps_drop_margins`): a drop within the noise
  of two small samples -- a half-imported wave, a team of 12 -- fires nothing.  Once
  FIRING, it stays FIRING while ``drop > threshold`` (hysteresis: a margin that grows
  as answers trickle in does not resolve and re-fire the same drop);
* FIRING when a group drops and has no FIRING alert, with ``alert_id =
  enps_drop:<group>:<day>`` (``day`` the UTC date of ``now_ms``, as ``YYYY-MM-DD``),
  ``fired_at = now_ms``, ``value`` the drop in points;
* RESOLVED when a group has a FIRING alert and no longer drops, ``resolved_at = now_ms``,
  ``value`` the current drop, or null when the group is no longer visible in both windows;
* at most one alert per group and day: the Alert contract gives each ``alert_id`` exactly
  one FIRING and at most one RESOLVED, so a drop that comes back on the day its alert
  resolved waits for the next day (a new id) before it fires again -- a drop that flaps
  around the threshold costs at most one alert a day;
* a clock without a value (``now_ms <= NO_WATERMARK_MS``: the watermark clock before
  any event) decides nothing: its windows would be those of 1970 and would resolve every
  FIRING alert.

Known alerts are the *latest alert of each group* (FIRING or RESOLVED record), recovered
after a restart from the alerts topic with :func:`recover`, so a restarted or new
publisher neither repeats a FIRING nor forgets to resolve one.  The latest alert of a
group is the one fired last; of the two records of one alert, RESOLVED.  That makes
recovery independent of the order records are read in (an alert's records share its Kafka
key, hence a partition, but two alerts of one group may sit in two partitions), and
reading the same record twice changes nothing.

Records carry ``value``, ``threshold`` and ``unit = "points"``; ``days_in_stage`` is null
(it belongs to stalled deals; version 1 of the contract put the drop there).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from streams.clock import NO_WATERMARK_MS
from streams.validation import to_epoch_ms

KIND = "ENPS_DROP"
UNIT = "points"
FIRING = "FIRING"
RESOLVED = "RESOLVED"

#: group -> the group's latest alert record (``schemas/Alert.avsc``, times in epoch ms)
Alerts = Mapping[str, Mapping[str, Any]]


def alert_id(group: str, now_ms: int) -> str:
    """Identity of the alert a group fires at ``now_ms``: one per group and UTC day."""
    day = datetime.fromtimestamp(now_ms / 1000, UTC).strftime("%Y-%m-%d")
    return f"enps_drop:{group}:{day}"


def firing(alerts: Alerts) -> dict[str, Mapping[str, Any]]:
    """The FIRING alerts among the known ones, by group."""
    return {group: rec for group, rec in alerts.items() if rec["status"] == FIRING}


def _fired(group: str, row: Mapping[str, Any], threshold: float, now_ms: int) -> dict[str, Any]:
    return {
        "alert_id": alert_id(group, now_ms),
        "kind": KIND,
        "status": FIRING,
        "subject": group,
        "pipeline": None,
        "stage": None,
        "owner_id": None,
        "amount": None,
        "currency": None,
        "days_in_stage": None,
        "threshold": threshold,
        "value": row["drop"],
        "unit": UNIT,
        "fired_at": now_ms,
        "resolved_at": None,
        "summary": f"eNPS of {group} fell {row['drop']:.1f} points in 30 days "
        f"({row['previous']:.1f} -> {row['current']:.1f}), threshold {threshold:g}",
    }


def _resolved(
    alert: Mapping[str, Any], row: Mapping[str, Any] | None, threshold: float, now_ms: int
) -> dict[str, Any]:
    group = alert["subject"]
    if row is None:
        summary = (
            f"eNPS drop alert of {group} resolved: the group is no longer visible in both "
            "30-day windows, so no drop is measured"
        )
    else:
        summary = (
            f"eNPS of {group} recovered: {row['current']:.1f} against {row['previous']:.1f} "
            f"in the previous 30 days, no longer more than {threshold:g} points lower"
        )
    return {
        **alert,
        "status": RESOLVED,
        "days_in_stage": None,
        "threshold": threshold,
        "value": None if row is None else row["drop"],
        "unit": UNIT,
        "resolved_at": now_ms,
        "summary": summary,
    }


def decide(
    alerts: Alerts,
    drops: Iterable[Mapping[str, Any]],
    threshold: float,
    now_ms: int,
    margins: Mapping[str, float] | None = None,
) -> tuple[dict[str, Mapping[str, Any]], list[dict[str, Any]]]:
    """The next known alerts and the records to emit (FIRINGs, then RESOLVEDs, each by group).

    ``drops`` are :func:`streams.pulse.enps_drops` rows (``group``, ``previous``,
    ``current``, ``drop``) of every visible group, whatever its drop: the threshold is
    applied here.  ``alerts`` is not modified.  Rules in the module docstring.
    """
    known = dict(alerts)
    if now_ms <= NO_WATERMARK_MS:
        return known, []
    rows = {row["group"]: row for row in drops}
    margins = margins or {}
    firing_now = firing(known)
    dropping = {
        group
        for group, row in rows.items()
        if row["drop"] > threshold and (group in firing_now or row["drop"] > margins.get(group, 0.0))
    }
    fired: list[dict[str, Any]] = []
    resolved: list[dict[str, Any]] = []
    for group in sorted(dropping):
        latest = known.get(group)
        if latest is not None and (
            latest["status"] == FIRING or latest["alert_id"] == alert_id(group, now_ms)
        ):
            continue  # firing already, or resolved today: one alert per group and day
        record = _fired(group, rows[group], threshold, now_ms)
        known[group] = record
        fired.append(record)
    for group, alert in sorted(firing(known).items()):
        if group not in dropping:
            record = _resolved(alert, rows.get(group), threshold, now_ms)
            known[group] = record
            resolved.append(record)
    return known, fired + resolved


def _order(record: Mapping[str, Any]) -> tuple[int, str, bool]:
    return record["fired_at"], record["alert_id"], record["status"] == RESOLVED


def recover(alerts: Alerts, record: Mapping[str, Any]) -> Alerts:
    """Fold one record read back from the alerts topic into the known alerts.

    ``record`` as the codec decodes it (times may be datetimes; version-1 records too).
    Other kinds are ignored.  Returns the known alerts to keep: ``alerts`` itself when the
    record changes nothing, else a new mapping.  Order-independent and idempotent (see the
    module docstring): the group keeps its alert with the largest ``(fired_at, alert_id)``,
    RESOLVED over FIRING for the same alert.
    """
    if record.get("kind") != KIND:
        return alerts
    resolved_at = record.get("resolved_at")
    rec = {
        **record,
        "fired_at": to_epoch_ms(record["fired_at"], "fired_at"),
        "resolved_at": None if resolved_at is None else to_epoch_ms(resolved_at, "resolved_at"),
    }
    group = rec["subject"]
    latest = alerts.get(group)
    if latest is not None and _order(latest) >= _order(rec):
        return alerts
    return {**alerts, group: rec}
