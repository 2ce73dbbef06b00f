"""``make bench-quick`` as CI runs it: the benchmark runs end to end and writes its report.

Only that a report was produced, with every variant and nothing lost, is checked: timings on a
shared machine are for the benchmark to report, never for a test to judge.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import bench.__main__ as bench_main
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


def _burst_run(pin_p99_ms: float, settled_per_s: float) -> dict[str, Any]:
    return {
        "calls": 800,
        "time_to_pin_ms": {"p99": pin_p99_ms},
        "cpu_s_per_call_worker": 0.01,
        "settled_per_s": settled_per_s,
    }


def test_a_goal_no_worker_could_meet_here_says_what_bounds_it() -> None:
    # fixed-1s places at 1.1x the floor, and a 10 s call outlasts the burst: 0.8x its p99 is
    # below the floor, and 800 calls settle no faster than 800 / (3.6 s + 10 s) = 58.8/s.
    rows = bench_main._against_fixed(_burst_run(4000, 50), _burst_run(4000, 53), 3600, 10)
    bounds = {row["goal"]: row["bound"] for row in rows}
    assert (
        "below what any start on this pool can do"
        in bounds["burst: time to pin p99 <= 0.8x fixed-1s's"]
    )
    assert "58.8/s" in bounds["settled calls/s at saturation >= 1.5x fixed-1s's"]
    assert bounds["worker CPU per settled call <= 0.5x fixed-1s's"] == ""


def test_a_goal_within_reach_has_no_bound() -> None:
    rows = bench_main._against_fixed(_burst_run(2000, 50), _burst_run(9000, 20), 1000, 10)
    assert all(row["bound"] == "" for row in rows)
    assert [row["met"] for row in rows] == [True, False, True]
