"""``make bench-quick`` as CI runs it: the benchmark runs end to end and writes its report.

Only that a report was produced, with every variant and nothing lost, is checked: timings on a
shared machine are for the benchmark to report, never for a test to judge.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from worker.dev.stack import child_env

pytestmark = pytest.mark.slow


def test_bench_quick_writes_json_markdown_and_chart(tmp_path: Path) -> None:
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--size", "quick", "--out", str(out)],
        env=child_env({}),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "results.json").read_text())
    assert {r["variant"] for r in report["frontier"]} == {"ours", "fixed-1s"}
    assert {r["variant"] for r in report["saturation"]} == {"ours", "fixed-1s", "sync-v1"}
    for run in report["frontier"] + report["saturation"]:
        assert run["lost"] == 0, run
        assert run["api_requests_per_call"] >= 1
    assert report["memory"]["in_flight_records"] >= report["memory"]["calls"]
    # The burst rows: its floor, code checks while it is placed, Redis commands by name.
    assert report["floors"]["burst"]["floor_ms"] > report["environment"]["latency_ms"]
    ours = next(r for r in report["saturation"] if r["variant"] == "ours")
    assert ours["code_check_ms"]["checks"] >= 1 and ours["code_check_ms"]["errors"] == 0
    assert ours["redis_commands_by_name"]["evalsha"] > 0
    assert report["goals"]
    assert "## Goals" in (out / "results.md").read_text()
    assert (out / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
