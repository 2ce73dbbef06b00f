"""Helpers the test files share: fresh sandbox numbers, settling a request, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jsonschema
from celery import Celery
from celery.result import AsyncResult

from worker.dev.stack import child_env, wait_until

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
OUTCOME_SCHEMA = json.loads((SCHEMAS / "outcome.v1.json").read_text())
PLACED_SCHEMA = json.loads((SCHEMAS / "placed.v1.json").read_text())


def unique_dn(last_digit: str) -> str:
    """A fresh sandbox number whose last digit picks the simulator's outcome.

    Ten million per digit: the whole suite shares one simulator and per-number limits, so two
    tests drawing the same number would see each other's calls (1 in 1,000 was too few).
    """
    return f"7999000{uuid.uuid4().int % 10**7:07d}{last_digit}"


def settle(result: AsyncResult, timeout_s: float = 60) -> dict[str, Any]:
    """The request's outcome document, checked against its schema."""
    doc = result.get(timeout=timeout_s)
    jsonschema.validate(doc, OUTCOME_SCHEMA)
    return dict(doc)


def callpass(
    *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the ``callpass`` CLI with ``env`` (over a clean environment)."""
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        env=child_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@contextmanager
def task_events(app: Celery) -> Iterator[list[dict[str, Any]]]:
    """The workers' task events (what Flower shows) while the block runs."""
    seen: list[dict[str, Any]] = []
    receivers: list[Any] = []

    def capture() -> None:
        with app.connection_for_read() as conn:
            receiver = app.events.Receiver(conn, handlers={"*": seen.append})
            receivers.append(receiver)
            receiver.capture(limit=None, timeout=30, wakeup=True)

    thread = threading.Thread(target=capture, daemon=True)
    thread.start()
    try:
        # Any event (the worker's heartbeat answers `wakeup`) proves the receiver is bound.
        wait_until(lambda: seen, 20, "event receiver")
        yield seen
    finally:
        for receiver in receivers:
            receiver.should_stop = True
        thread.join(10)
