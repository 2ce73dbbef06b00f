"""The operator's commands, run as a user runs them."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest

from tests.helpers import callpass


@pytest.mark.usefixtures("worker")
def test_call_wait_prints_the_pin_then_the_outcome(worker_env: dict[str, str]) -> None:
    out = callpass("call", "79990006001", "--timeout", "5", "--wait", env=worker_env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("task id: ")
    assert lines[1].startswith("pin: ")
    doc = json.loads("\n".join(lines[2:]))
    assert doc["outcome"] == "answered" and doc["pin"] == lines[1].split()[1]
    assert "79990006001" not in out.stderr


def test_call_refuses_a_bad_number_without_enqueueing(worker_env: dict[str, str]) -> None:
    out = callpass("call", "+7999", env=worker_env)
    assert out.returncode == 2
    assert "dn:" in out.stderr and "task id" not in out.stdout


def test_config_names_a_malformed_variable(worker_env: dict[str, str]) -> None:
    out = callpass("config", env={**worker_env, "CALLPASS_POLL_GRACE_S": "forever"})
    assert out.returncode != 0
    assert "CALLPASS_POLL_GRACE_S" in out.stderr and "must be a number" in out.stderr


def test_config_prints_settings_without_the_token(worker_env: dict[str, str]) -> None:
    token = "9" * 64
    out = callpass("config", env={**worker_env, "CALLPASS_API_TOKEN": token})
    assert out.returncode == 0
    assert "CALLPASS_API_URL=" in out.stdout and token not in out.stdout


def test_run_brings_up_the_stack_prints_the_demo_and_cleans_up(tmp_path: Path) -> None:
    """`make run`'s command: its own Redis and simulator, a line per demo call, then exit."""
    run_dir = tmp_path / "run"
    env = {"CALLPASS_LOG_LEVEL": "INFO"}
    out = callpass(
        "run",
        "--exit-after-demo",
        "--flower-port",
        "0",
        "--demo-timeout",
        "3",
        "--run-dir",
        str(run_dir),
        env=env,
        timeout=240,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert "(started for this run)" in text and "no real API token configured" in text
    demo_lines = [line for line in text.splitlines() if "status requests:" in line]
    assert len(demo_lines) == 10
    assert any("answered" in line and "NORMAL_CLEARING" in line for line in demo_lines)
    assert any("api_error" in line and "destination not allowed" in line for line in demo_lines)
    assert "Flower: http://127.0.0.1:" in text
    assert "stopping" in text
    assert "79990001001" not in text  # numbers are masked in the demo output too
    # Everything it started is stopped: its Redis port is closed again.
    port = int(re.search(r"redis://127\.0\.0\.1:(\d+)/0", text).group(1))  # type: ignore[union-attr]
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
