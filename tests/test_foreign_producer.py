"""A service that has only Celery installed produces by task name and reads the outcome."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Simulator

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "producer.py"


@pytest.mark.usefixtures("worker")
def test_a_celery_only_producer_gets_pin_and_outcome(redis_url: str, sim: Simulator) -> None:
    # -I: isolated mode, so neither the project directory nor PYTHONPATH is importable.
    proc = subprocess.run(
        [sys.executable, "-I", str(EXAMPLE), "79990002001", "5"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"CALLPASS_REDIS_URL": redis_url, "PATH": "/usr/bin:/bin"},
        cwd="/",
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("pin ")
    doc = json.loads(lines[1])
    assert doc["outcome"] == "answered" and doc["pin"] == lines[0].split()[1]
    assert lines[2] == "project modules imported: []"
