"""The installed Flower's own option handling, as the Flower tests' reference.

``flower.command.apply_env_options`` / ``apply_options`` change Tornado's global options and
the root logger, so they run in an interpreter of their own: one per :class:`FlowerResolver`,
resolving one configuration per line (``{"args", "env", "cwd"}`` in, the options Flower ends up
with, or the error that stops it, out). tests/test_flower_guard.py checks our reading of the
options against it; tests/test_flower_login.py checks what Flower admits with what it resolved.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from worker.dev.stack import child_env

# First line out: the names of Flower's options. Then one answer per case read.
_SCRIPT = r"""
import json, os, sys
from tornado.options import Error, _Option
from flower.command import apply_env_options, apply_options
from flower.options import options

print(json.dumps(sorted(options._options)), flush=True)
for line in sys.stdin:
    case = json.loads(line)
    for key in [k for k in os.environ if k.startswith("FLOWER_")]:
        del os.environ[key]
    os.environ.update(case["env"])
    os.chdir(case["cwd"])
    for opt in options._options.values():
        opt._value = _Option.UNSET
    try:
        apply_env_options()
        apply_options("celery", case["args"])
        answer = {
            "address": options.address,
            "unix_socket": options.unix_socket,
            "basic_auth": options.basic_auth,
            "auth": options.auth,
            "conf": options.conf,
        }
    except (Error, FileNotFoundError, ValueError) as exc:
        answer = {"error": type(exc).__name__}
    print(json.dumps(answer), flush=True)
"""


class FlowerResolver:
    """One interpreter running Flower's option handling, case after case."""

    def __init__(self) -> None:
        env = {k: v for k, v in child_env({}).items() if not k.startswith("FLOWER_")}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SCRIPT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # Tornado's pretty logging; nothing we read
            text=True,
            env=env,
        )
        #: The names of every option the installed Flower defines.
        self.option_names: set[str] = set(json.loads(self._answer()))

    def resolve(self, args: list[str], env: dict[str, str], cwd: Path | str) -> dict[str, Any]:
        """Flower's ``address``, ``unix_socket``, ``basic_auth`` (its list, or None),
        ``auth`` and ``conf`` for this configuration, or ``{"error": <exception name>}``."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"args": args, "env": env, "cwd": str(cwd)}) + "\n")
        self.proc.stdin.flush()
        return dict(json.loads(self._answer()))

    def _answer(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"Flower's resolver exited with {self.proc.poll()}"
        return line

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@contextmanager
def flower_resolver() -> Iterator[FlowerResolver]:
    """A :class:`FlowerResolver`, closed on the way out (a module fixture's body)."""
    resolver = FlowerResolver()
    try:
        yield resolver
    finally:
        resolver.close()
