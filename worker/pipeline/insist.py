"""Redis writes that must land: what exists only in this process until stored (a placed
call's id and pin, its webhook event) is written again through connection trouble."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis

__all__ = ["insist"]

log = logging.getLogger(__name__)


def insist(write: Callable[[], bool]) -> bool:
    """Run a Redis write, retrying connection trouble for up to ~15 s."""
    delay = 0.25
    for _ in range(6):
        try:
            return write()
        except redis.RedisError as exc:
            log.warning("Redis write failed (%s); again in %.2fs", type(exc).__name__, delay)
            time.sleep(delay)
            delay *= 2
    return write()
