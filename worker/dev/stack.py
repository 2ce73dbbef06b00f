"""Start and stop the local pieces (Redis, simulator, worker, Flower) as child processes.

Used by ``callpass run`` (``make run``), the test suite and the benchmarks, so all three run
the same real parts the same way. Everything listens on loopback and is stopped on exit.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from celery import Celery

__all__ = [
    "Proc",
    "Stack",
    "answers",
    "child_env",
    "delete_queues",
    "free_port",
    "wait_for_worker",
    "wait_until",
]

T = TypeVar("T")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    check: Callable[[], T | None], timeout_s: float, what: str, interval_s: float = 0.05
) -> T:
    """Call ``check`` until it returns something truthy; raise ``TimeoutError`` naming ``what``."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # the thing is not up yet; remember why
            last_error = exc
        time.sleep(interval_s)
    detail = f" (last error: {last_error})" if last_error else ""
    raise TimeoutError(f"{what} not ready within {timeout_s:g} s{detail}")


def ensure_debian_program(program: str, package: str) -> str | None:
    """Path of ``program``; where it is missing and we are root on Debian, ``package`` is
    installed with apt-get first. ``None`` when it is still missing."""
    binary = shutil.which(program)
    if binary is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
            check=True,
            env=env,
        )
        binary = shutil.which(program)
    return binary


def ensure_redis_server() -> str:
    """Path of ``redis-server``; installed with apt-get first where it is missing (as root)."""
    binary = ensure_debian_program("redis-server", "redis-server")
    if binary is None:
        raise RuntimeError("redis-server is missing; install it (apt-get install redis-server)")
    return binary


def answers(url: str, default_port: int) -> bool:
    """Whether something accepts a TCP connection at ``url``'s host and port (within 1 s)."""
    parts = urlsplit(url)
    address = (parts.hostname or "127.0.0.1", parts.port or default_port)
    try:
        with socket.create_connection(address, 1):
            return True
    except OSError:
        return False


def delete_queues(app: Celery) -> None:
    """Delete ``app``'s queues and their exchanges from its broker (a shared RabbitMQ keeps
    what a test or benchmark declared)."""
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        for queue in app.amqp.queues.values():
            queue.bind(channel).delete()
            queue.exchange.bind(channel).delete()


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> int | None:
        if self.alive():
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        return self.popen.returncode

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Stack:
    """A set of child processes sharing one run directory for logs and data."""

    run_dir: Path
    python: str = sys.executable
    procs: list[Proc] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)

    def spawn(self, name: str, argv: list[str], env: Mapping[str, str] | None = None) -> Proc:
        log_path = self.run_dir / f"{name}.log"
        log = open(log_path, "ab")  # noqa: SIM115 - the child owns it for its whole life
        popen = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            start_new_session=True,  # a Ctrl-C in the terminal reaches us, not the children
        )
        log.close()
        proc = Proc(name, popen, log_path)
        self.procs.append(proc)
        return proc

    def _check_alive(self, proc: Proc) -> None:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}):\n{proc.log_tail()}")

    def start_redis(
        self, port: int | None = None, appendonly: bool = False, extra_args: Sequence[str] = ()
    ) -> tuple[Proc, str]:
        """A redis-server of our own; ``extra_args`` (``--name value`` pairs) come last and win."""
        binary = ensure_redis_server()
        port = port or free_port()
        data = self.run_dir / f"redis-{port}"
        data.mkdir(exist_ok=True)
        argv = [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(data),
            "--save",
            "",
            "--appendonly",
            "yes" if appendonly else "no",
            # Redis' default, said out loud: the worker refuses a Redis that may evict records.
            "--maxmemory-policy",
            "noeviction",
            "--protected-mode",
            "yes",
            "--daemonize",
            "no",
            *extra_args,
        ]
        proc = self.spawn(f"redis-{port}", argv)

        def up() -> bool:
            self._check_alive(proc)
            return _port_open(port)

        wait_until(up, 15, f"redis-server on port {port}")
        return proc, f"redis://127.0.0.1:{port}/0"

    def start_simulator(
        self, *extra: str, port: int | None = None, prefix: Sequence[str] = ()
    ) -> tuple[Proc, str]:
        """Start the simulator; ``prefix`` runs it through another command (a namespace's
        ``ip netns exec NAME``)."""
        ready = self.run_dir / f"simulator-{time.monotonic_ns()}.url"
        argv = [
            *prefix,
            self.python,
            "-m",
            "simulator",
            "--port",
            str(port or 0),
            "--ready-file",
            str(ready),
        ]
        proc = self.spawn("simulator", argv + list(extra))

        def up() -> str | None:
            self._check_alive(proc)
            return ready.read_text() if ready.exists() else None

        return proc, wait_until(up, 20, "simulator")

    def _celery(self, *argv: str) -> list[str]:
        return [self.python, "-m", "celery", "-A", "worker.celery_app", *argv]

    def start_worker(self, env: Mapping[str, str], name: str = "worker", *extra: str) -> Proc:
        argv = [
            *self._celery("worker"),
            "--hostname",
            f"{name}@%h",
            "--loglevel",
            env.get("CALLPASS_LOG_LEVEL", "INFO"),
            "--without-mingle",
            "--without-gossip",
            *extra,
        ]
        return self.spawn(name, argv, env)

    def start_flower(self, env: Mapping[str, str], port: int) -> Proc:
        # The supported entry point: the guard runs before Flower starts (worker/flower/entry.py).
        argv = [self.python, "-m", "worker.cli", "flower", "--address=127.0.0.1", f"--port={port}"]
        proc = self.spawn("flower", argv, env)

        def up() -> bool:
            self._check_alive(proc)
            return _port_open(port)

        wait_until(up, 30, "Flower")
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()


def wait_for_worker(app: Celery, proc: Proc, name: str, timeout_s: float = 60) -> None:
    """Wait until the worker ``name`` answers a ping through ``app``'s broker; raise with its
    log's tail if it exits first."""
    node = f"{name}@{socket.gethostname()}"

    def ready() -> bool:
        if not proc.alive():
            raise RuntimeError(f"{name} exited:\n{proc.log_tail()}")
        return bool(app.control.ping(destination=[node], timeout=0.5))

    wait_until(ready, timeout_s, name)


def child_env(overrides: Mapping[str, str]) -> dict[str, str]:
    """The current environment plus ``overrides``, with this project importable."""
    env = dict(os.environ)
    env.update(overrides)
    root = str(Path(__file__).resolve().parents[2])  # the repository: worker/dev/ is two down
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env
