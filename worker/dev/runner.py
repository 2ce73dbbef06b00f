"""``callpass run`` (``make run``): a whole local stack, a demo batch, then serve until Ctrl-C.

Starts a Redis of its own unless ``CALLPASS_BROKER_URL``/``CALLPASS_REDIS_URL`` is set, the
simulator unless a real API token is set, one worker and Flower; runs the demo; prints the
Flower URL; stops everything it started on Ctrl-C (or at once with ``--exit-after-demo``).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

import requests
from celery import Celery

from worker.celery_app import create_app
from worker.dev.demo import run_demo
from worker.dev.preflight import StartRefused, check_before_start
from worker.dev.stack import Stack, child_env, free_port, wait_until
from worker.masking import error_line, redact_url
from worker.producer import default_outbox
from worker.settings import SIMULATOR_DEV_TOKEN, Settings, load_settings

__all__ = ["run_stack"]

DEFAULT_FLOWER_PORT = 5555


def run_stack(run_dir: Path, exit_after_demo: bool, demo_timeout_s: int, flower_port: int) -> int:
    load_settings()  # a malformed setting stops the run before anything starts
    try:
        check_before_start(os.environ, flower_port)
    except StartRefused as exc:
        print(f"callpass run: cannot start {exc}", file=sys.stderr)
        return 2
    stack = Stack(run_dir)
    stop = _stop_on_signals()
    try:
        try:
            app, settings, flower_url = _start_pieces(stack, flower_port)
        except (RuntimeError, TimeoutError) as exc:  # a piece that exited or never came up
            print(f"callpass run: {error_line(exc)} (logs: {run_dir}/)", file=sys.stderr)
            return 1
        run_demo(app, default_outbox(settings), timeout_s=demo_timeout_s)
        print(f"\nFlower: {flower_url}  (tasks: {flower_url}tasks)")
        if exit_after_demo:
            return 0
        print("serving; press Ctrl-C to stop everything this run started")
        return _serve(stack, stop)
    finally:
        print("stopping ...")
        stack.stop_all()


def _start_pieces(stack: Stack, flower_port: int) -> tuple[Celery, Settings, str]:
    overrides = _start_backing_services(stack)
    env = child_env(overrides)
    # This process's app (a producer's) and the children are configured alike.
    settings = load_settings({**os.environ, **overrides})
    app = create_app(settings)
    _start_worker(stack, env, app)
    return app, settings, _start_flower(stack, env, flower_port)


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    return stop


def _start_backing_services(stack: Stack) -> dict[str, str]:
    """A Redis and the simulator where none is configured: the variables that point at them."""
    overrides: dict[str, str] = {}
    if not (os.environ.get("CALLPASS_REDIS_URL") or os.environ.get("CALLPASS_BROKER_URL")):
        _, redis_url = stack.start_redis()
        overrides["CALLPASS_REDIS_URL"] = redis_url
        print(f"redis:     {redact_url(redis_url, keep_path=True)} (started for this run)")
    token = os.environ.get("CALLPASS_API_TOKEN", SIMULATOR_DEV_TOKEN)
    if token == SIMULATOR_DEV_TOKEN:
        _, sim_url = stack.start_simulator()
        overrides["CALLPASS_API_URL"] = sim_url
        print(f"simulator: {redact_url(sim_url, keep_path=True)} (no real API token configured)")
    else:
        print("API:       the real CallPassword service (CALLPASS_API_TOKEN is set)")
    return overrides


def _start_worker(stack: Stack, env: dict[str, str], app: Celery) -> None:
    worker = stack.start_worker(env, "worker")

    def worker_ready() -> bool:
        if not worker.alive():
            raise RuntimeError(f"the worker exited:\n{worker.log_tail()}")
        return bool(app.control.ping(timeout=0.5))

    wait_until(worker_ready, 60, "worker")
    print(f"worker:    up (log: {worker.log_path})")


def _start_flower(stack: Stack, env: dict[str, str], flower_port: int) -> str:
    port = flower_port if flower_port else free_port()
    stack.start_flower(env, port)  # through `callpass flower`, the guarded entry point
    flower_url = f"http://127.0.0.1:{port}/"
    # Flower opens its port before it listens to events: tasks sent before then would
    # show in Flower without a name. Its /metrics (open without a login) counts the
    # workers it has heard from.
    wait_until(
        lambda: _flower_sees_a_worker(flower_url), 30, "Flower receiving the worker's events"
    )
    print(f"flower:    {flower_url}\n")
    return flower_url


def _serve(stack: Stack, stop: threading.Event) -> int:
    while not stop.wait(1.0):
        for proc in stack.procs:
            if not proc.alive():
                print(f"{proc.name} exited ({proc.popen.returncode}); stopping")
                return 1
    return 0


def _flower_sees_a_worker(flower_url: str) -> bool:
    try:
        metrics = requests.get(flower_url + "metrics", timeout=2).text
    except requests.RequestException:
        return False
    return any(
        line.startswith("flower_worker_online{") and line.endswith(" 1.0")
        for line in metrics.splitlines()
    )
