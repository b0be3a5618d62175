"""The one sink interface (after quix-streams' ``BaseSink``).

A sink is set up once (checks its configuration and fails fast with a message a user can
act on), buffers with ``add`` and writes a whole batch in one round trip with ``await
flush()``.  Every sink is driven the same way, whatever it writes to:

* the publisher (agents/outputs.py) drives the view sinks, Redis and the aggregate topics:
  each publication adds one :class:`ViewRows` per view, then flushes each sink;
* the alert-delivery agent drives the webhook sink with alert records: it adds the
  batch's alerts, flushes, and lets the batch's offsets be committed only after that.

``flush`` is a coroutine: a sink whose client blocks (redis-py) runs its round trip in a
thread, so no sink ever stalls the event loop the agents share.  A retryable outage is
signalled with :class:`SinkUnavailable`; the sink keeps what it could not write, the
caller counts the failure and flushes again later, and consumption never stops for it.
"""

from __future__ import annotations

import abc
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple


class SinkError(Exception):
    """A sink cannot work at all (bad configuration, refused at setup)."""


class SinkUnavailable(SinkError):
    """A retryable outage: keep the batch, retry later."""


class ViewRows(NamedTuple):
    """Every current row of one view at one instant: what a view sink receives.

    ``rows`` maps the row's stable key (its dimension, shared by the aggregate topics and
    the Redis hashes) to the row without ``as_of``; a key missing from a later
    ``ViewRows`` of the same view is a row that disappeared."""

    view: str
    as_of: int
    rows: dict[str, dict[str, Any]]


class Sink(abc.ABC):
    name: str = "sink"

    @abc.abstractmethod
    def setup(self) -> None:
        """Check the configuration; raise :class:`SinkError` with a message a user can act on."""

    @abc.abstractmethod
    def add(self, item: Any) -> None:
        """Buffer one item for the next flush."""

    @abc.abstractmethod
    async def flush(self) -> Any:
        """Write everything buffered in one batch; raise :class:`SinkUnavailable` to retry."""

    def forget(self) -> None:  # noqa: B027 - optional hook
        """This worker stopped publishing (another worker publishes now): drop what the
        sink remembers of earlier publications, which may no longer be what is written."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter (AWS architecture blog's "full jitter")."""

    initial_s: float = 0.5
    maximum_s: float = 30.0
    factor: float = 2.0

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        rng = rng or random.Random()
        ceiling = self.initial_s
        while True:
            yield rng.uniform(0, ceiling)
            ceiling = min(self.maximum_s, ceiling * self.factor)
