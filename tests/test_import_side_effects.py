"""Importing any module of the worker does nothing: no exit, no environment write, no Celery
app, no thread, no socket.

Each case imports every module under ``worker/`` and ``tasks/`` (a pkgutil walk) in a fresh
interpreter that watches itself: an audit hook records sockets, connections, environment
writes and new threads as they happen, and snapshots before and after catch what the hook
cannot (an ``os.environ`` entry, an app registered with Celery, a thread still running).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from worker.dev.stack import child_env

#: Runs in the child. Prints one JSON report as its last line; exits 0 only if the walk did.
_PROBE = r"""
import json, os, sys, threading

OURS = ("worker", "tasks")

events = []
WATCHED = ("socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo",
           "os.putenv", "os.unsetenv", "_thread.start_new_thread")

def hook(event, args):
    if event not in WATCHED:
        return
    # The module whose top-level code caused it: another library's own import (urllib3
    # binds a socket to learn whether IPv6 works) is that library's business, not ours.
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_name != "<module>":
        frame = frame.f_back
    module = "" if frame is None else frame.f_globals.get("__name__", "")
    if frame is None or module == "__main__" or module.split(".")[0] in OURS:
        events.append(f"{event} in {module}:{frame.f_lineno if frame else '?'}")

import celery._state as celery_state
import importlib, pkgutil

environ_before = dict(os.environ)
threads_before = {t.ident for t in threading.enumerate()}
apps_before = len(celery_state._apps)
registered = []
_register = celery_state._register_app
celery_state._register_app = lambda app: (registered.append(repr(app)), _register(app))
sys.argv = json.loads(sys.stdin.read())  # the command line a module might look at
sys.addaudithook(hook)

imported = []
for package in OURS:
    module = importlib.import_module(package)
    imported.append(package)
    for info in pkgutil.walk_packages(module.__path__, package + "."):
        importlib.import_module(info.name)
        imported.append(info.name)

print(json.dumps({
    "imported": imported,
    "events": sorted(set(events)),
    "environ_changed": sorted(
        k for k in set(environ_before) | set(os.environ)
        if environ_before.get(k) != os.environ.get(k)
    ),
    "apps_registered": registered,
    "apps": len(celery_state._apps) - apps_before,
    "default_app": celery_state.default_app is not None,
    "current_app": getattr(celery_state._tls, "current_app", None) is not None,
    "new_threads": sorted(
        t.name for t in threading.enumerate() if t.ident not in threads_before
    ),
}))
"""

BROKEN = {
    "CALLPASS_POLL_INTERVAL_S": "abc",  # malformed: reading settings would exit
    "CALLPASS_REDIS_URL": "redis://127.0.0.1:1/0",  # nothing listens: a connection would fail
}
SOUND = {
    "CALLPASS_REDIS_URL": "redis://127.0.0.1:1/0",
    "CALLPASS_FLOWER_BASIC_AUTH": "admin:long-enough-password",
}
CASES = {
    # The settings a worker refuses, under a worker's command line.
    "broken-settings": (BROKEN, ["celery", "-A", "worker.celery_app", "worker"]),
    # Sound settings under Flower's command line: an import-time Flower hook would write the
    # login into the environment and switch the result backend.
    "flower-command-line": (SOUND, ["celery", "-A", "worker.celery_app", "flower"]),
}


def _environment(settings: dict[str, str]) -> dict[str, str]:
    env = child_env(settings)
    for key in [k for k in env if k.startswith(("CALLPASS_", "FLOWER_", "CELERY_"))]:
        if key not in settings:
            del env[key]  # the API token among them: unset
    return env


@pytest.mark.parametrize("case", sorted(CASES))
def test_importing_every_module_has_no_side_effect(case: str) -> None:
    settings, argv = CASES[case]
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE],
        input=json.dumps(argv),
        env=_environment(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    exit_status = proc.returncode
    assert exit_status == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout.splitlines()[-1])
    assert {"worker.celery_app", "worker.process.wiring", "tasks.calls", "tasks.webhooks"} <= set(
        report["imported"]
    )
    events: list[str] = report["events"]
    assert events == []
    assert report["environ_changed"] == []
    assert report["apps_registered"] == [] and report["apps"] == 0
    assert not report["default_app"] and not report["current_app"]
    assert report["new_threads"] == []
