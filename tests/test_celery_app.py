"""Explicit construction: ``create_app(settings)`` declares our tasks and connects its worker's
signal handlers for that app alone; ``worker.celery_app.app`` is built from the environment
when it is first read, not when the module is imported; a worker process builds its pipeline
once."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from celery import Celery, signals
from celery.backends.base import DisabledBackend

from callpass_producer.contracts.names import POLL_TASK, START_TASK, VERIFY_TASK, WEBHOOK_TASK
from worker.celery_app import create_app, create_flower_app, environment_settings
from worker.dev.stack import child_env
from worker.process.parts import WorkerParts
from worker.settings import Settings, load_settings

TASK_NAMES = {START_TASK, POLL_TASK, VERIFY_TASK, WEBHOOK_TASK}
NOWHERE = {"CALLPASS_REDIS_URL": "redis://127.0.0.1:1/0"}  # nothing listens; nothing connects


def _settings(**env: str) -> Settings:
    return load_settings({**NOWHERE, **env})


def test_create_app_declares_our_tasks_on_that_app_only() -> None:
    app = create_app(_settings())
    assert set(app.tasks) >= TASK_NAMES
    assert all(app.tasks[name].app is app for name in TASK_NAMES)
    assert create_app(_settings()).tasks[START_TASK] is not app.tasks[START_TASK]
    # Not shared tasks: an app created afterwards (a producer's) does not get them.
    producer = Celery("producer", set_as_current=False)
    assert not TASK_NAMES & set(producer.tasks)
    assert app.conf.task_default_queue == "callpass"
    assert app.conf.result_backend == "redis://127.0.0.1:1/0"


class _Heart:
    """Stands in for celery.worker.heartbeat.Heart (hashable, as signal senders are)."""

    def __init__(self, eventer: object) -> None:
        self.eventer = eventer


def test_each_apps_signal_handlers_use_its_own_settings(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    app_one = create_app(_settings(CALLPASS_HEARTBEAT_FILE=str(first)))
    create_app(_settings(CALLPASS_HEARTBEAT_FILE=str(second)))
    # What Celery's heartbeat sends: itself, which knows its event dispatcher's app.
    signals.heartbeat_sent.send(sender=_Heart(SimpleNamespace(app=app_one)))
    assert first.exists()
    assert not second.exists()  # the other app's handler did not answer for this worker


def test_the_flower_app_has_no_result_backend_whatever_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Celery's --result-backend lands here, and wins over an app's result_backend setting.
    monkeypatch.setenv("CELERY_RESULT_BACKEND", "redis://127.0.0.1:1/0")
    app = create_flower_app(_settings())
    assert isinstance(app.backend, DisabledBackend)
    assert environment_settings(app) is None  # built here, not by worker.celery_app's app


def _python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = child_env(env)
    for key in [k for k in clean if k.startswith("CALLPASS_") and k not in env]:
        del clean[key]
    return subprocess.run(
        [sys.executable, "-c", code],
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_module_app_is_built_from_the_environment_when_first_read() -> None:
    proc = _python(
        "import celery._state as state, worker.celery_app as module\n"
        "assert not state._apps, 'an app exists before app is read'\n"
        "app = module.app\n"
        "assert module.app is app and module.environment_settings(app) is not None\n"
        "assert module.flower_app is not app\n"
        "print(app.conf.broker_url, sorted(n for n in app.tasks if n.startswith('callpass.')))\n",
        NOWHERE,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split(" ", 1) == [
        "redis://127.0.0.1:1/0",
        f"{sorted(TASK_NAMES)}\n",
    ]


def test_reading_the_module_app_with_a_malformed_setting_exits_with_one_line() -> None:
    proc = _python(
        "import worker.celery_app as module\nprint('imported', flush=True)\nmodule.app\n",
        {**NOWHERE, "CALLPASS_POLL_INTERVAL_S": "abc"},
    )
    assert proc.returncode == 1
    assert proc.stdout == "imported\n"  # the import itself went through
    assert proc.stderr == (
        "callpass: configuration error: CALLPASS_POLL_INTERVAL_S: must be a number, got 'abc'\n"
    )


def test_the_module_has_no_other_attributes() -> None:
    import worker.celery_app as module

    with pytest.raises(AttributeError, match="no attribute 'application'"):
        _ = module.application


def test_a_process_builds_its_pipeline_once_and_a_forked_child_its_own() -> None:
    app = Celery("parts", set_as_current=False)
    parts = WorkerParts(_settings(), app)
    seen = []
    threads = [threading.Thread(target=lambda: seen.append(parts.pipeline())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    pipeline = parts.pipeline()
    assert all(p is pipeline for p in seen)
    assert parts.webhook_deliverer().store is pipeline.webhooks.store  # type: ignore[union-attr]
    pid = os.fork()
    if pid == 0:  # the child: a pipeline of its own, built once too
        child = parts.pipeline()
        os._exit(0 if child is not pipeline and parts.pipeline() is child else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert parts.pipeline() is pipeline


def test_task_events_go_out_without_publisher_confirms_while_tasks_keep_them() -> None:
    """A pool thread waiting for an event's confirm under the dispatcher's lock could freeze
    the worker (worker.broker.event_dispatcher); the messages we send keep their confirms."""
    settings = load_settings(
        {"CALLPASS_REDIS_URL": "redis://127.0.0.1:1/0", "CALLPASS_BROKER_URL": "amqp://h:5672//"}
    )
    app = create_app(settings)
    assert app.conf.broker_transport_options["confirm_publish"] is True
    with app.connection_for_write() as connection:  # not connected: nothing listens there
        dispatcher = app.events.Dispatcher(connection, enabled=False)
        assert "confirm_publish" not in dispatcher.connection.transport_options
    with app.connection_for_write() as lent:  # lent with a channel (a producer pool's): kept
        app.events.Dispatcher(lent, enabled=False, channel=SimpleNamespace())
        assert lent.transport_options["confirm_publish"] is True
    assert app.conf.broker_transport_options["confirm_publish"] is True
