"""Process-wide wraps of the Kafka client's coroutine methods, each installed once.

Where aiokafka has no setting for a behaviour the worker needs (a pause between failed
metadata refreshes, a consumer stop that ends while the broker is away), the worker wraps
the method that has it.  :func:`wrap_coroutine_method` is the one way it does so: it
checks the method is still there and still a coroutine function (a new aiokafka may
move its internals: then nothing is changed and one warning says so), wraps it once
whatever the number of calls, and keeps the original's name and docstring.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

Method = Callable[..., Awaitable[Any]]
_WRAPPED = "salesops_wrapped"  # set on every wrapper: a second install finds it


def wrap_coroutine_method(owner: type, name: str, wrap: Callable[[Method], Method], what: str) -> bool:
    """Replace ``owner.<name>`` by ``wrap(original)``; True once it is wrapped (now or by
    an earlier call).  False, changing nothing, when ``owner`` has no such coroutine
    method: logged once per call as ``<what>=unavailable``."""
    original = getattr(owner, name, None)
    if original is None or not asyncio.iscoroutinefunction(original):
        log.warning("%s=unavailable reason=%s_without_%s", what, owner.__name__, name)
        return False
    if getattr(original, _WRAPPED, False):
        return True
    wrapper = functools.wraps(original)(wrap(original))
    setattr(wrapper, _WRAPPED, True)
    setattr(owner, name, wrapper)
    return True
