"""Producers in other languages, run for real against the suite's worker: the Node.js example
(examples/node, celery-node alone) and the redis-cli one (examples/redis-cli, the raw message).

Each starts a call, prints ``PLACED <callid> <pin>``, then the outcome, then the worker's check
of that pin; the pin must be the one the simulator's call carries.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from celery import Celery

from tests.conftest import Simulator, start_worker
from tests.helpers import OUTCOME_SCHEMA, SCHEMAS, task_events, unique_dn
from worker.celery_app import celery_config
from worker.dev.stack import Stack, wait_until
from worker.settings import load_settings

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CHECK_SCHEMA = json.loads((SCHEMAS / "verify_code.v1.json").read_text())
NPM_CI_TIMEOUT_S = 180
EXAMPLE_TIMEOUT_S = 90


def _example_env(worker_env: dict[str, str]) -> dict[str, str]:
    """Only what a user sets: the workers' Redis and queue (and a PATH to find the tools)."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "CALLPASS_REDIS_URL": worker_env["CALLPASS_REDIS_URL"],
        "CALLPASS_QUEUE": worker_env.get("CALLPASS_QUEUE", "callpass"),
    }


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> list[str]:
    proc = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True,
        timeout=EXAMPLE_TIMEOUT_S, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def _assert_verified(lines: list[str], dn: str, sim: Simulator) -> dict[str, Any]:
    """PLACED with the simulator's pin, an answered outcome, a valid check: the outcome."""
    assert len(lines) == 3, lines
    placed = re.fullmatch(r"PLACED (\S+) ([0-9]{4})", lines[0])
    assert placed, lines[0]
    callid, pin = placed.groups()
    calls = [c for c in sim.calls() if c["dn"] == dn]
    assert [(c["callid"], c["pin"]) for c in calls] == [(callid, pin)]
    outcome, check = json.loads(lines[1]), json.loads(lines[2])
    jsonschema.validate(outcome, OUTCOME_SCHEMA)
    assert (outcome["outcome"], outcome["callid"], outcome["pin"]) == ("answered", callid, pin)
    jsonschema.validate(check, CHECK_SCHEMA)
    assert (check["valid"], check["reason"]) == (True, "ok")
    return dict(outcome)


@pytest.fixture(scope="module")
def node_example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/node copied to a temporary directory, its locked packages installed there."""
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        reason = f"{' and '.join(missing)} not found: the Node.js example cannot run"
        if os.environ.get("CALLPASS_TEST_REQUIRE_NODE") == "1":
            pytest.fail(f"the Node.js example is required here (.ci/run): {reason}")
        pytest.skip(reason)
    where = tmp_path_factory.mktemp("node") / "example"
    shutil.copytree(EXAMPLES / "node", where, ignore=shutil.ignore_patterns("node_modules"))
    proc = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund"], cwd=where, capture_output=True, text=True,
        timeout=NPM_CI_TIMEOUT_S, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return where


@pytest.mark.usefixtures("worker")
def test_the_node_example_gets_pin_outcome_and_a_valid_check(
    node_example: Path, worker_env: dict[str, str], sim: Simulator, app: Celery
) -> None:
    """celery-node sends no argsrepr/kwargsrepr: Flower still sees the number masked only."""
    dn = unique_dn("1")
    with task_events(app) as seen:
        lines = _run(["node", "verify.mjs", dn, "3"], node_example, _example_env(worker_env))
        outcome = _assert_verified(lines, dn, sim)

        def received(name: str, uuid: str | None = None) -> list[dict[str, Any]]:
            return [e for e in seen if e["type"] == "task-received" and e.get("name") == name
                    and uuid in (None, e.get("uuid"))]  # fmt: skip

        start = wait_until(
            lambda: received("callpass.start_call", outcome["request_id"]), 20, "its start"
        )[0]
        checks = wait_until(lambda: received("callpass.verify_code"), 20, "its check")
    assert dn not in json.dumps(start) and dn[:4] in start["kwargs"] and "*" in start["kwargs"]
    assert outcome["pin"] not in start["kwargs"] + start["args"]
    assert {e["args"] for e in checks} == {"(request_id, <code>)"}


@pytest.mark.usefixtures("worker")
def test_the_redis_cli_example_gets_pin_outcome_and_a_valid_check(
    worker_env: dict[str, str], sim: Simulator, tmp_path: Path
) -> None:
    dn = unique_dn("1")
    script = EXAMPLES / "redis-cli" / "start_call.sh"
    lines = _run(["bash", str(script), dn, "3"], tmp_path, _example_env(worker_env))
    assert len(lines) == 3, lines
    records = [json.loads(line) for line in lines[1:]]
    assert [r["status"] for r in records] == ["SUCCESS", "SUCCESS"]
    _assert_verified([lines[0], *(json.dumps(r["result"]) for r in records)], dn, sim)


def test_the_redis_cli_example_keeps_a_password_out_of_redis_clis_arguments(
    stack: Stack, app: Celery, worker_env: dict[str, str], sim: Simulator, tmp_path: Path
) -> None:
    """`ps` shows every process' arguments to every user: the password goes in REDISCLI_AUTH."""
    password = "s3cret-for-the-example"
    _, plain = stack.start_redis(extra_args=["--requirepass", password])
    url = plain.replace("redis://", f"redis://:{password}@", 1)
    env = {**worker_env, "CALLPASS_REDIS_URL": url, "CALLPASS_QUEUE": "cli-auth"}
    producer = Celery("cli-auth-producer", set_as_current=False)
    producer.config_from_object(celery_config(load_settings(env)))
    worker = start_worker(stack, producer, env, "cli-auth")
    shims = tmp_path / "bin"
    shims.mkdir()
    seen = tmp_path / "argv.log"
    real = shutil.which("redis-cli")
    assert real is not None
    (shims / "redis-cli").write_text(
        f'#!/bin/sh\necho "$* auth=${{REDISCLI_AUTH:+set}}" >> {seen}\nexec {real} "$@"\n'
    )
    (shims / "redis-cli").chmod(0o755)
    example_env = {**_example_env(env), "PATH": f"{shims}:{os.environ.get('PATH', '/usr/bin')}"}
    try:
        dn = unique_dn("1")
        lines = _run(
            ["bash", str(EXAMPLES / "redis-cli" / "start_call.sh"), dn, "3"], tmp_path, example_env
        )
    finally:
        worker.stop()
        producer.close()
    records = [json.loads(line) for line in lines[1:]]
    _assert_verified([lines[0], *(json.dumps(r["result"]) for r in records)], dn, sim)
    logged = seen.read_text()  # a message spans lines: each call's record ends "auth=…"
    assert logged.count("auth=set") >= 4 and not logged.rstrip().endswith("auth=")
    assert "auth=\n" not in logged and password not in logged
