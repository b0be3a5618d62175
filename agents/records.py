"""Table record framing: the domain state plus the bookkeeping the worker needs.

A deals-table value is a header line, a newline, then the deal's own bytes
(``Deal.to_bytes``); the header is the partition number, followed by ``|`` and the alert
state as JSON when the deal has one (a JSON object per event cost ~30 us in the
benchmark's profile, most deals have no alert).  The partition is kept because a
table holds standby copies of other workers' partitions; views are rebuilt only from the
entries of the partitions this worker actively owns.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

from streams.deals import Deal


@dataclass(frozen=True, slots=True)
class DealRecord:
    partition: int
    deal: Deal
    alert: dict[str, Any] | None = None

    def to_bytes(self) -> bytes:
        head = b"%d" % self.partition
        if self.alert is not None:
            head += b"|" + json.dumps(self.alert, separators=(",", ":")).encode()
        return head + b"\n" + self.deal.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> DealRecord:
        head, _, body = data.partition(b"\n")
        partition, _, alert = head.partition(b"|")
        return cls(
            partition=int(partition), deal=Deal.from_bytes(body), alert=json.loads(alert) if alert else None
        )


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
