"""Redis sink: the latest snapshot of each view as one hash per view.

Key scheme (``<prefix>`` = ``SALESOPS_REDIS_PREFIX``, default ``salesops``):

* ``<prefix>:view:<view>`` -- hash, field = the row's aggregate key (the same key as on
  the view's aggregate topic, e.g. ``stage:default:contractsent``), value = the row as
  JSON;
* ``<prefix>:meta`` -- hash, field = view name, value = the ``as_of`` epoch ms of the
  snapshot last written.

A flush replaces every changed view atomically in one ``MULTI`` pipeline (``DEL`` +
``HSET``), so a reader never sees half a snapshot.  An outage raises
:class:`~sinks.base.SinkUnavailable`; the buffered snapshots are kept and the next flush
retries them (newer snapshots of the same view replace older ones in the buffer).
redis-py blocks, so the round trip of a flush runs in a thread (``asyncio.to_thread``):
an unreachable Redis (5 s timeouts) never stalls the worker's event loop.  A flush before
a successful setup connects first, so a Redis that is down at start is retried like any
later outage.
"""

from __future__ import annotations

import asyncio
import json
import logging
from decimal import Decimal
from typing import Any

import redis

from sinks.base import Sink, SinkError, SinkUnavailable, ViewRows

log = logging.getLogger(__name__)


class RedisSnapshotSink(Sink):
    name = "redis"

    def __init__(self, url: str, prefix: str, client: redis.Redis | None = None) -> None:
        self.url = url
        self.prefix = prefix
        self._client = client
        self._pending: dict[str, tuple[int, dict[str, Any]]] = {}

    def setup(self) -> None:
        """Connect and ping: a wrong URL or an unreachable server fails here, at start."""
        self._connect()

    def _connect(self) -> None:
        try:
            self._client = self._client or redis.Redis.from_url(
                self.url, socket_timeout=5, socket_connect_timeout=5
            )
            self._client.ping()
        except (redis.RedisError, ValueError) as exc:
            # not the URL: it may carry a password; redis' own message names host and port
            raise SinkError(f"cannot reach Redis (SALESOPS_REDIS_URL): {exc}") from exc

    def key(self, view: str) -> str:
        return f"{self.prefix}:view:{view}"

    def add(self, item: ViewRows) -> None:
        """Buffer one view's rows (JSON-able values); a later snapshot of a view wins."""
        view, as_of, rows = item
        self._pending[view] = (as_of, rows)

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self) -> None:
        if self._pending:
            await asyncio.to_thread(self._write)

    def _write(self) -> None:
        if self._client is None:
            try:
                self._connect()
            except SinkError as exc:  # down now, maybe up at the next flush
                raise SinkUnavailable(str(exc)) from exc
        assert self._client is not None
        pipe = self._client.pipeline(transaction=True)
        for view, (as_of, rows) in self._pending.items():
            key = self.key(view)
            pipe.delete(key)
            if rows:
                pipe.hset(
                    key, mapping={k: json.dumps(v, sort_keys=True, default=_exact) for k, v in rows.items()}
                )
            pipe.hset(f"{self.prefix}:meta", view, as_of)
        try:
            pipe.execute()
        except redis.RedisError as exc:
            raise SinkUnavailable(f"Redis write failed: {exc}") from exc
        self._pending.clear()

    async def close(self) -> None:
        if self._client is not None:
            await asyncio.to_thread(self._client.close)


def _exact(value: object) -> str:
    """Money (Decimal) as its exact decimal string, as the API gives it."""
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
