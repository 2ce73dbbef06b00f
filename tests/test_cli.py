"""The operator's commands, run as a user runs them."""

from __future__ import annotations

import json
import re
import socket
import uuid
from pathlib import Path

import pytest

from callpass_producer.masking import mask_dn
from tests.conftest import Simulator
from tests.helpers import callpass, unique_dn


@pytest.mark.usefixtures("worker")
def test_call_wait_in_a_pipe_prints_a_line_per_phase(
    worker_env: dict[str, str], sim: Simulator
) -> None:
    dn = unique_dn("1")
    out = callpass("call", dn, "--timeout", "5", "--wait", env=worker_env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("task id: ")
    assert [line.split()[0] for line in lines[1:]] == ["queued", "ringing", "answered"]
    pin = lines[2].split("pin ")[1].split()[0]
    assert pin in [c["pin"] for c in sim.calls() if c["dn"] == dn]
    assert f"pin {pin}" in lines[3] and mask_dn(dn) in lines[3]
    assert dn not in out.stdout + out.stderr


def test_call_json_prints_the_pin_and_the_outcome_document(worker_env: dict[str, str]) -> None:
    out = callpass("call", unique_dn("1"), "--timeout", "3", "--wait", "--json", env=worker_env)
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert shown["phase"] == "answered" and shown["outcome"]["pin"] == shown["pin"]
    assert shown["outcome"]["callid"] == shown["callid"]


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


def test_run_names_a_taken_flower_port_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = callpass("run", "--flower-port", str(port), "--run-dir", str(tmp_path), env={})
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        f"callpass run: cannot start Flower: port {port} on 127.0.0.1 is taken (another "
        "Flower?); pick another with --flower-port (make run RUN_ARGS='--flower-port 0' takes "
        "a free one)"
    ]
    assert "Traceback" not in out.stdout + out.stderr


def test_run_names_a_redis_that_does_not_answer_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: connections are refused
        env = {"CALLPASS_REDIS_URL": f"redis://:s3cret@127.0.0.1:{port}/0"}
        out = callpass("run", "--flower-port", "0", "--run-dir", str(tmp_path), env=env)
    assert out.returncode == 2
    (line,) = out.stderr.splitlines()
    assert line.startswith(f"callpass run: cannot start Redis: redis://***@127.0.0.1:{port}/0")
    assert "does not answer" in line and "s3cret" not in line


def test_readycheck_is_ready_with_a_worker_and_names_what_is_missing(
    worker_env: dict[str, str], tmp_path: Path
) -> None:
    heartbeat = tmp_path / "heartbeat"
    env = {**worker_env, "CALLPASS_HEARTBEAT_FILE": str(heartbeat)}
    out = callpass("readycheck", env=env)
    assert out.returncode == 1 and "worker: no heartbeat yet" in out.stderr
    heartbeat.touch()
    out = callpass("readycheck", env=env)
    assert (out.returncode, out.stdout.strip()) == (0, "ready"), out.stderr
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        gone = f"redis://:s3cret@127.0.0.1:{closed.getsockname()[1]}/0"
        out = callpass("readycheck", env={**env, "CALLPASS_REDIS_URL": gone})
    assert out.returncode == 1
    assert "redis: redis://***@127.0.0.1:" in out.stderr and "s3cret" not in out.stderr
    out = callpass("readycheck", env={**env, "CALLPASS_POLL_GRACE_S": "soon"})
    assert out.returncode == 2 and "CALLPASS_POLL_GRACE_S" in out.stderr


@pytest.mark.usefixtures("worker")
def test_call_resend_in_the_cooldown_says_when_to_try_again(worker_env: dict[str, str]) -> None:
    dn, verification = unique_dn("1"), f"cli-{uuid.uuid4()}"
    first = callpass("call", dn, "--verification-id", verification, "--wait", env=worker_env)
    assert first.returncode == 0, first.stderr
    again = ("--verification-id", verification, "--resend", "--wait")
    out = callpass("call", dn, *again, env=worker_env)
    assert out.returncode == 0, out.stderr
    final = out.stdout.splitlines()[-1]
    assert final.startswith("rate_limited") and "next: retry_later at 20" in final
    refused = callpass("call", dn, "--resend", env=worker_env)
    assert refused.returncode == 2 and "--resend: needs --verification-id" in refused.stderr


def test_result_of_an_unknown_id_says_what_pending_means(worker_env: dict[str, str]) -> None:
    out = callpass("result", str(uuid.uuid4()), env=worker_env)
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert shown["state"] == "PENDING" and shown["info"] is None and "no worker" in shown["note"]


def test_readycheck_names_a_broker_that_takes_connections_but_never_answers(
    worker_env: dict[str, str],
) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # the kernel completes each handshake; nothing ever answers
        port = silent.getsockname()[1]
        env = {**worker_env, "CALLPASS_BROKER_URL": f"redis://127.0.0.1:{port}/0"}
        # Without a socket time-out this would hang until the subprocess' own (30 s).
        out = callpass("readycheck", env=env, timeout=30)
    assert out.returncode == 1
    assert f"broker: redis://127.0.0.1:{port}/0 does not answer" in out.stderr
