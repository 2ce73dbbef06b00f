"""Where a worker's CPU goes: py-spy samples (collapsed stacks) summarised by package and
by function. Only threads holding the GIL are sampled (``--gil``), so a sample is Python code
running, not a thread waiting on a socket."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

__all__ = ["Profiler", "summarise"]

#: Packages a frame's file is attributed to, first match wins.
_PACKAGES = [
    ("worker/", "callpass worker/ + tasks/"),
    ("tasks/", "callpass worker/ + tasks/"),
    ("celery/", "celery"),
    ("kombu/", "kombu"),
    ("redis/", "redis-py"),
    ("requests/", "requests"),
    ("urllib3/", "urllib3"),
    ("http/client", "http.client"),
    ("json/", "json"),
    ("ssl", "ssl"),
    ("socket", "socket"),
    ("threading", "threading"),
    ("logging/", "logging"),
]


def _py_spy() -> str | None:
    return shutil.which("py-spy") or shutil.which(str(Path(sys.executable).parent / "py-spy"))


class Profiler:
    """``py-spy record`` attached to a running process until :meth:`stop`."""

    def __init__(self, pid: int, out: Path) -> None:
        self.out = out
        binary = _py_spy()
        self._proc = (
            subprocess.Popen(
                [
                    binary,
                    "record",
                    "--pid",
                    str(pid),
                    "--format",
                    "raw",
                    "--output",
                    str(out),
                    "--rate",
                    "200",
                    "--gil",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if binary
            else None
        )

    def stop(self) -> str:
        if self._proc is None:
            return "py-spy is not installed: no profile"
        self._proc.send_signal(signal.SIGINT)
        try:
            self._proc.wait(30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
        return summarise(self.out) if self.out.exists() else "py-spy wrote no profile"


_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:]+)(?::\d+)?\)$")


def _package(path: str) -> str:
    for marker, name in _PACKAGES:
        if marker in path:
            return name
    return "other"


def summarise(raw: Path, top: int = 20) -> str:
    """Leaf (self) time by package and by function, as text."""
    by_package: Counter[str] = Counter()
    by_function: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        # Self time goes to the innermost frame; a package's share to the innermost frame that
        # is not the standard library's plumbing (so "socket" inside redis-py counts as redis).
        leaf = _FRAME.match(frames[-1])
        by_function[frames[-1] if leaf is None else f"{leaf['func']} ({leaf['file']})"] += count
        owner = "other"
        for frame in reversed(frames):
            match = _FRAME.match(frame)
            owner = _package(match["file"] if match else frame)
            if owner not in ("socket", "ssl", "threading", "other", "json", "logging"):
                break
        by_package[owner] += count
    if not total:
        return "no samples"
    lines = [f"{total} samples", "", "by package (innermost non-stdlib frame):"]
    lines += [f"  {n / total:6.1%}  {name}" for name, n in by_package.most_common()]
    lines += ["", f"top {top} functions by self time:"]
    lines += [f"  {n / total:6.1%}  {name}" for name, n in by_function.most_common(top)]
    return "\n".join(lines)
