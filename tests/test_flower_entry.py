"""Real Flower processes: an empty basic-auth entry never opens Flower, however it is started.

A trailing comma (``admin:pw,``) gives Flower an empty credential, and ``Authorization: Basic
=`` decodes to an empty string: Flower would let that header in on ``/`` and ``/api/workers``.
Each start below either stops before Flower binds, or is probed with that header. The address
is ``127.1``: beyond loopback to the guard (it does not guess what a name resolves to), while
Flower binds 127.0.0.1, so nothing here listens beyond this machine.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import click
import pytest

from worker.dev.stack import Proc, Stack, child_env, free_port, wait_until

LOGIN = "admin:long-enough-password"
#: The ways to start Flower, up to where its own options begin. Without ``-A``, Celery's
#: default app: worker.celery_app is never read.
LAUNCHERS = {
    "celery-A-app": ["-m", "celery", "-A", "worker.celery_app", "flower"],
    "callpass-flower": ["-m", "worker.cli", "flower"],
    "celery-without-A": ["-m", "celery", "--broker={redis_url}", "flower"],
}
START_TIMEOUT_S = 60
LOOPBACK = "--address=127.0.0.1"


def _port_answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _status(port: int, path: str, authorization: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Authorization": authorization})
        return conn.getresponse().status
    finally:
        conn.close()


def _flower_env(redis_url: str, extra: dict[str, str]) -> dict[str, str]:
    env = child_env({"CALLPASS_REDIS_URL": redis_url})
    for key in [k for k in env if k.startswith(("FLOWER_", "CALLPASS_FLOWER_"))]:
        del env[key]  # the runner's own Flower settings must not decide these tests
    env.update(extra)
    return env


def _start(
    stack: Stack,
    launcher: str,
    args: list[str],
    env: dict[str, str],
    launchers: dict[str, list[str]] = LAUNCHERS,
) -> tuple[Proc, int, str]:
    """Start Flower; wait until it exits or listens: (process, port, "exited"/"listening")."""
    port = free_port()
    start = [a.format(redis_url=env["CALLPASS_REDIS_URL"]) for a in launchers[launcher]]
    name = f"flower-{launcher}-{port}"  # a log file of its own
    proc = stack.spawn(name, [sys.executable, *start, f"--port={port}", *args], env)

    def settled() -> str | None:
        if not proc.alive():
            return "exited"
        return "listening" if _port_answers(port) else None

    return proc, port, wait_until(settled, START_TIMEOUT_S, f"{name} to exit or listen")


def _empty_login_statuses(port: int) -> dict[str, int]:
    return {path: _status(port, path, "Basic =") for path in ("/", "/api/workers")}


@pytest.fixture
def empty_conf(tmp_path: Path) -> Path:
    # Our own empty config file, so a flowerconfig.py in the working directory cannot decide.
    conf = tmp_path / "flowerconfig.py"
    conf.write_text("")
    return conf


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
@pytest.mark.parametrize("source", ["argument", "FLOWER_BASIC_AUTH", "CALLPASS_FLOWER_BASIC_AUTH"])
def test_a_trailing_comma_never_lets_an_empty_login_in(
    stack: Stack, redis_url: str, empty_conf: Path, launcher: str, source: str
) -> None:
    args = ["--address=127.1", f"--conf={empty_conf}"]
    extra: dict[str, str] = {}
    if source == "argument":
        args.append(f"--basic-auth={LOGIN},")
    else:
        extra[source] = f"{LOGIN},"
    proc, port, outcome = _start(stack, launcher, args, _flower_env(redis_url, extra))
    if outcome == "listening":
        try:
            statuses = _empty_login_statuses(port)
        finally:
            proc.stop()
        # Today's main: {'/': 200, '/api/workers': 200}.
        assert statuses == {"/": 401, "/api/workers": 401}
        pytest.fail("Flower started with an empty basic-auth entry instead of refusing")
    assert proc.popen.returncode not in (0, None)
    log = proc.log_path.read_text()
    assert "Traceback" not in log
    if source != "CALLPASS_FLOWER_BASIC_AUTH":
        assert "callpass: Flower's basic auth" in log and "entry #2 empty" in log
    elif launcher == "celery-without-A":  # not our app: our setting never reaches Flower
        assert "callpass: Flower would listen on '127.1' without authentication" in log
    else:
        assert "callpass: configuration error: CALLPASS_FLOWER_BASIC_AUTH: entry #2" in log
    assert "long-enough-password" not in log  # the refusal never quotes the password
    assert not _port_answers(port)


def test_flower_without_our_app_is_guarded_too(
    stack: Stack, redis_url: str, empty_conf: Path
) -> None:
    """``celery --broker=… flower`` (no ``-A``): the entry point guards Flower's command."""
    names = [ep.value for ep in entry_points(group="celery.commands")]
    assert "worker.flower.entry:guarded_flower" in names, "reinstall the project: make install"
    args = ["--address=127.1", f"--conf={empty_conf}"]
    proc, _, outcome = _start(stack, "celery-without-A", args, _flower_env(redis_url, {}))
    if outcome == "listening":
        proc.stop()
    assert outcome == "exited", "Flower without -A listened beyond loopback with no login"
    log = proc.log_path.read_text()
    assert "callpass: Flower would listen on '127.1' without authentication" in log


