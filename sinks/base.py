"""The one sink interface (after quix-streams' ``BaseSink``).

A sink is set up once (connects and fails fast with a clear message), buffers with
``add`` and writes a whole batch in one round trip with ``flush``.  The worker calls
``flush`` before it lets offsets be committed, so what a committed offset promises has
reached the sink.  A retryable outage is signalled with :class:`SinkUnavailable`; the
caller keeps the batch and retries with backoff, and consumption never stops for it.
"""

from __future__ import annotations

import abc
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


class SinkError(Exception):
    """A sink cannot work at all (bad configuration, refused at setup)."""


class SinkUnavailable(SinkError):
    """A retryable outage: keep the batch, retry later."""


class Sink(abc.ABC):
    name: str = "sink"

    @abc.abstractmethod
    def setup(self) -> None:
        """Connect and check; raise :class:`SinkError` with a message a user can act on."""

    @abc.abstractmethod
    def add(self, item: Any) -> None:
        """Buffer one item for the next flush."""

    @abc.abstractmethod
    def flush(self) -> None:
        """Write everything buffered in one batch; raise :class:`SinkUnavailable` to retry."""

    def close(self) -> None:  # noqa: B027 - optional hook
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
