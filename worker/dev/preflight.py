"""What ``callpass run`` checks before it starts anything, so a piece that cannot start is
named in one line (which, and why) rather than found by a time-out and a traceback."""

from __future__ import annotations

import errno
import socket
from collections.abc import Mapping

from worker.dev.stack import ensure_debian_program
from worker.ops.readiness import redis_problem
from worker.settings.model import is_rabbitmq

__all__ = ["StartRefused", "check_before_start"]


class StartRefused(RuntimeError):
    """A piece of the local stack cannot start; the message says which and why."""


def check_before_start(env: Mapping[str, str], flower_port: int) -> None:
    """Raise :class:`StartRefused` for the first piece that cannot start."""
    if flower_port:
        _check_port_free(flower_port)
    configured = env.get("CALLPASS_REDIS_URL") or env.get("CALLPASS_BROKER_URL")
    if configured:
        _check_redis_answers(configured)
    elif ensure_debian_program("redis-server", "redis-server") is None:
        raise StartRefused(
            "Redis: redis-server is not installed and could not be installed here "
            "(install the redis-server package, or set CALLPASS_REDIS_URL to a running Redis)"
        )


def _check_port_free(port: int) -> None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.bind(("127.0.0.1", port))
    except OSError as exc:
        why = "is taken (another Flower?)" if exc.errno == errno.EADDRINUSE else f"({exc})"
        raise StartRefused(
            f"Flower: port {port} on 127.0.0.1 {why}; pick another with --flower-port "
            f"(make run RUN_ARGS='--flower-port 0' takes a free one)"
        ) from None
    finally:
        probe.close()


def _check_redis_answers(url: str) -> None:
    if is_rabbitmq(url):
        return  # the worker's own start-up says whether RabbitMQ answers
    problem = redis_problem("Redis", url)
    if problem:
        raise StartRefused(
            f"{problem}; start it, or unset CALLPASS_REDIS_URL and CALLPASS_BROKER_URL to run "
            "one of our own"
        )