@pytest.mark.parametrize("launcher", ["callpass-flower", "celery-A-app"])
def test_our_flower_serves_with_a_sound_login_from_our_settings(
    stack: Stack, redis_url: str, empty_conf: Path, launcher: str
) -> None:
    """Both hand Flower CALLPASS_FLOWER_BASIC_AUTH: `callpass flower` itself, and the entry
    point's guard when the app is worker.celery_app's."""
    env = _flower_env(redis_url, {"CALLPASS_FLOWER_BASIC_AUTH": LOGIN})
    args = ["--address=127.1", f"--conf={empty_conf}"]
    proc, port, outcome = _start(stack, launcher, args, env)
    assert outcome == "listening", proc.log_tail()
    try:
        assert _empty_login_statuses(port) == {"/": 401, "/api/workers": 401}
        good = "Basic " + base64.b64encode(LOGIN.encode()).decode()
        assert _status(port, "/", good) == 200
    finally:
        proc.stop()
    assert "callpass:" not in proc.log_path.read_text()


def _get_json(port: int, path: str, authorization: str = "") -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Authorization": authorization} if authorization else {})
        response = conn.getresponse()
        body = response.read().decode()
        return response.status, json.loads(body) if response.status == 200 else body
    finally:
        conn.close()


@pytest.mark.usefixtures("worker")
def test_flowers_http_api_answers_with_the_login_as_the_readme_shows(
    stack: Stack, redis_url: str, empty_conf: Path
) -> None:
    env = _flower_env(redis_url, {"CALLPASS_FLOWER_BASIC_AUTH": LOGIN})
    proc, port, outcome = _start(stack, "callpass-flower", [LOOPBACK, f"--conf={empty_conf}"], env)
    assert outcome == "listening", proc.log_tail()
    try:
        assert _get_json(port, "/api/workers")[0] == 401
        good = "Basic " + base64.b64encode(LOGIN.encode()).decode()
        status, workers = wait_until(
            lambda: (r := _get_json(port, "/api/workers?refresh=1", good))[1] and r,
            30,
            "Flower's API listing the worker",
        )
        assert status == 200 and any(name.startswith("worker@") for name in workers)
    finally:
        proc.stop()


def test_flowers_api_without_a_login_needs_flower_unauthenticated_api(
    stack: Stack, redis_url: str, empty_conf: Path
) -> None:
    for opened in (False, True):
        extra = {"FLOWER_UNAUTHENTICATED_API": "true"} if opened else {}
        env = _flower_env(redis_url, extra)
        proc, port, outcome = _start(
            stack, "callpass-flower", [LOOPBACK, f"--conf={empty_conf}"], env
        )
        assert outcome == "listening", proc.log_tail()
        try:
            status, body = _get_json(port, "/api/workers")
        finally:
            proc.stop()
        if opened:
            assert status == 200
        else:
            assert status == 401 and "FLOWER_UNAUTHENTICATED_API" in body


def test_the_hook_wraps_flowers_command_once() -> None:
    import worker.flower.entry as entry

    command = entry.guarded_flower  # what Celery's CLI loads through our entry point
    from flower.command import flower

    assert command is flower
    wrapped = command.callback
    assert entry.guard_flower_command(command).callback is wrapped  # not wrapped twice
    with pytest.raises(AttributeError):
        _ = entry.no_such_attribute


