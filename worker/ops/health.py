"""The worker's heartbeat file and ``callpass healthcheck``, a liveness probe that needs no
broker round trip (``celery inspect ping`` fails whenever the broker is slow, and restarting a
worker then makes things worse)."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

__all__ = ["heartbeat_age_s", "heartbeat_problem", "touch_heartbeat"]

log = logging.getLogger(__name__)


def touch_heartbeat(path: str) -> None:
    """Set the file's time to now, creating it (and its folder) if needed."""
    try:
        file = Path(path)
        file.parent.mkdir(parents=True, exist_ok=True)
        file.touch()
    except OSError as exc:
        # A full or read-only disk must not stop the worker; the probe will say so.
        log.warning("cannot touch heartbeat file %s: %s", path, exc.strerror or exc)


def heartbeat_age_s(path: str) -> float | None:
    """Seconds since the worker last touched ``path``; ``None`` when there is no such file."""
    try:
        modified = os.stat(path).st_mtime
    except FileNotFoundError:
        return None
    return max(0.0, time.time() - modified)


def heartbeat_problem(path: str, age: float | None, max_age_s: float) -> str | None:
    """Why the heartbeat at ``path``, ``age`` seconds old (:func:`heartbeat_age_s`), is not
    fresh (``None``: it is), in one line: ``callpass healthcheck``'s and readycheck's."""
    if age is None:
        return f"no heartbeat yet ({path} missing)"
    if age > max_age_s:
        return f"last heartbeat {age:.0f} s ago (limit {max_age_s:g} s)"
    return None
