"""Helpers the test files share: fresh sandbox numbers, settling a request, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import jsonschema
from celery.result import AsyncResult

from worker.dev.stack import child_env

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
