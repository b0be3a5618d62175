"""Table record framing: the domain state plus the bookkeeping the worker needs.

A deals-table value holds the partition number, the deal's alert state (if any) and the
deal's own bytes (``Deal.to_bytes``).  The partition is kept because a table holds
standby copies of other workers' partitions; views are rebuilt only from the entries of
the partitions this worker actively owns.

Format 2 (written now), binary and little-endian: ``B 2``, ``I partition``, ``B alert
kind``, the alert, then the deal's bytes.  Alert kind 0: none; 1: the alert state of
``AlertState.to_dict`` as ``q entered_at, q fired_at, q resolved_at (-1: None), B status
(0 FIRING, 1 RESOLVED), 4 x H byte lengths`` then ``alert_id``, ``pipeline``, ``stage``,
``status`` is not repeated; 2: any other dict, ``I length`` then compact JSON.  Format 1
(what changelogs written before hold): the partition in ASCII digits, ``|`` and the
alert as JSON when there is one, a newline, then the deal's bytes; records are told
apart by their first byte (a digit, or 2) and both are read.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

from streams.deals import Deal

_FORMAT = 2
_HEAD = struct.Struct("<BIB")  # format, partition, alert kind
_NO_ALERT, _ALERT_STATE, _ALERT_JSON = 0, 1, 2
_ALERT = struct.Struct("<qqqBHHH")  # entered_at, fired_at, resolved_at, status, 3 lengths
_ALERT_STATUSES = ("FIRING", "RESOLVED")
_ALERT_KEYS = ("alert_id", "status", "pipeline", "stage", "entered_at", "fired_at", "resolved_at")
_JSON_LENGTH = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class DealRecord:
    partition: int
    deal: Deal
    alert: dict[str, Any] | None = None

    def to_bytes(self) -> bytes:
        """Format 2 (see the module doc): deterministic, like ``Deal.to_bytes``."""
        alert = self.alert
        if alert is None:
            return _HEAD.pack(_FORMAT, self.partition, _NO_ALERT) + self.deal.to_bytes()
        try:
            packed = _pack_alert_state(alert)
            kind = _ALERT_STATE
        except (AttributeError, KeyError, TypeError, ValueError, struct.error):
            doc = json.dumps(alert, separators=(",", ":"), sort_keys=True).encode()
            packed, kind = _JSON_LENGTH.pack(len(doc)) + doc, _ALERT_JSON
        return b"".join((_HEAD.pack(_FORMAT, self.partition, kind), packed, self.deal.to_bytes()))

    @classmethod
    def from_bytes(cls, data: bytes) -> DealRecord:
        """Inverse of :meth:`to_bytes`; reads format 1 too.  ValueError on anything else."""
        if data[:1].isdigit():
            return cls._from_format_1(data)
        if data[:1] != bytes((_FORMAT,)):
            raise ValueError(f"unsupported deal record format {data[:1]!r}")
        try:
            _, partition, kind = _HEAD.unpack_from(data)
            pos = _HEAD.size
            alert: dict[str, Any] | None = None
            if kind == _ALERT_STATE:
                alert, pos = _unpack_alert_state(data, pos)
            elif kind == _ALERT_JSON:
                (length,) = _JSON_LENGTH.unpack_from(data, pos)
                pos += _JSON_LENGTH.size
                alert = json.loads(data[pos : pos + length])
                pos += length
            elif kind != _NO_ALERT:
                raise ValueError(f"unknown alert kind {kind}")
        except (struct.error, IndexError, UnicodeDecodeError) as exc:
            raise ValueError(f"corrupt deal record: {exc}") from exc
        return cls(partition=partition, deal=Deal.from_bytes(data[pos:]), alert=alert)

    @classmethod
    def _from_format_1(cls, data: bytes) -> DealRecord:
        head, _, body = data.partition(b"\n")
        partition, _, alert = head.partition(b"|")
        return cls(
            partition=int(partition), deal=Deal.from_bytes(body), alert=json.loads(alert) if alert else None
        )


def _pack_alert_state(alert: dict[str, Any]) -> bytes:
    """The binary alert state; an exception when ``alert`` is not exactly the shape of
    ``AlertState.to_dict`` (then it is stored as JSON)."""
    if tuple(alert) != _ALERT_KEYS:
        raise KeyError("not an alert state")
    resolved = alert["resolved_at"]
    times = (alert["entered_at"], alert["fired_at"], resolved)
    if any(type(t) is not int for t in times[:2]) or not (resolved is None or type(resolved) is int):
        raise TypeError("alert times must be ints")
    if resolved is not None and resolved < 0:
        raise ValueError("resolved_at -1 means None")
    texts = [alert["alert_id"].encode(), alert["pipeline"].encode(), alert["stage"].encode()]
    status = _ALERT_STATUSES.index(alert["status"])
    head = _ALERT.pack(
        times[0], times[1], -1 if resolved is None else resolved, status, *(len(t) for t in texts)
    )
    return b"".join((head, *texts))


def _unpack_alert_state(data: bytes, pos: int) -> tuple[dict[str, Any], int]:
    entered_at, fired_at, resolved_at, status, *lengths = _ALERT.unpack_from(data, pos)
    pos += _ALERT.size
    texts = []
    for length in lengths:
        texts.append(data[pos : pos + length].decode())
        pos += length
    alert = {
        "alert_id": texts[0],
        "status": _ALERT_STATUSES[status],
        "pipeline": texts[1],
        "stage": texts[2],
        "entered_at": entered_at,
        "fired_at": fired_at,
        "resolved_at": None if resolved_at == -1 else resolved_at,
    }
    return alert, pos


@dataclass(frozen=True, slots=True)
class FramedRecord:
    """Partition + opaque domain bytes, for the responses and invitations tables."""

    partition: int
    body: bytes

    def to_bytes(self) -> bytes:
        return str(self.partition).encode() + b"\n" + self.body

    @classmethod
    def from_bytes(cls, data: bytes) -> FramedRecord:
        head, _, body = data.partition(b"\n")
        return cls(int(head), body)


class FramedTable(MutableMapping[str, bytes]):
    """A view of a raw-bytes Faust table that frames values with the current partition.

    Lets the pure core's ``apply_*`` functions (which take any str -> bytes mapping) run
    unchanged against the worker's tables.
    """

    def __init__(self, table: Any, partition: int) -> None:
        self._table = table
        self._partition = partition

    def __getitem__(self, key: str) -> bytes:
        raw = self._table.get(key.encode())
        if not raw:
            raise KeyError(key)
        return FramedRecord.from_bytes(raw).body

    def __setitem__(self, key: str, value: bytes) -> None:
        self._table[key.encode()] = FramedRecord(self._partition, value).to_bytes()

    def __delitem__(self, key: str) -> None:
        del self._table[key.encode()]

    def __iter__(self) -> Iterator[str]:
        return (k.decode() for k in self._table)

    def __len__(self) -> int:
        return len(self._table)


class TableLedger:
    """``DeliveryLedger`` over a Faust table: which (alert, status) a receiver acknowledged.

    Written from the delivery agent's stream, so the entry is changelogged in the same
    partition as the alert and survives restarts and rebalances.
    """

    def __init__(self, table: Any) -> None:
        self._table = table

    def already_delivered(self, alert_id: str, status: str) -> bool:
        return bool(self._table.get(f"{alert_id}|{status}".encode()))

    def mark_delivered(self, alert_id: str, status: str) -> None:
        self._table[f"{alert_id}|{status}".encode()] = b"1"