def test_callpass_flower_help_is_flowers_own(empty_conf: Path) -> None:
    out = subprocess.run(
        [sys.executable, *LAUNCHERS["callpass-flower"], "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env=_flower_env("redis://127.0.0.1:1/0", {}),
        cwd=empty_conf.parent,
    )
    assert out.returncode == 0, out.stderr
    assert "flower [OPTIONS] [TORNADO_ARGV]" in out.stdout and "callpass:" not in out.stderr


def test_the_guarded_command_drops_any_result_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """`celery --result-backend=redis://… flower` would let Flower's result API show pins."""
    from types import SimpleNamespace

    import worker.flower.entry as entry

    seen: dict[str, object] = {}

    def flowers_callback(ctx: object, tornado_argv: tuple[str, ...]) -> None:
        seen["backend"] = ctx.obj.app.conf.result_backend  # type: ignore[attr-defined]

    command = SimpleNamespace(callback=click.pass_context(flowers_callback))
    entry.guard_flower_command(command)
    monkeypatch.setattr(entry, "refuse_unsafe_flower", lambda args, environ: None)
    app = SimpleNamespace(conf=SimpleNamespace(result_backend="redis://127.0.0.1:1/0"))
    # As Click runs it: the context is the current one, and the callback gets only the options.
    with click.Context(click.Command("flower"), obj=SimpleNamespace(app=app)):
        command.callback(tornado_argv=())
    assert seen == {"backend": None}
    assert app.backend_cls == "disabled"  # type: ignore[attr-defined]


#: Each launcher, Celery's given a result backend on its command line (which Celery puts in
#: CELERY_RESULT_BACKEND, over any app's own setting).
WITH_A_BACKEND = {
    **LAUNCHERS,
    "celery-A-app": [
        "-m", "celery", "-A", "worker.celery_app", "--result-backend={redis_url}", "flower"
    ],
    "celery-without-A": [
        "-m", "celery", "--broker={redis_url}", "--result-backend={redis_url}", "flower"
    ],
}  # fmt: skip


@pytest.mark.parametrize("launcher", sorted(WITH_A_BACKEND))
def test_flowers_result_api_never_reads_an_outcome(
    stack: Stack, redis_url: str, empty_conf: Path, launcher: str
) -> None:
    """A stored outcome (pin included) is in Redis; Flower, however started, has no result
    backend to read it with: its result API answers 503, not the document."""
    from celery import Celery

    writer = Celery("outcome-writer", set_as_current=False, backend=redis_url, broker=redis_url)
    task_id = f"flower-result-{launcher}"
    writer.backend.store_result(task_id, {"outcome": "answered", "pin": "4321"}, "SUCCESS")
    env = _flower_env(redis_url, {"FLOWER_BASIC_AUTH": LOGIN})
    args = ["--address=127.0.0.1", f"--conf={empty_conf}"]
    proc, port, outcome = _start(stack, launcher, args, env, WITH_A_BACKEND)
    assert outcome == "listening", proc.log_tail()
    good = "Basic " + base64.b64encode(LOGIN.encode()).decode()
    try:
        assert _status(port, f"/api/task/result/{task_id}", good) == 503
        assert _status(port, "/api/workers", good) == 200  # the login works: not a 401 test
    finally:
        proc.stop()


def test_dropping_the_backend_also_drops_one_already_read_in_any_thread() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from celery import Celery

    from worker.flower.entry import drop_result_backend

    # Nothing connects: a Redis backend object is built lazily, and nothing is stored here.
    app = Celery("drop-test", set_as_current=False, backend="redis://127.0.0.1:1/0")
    with ThreadPoolExecutor(max_workers=1) as other_thread:
        assert type(app.backend).__name__ == "RedisBackend"
        assert other_thread.submit(lambda: type(app.backend).__name__).result() == "RedisBackend"
        drop_result_backend(app)
        assert type(app.backend).__name__ == "DisabledBackend"
        assert other_thread.submit(lambda: type(app.backend).__name__).result() == (
            "DisabledBackend"
        )
