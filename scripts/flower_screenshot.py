"""Screenshot Flower's tasks page after a real demo run (``make flower-screenshot``).

Starts ``callpass run`` (its own Redis, the API simulator, one worker, Flower on a free
loopback port) as a child in its own process group, waits for the demo's results and
Flower's URL, waits until Flower lists the demo's tasks as finished, takes the picture with
headless Chromium (Debian's ``chromium``, installed with apt-get when missing and running as
root), then stops the stack whatever happened.

    python scripts/flower_screenshot.py --out docs/flower-tasks.png
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from callpass_producer.contracts.names import START_TASK
from worker.dev.stack import ensure_debian_program, free_port

ROOT = Path(__file__).resolve().parent.parent

#: Left out of the stack's environment: the picture comes from its own Redis and the
#: simulator, never from a shared Redis or the real service (which would ring the demo
#: numbers), and from a Flower on loopback without a login page in the way (with every
#: ``FLOWER_*`` variable dropped as well).
STACK_ENV_DROPPED = (
    "CALLPASS_API_TOKEN",
    "CALLPASS_API_URL",
    "CALLPASS_REDIS_URL",
    "CALLPASS_BROKER_URL",
    "CALLPASS_RESULT_BACKEND",
    "CALLPASS_FLOWER_BASIC_AUTH",
)
#: Flower's columns for the picture (its default has no arguments at all). Without a
#: ``received`` column the table sorts on its first one, the name, descending: the
#: ``start_call`` rows (masked numbers) come first, then ``poll_status``.
TASKS_COLUMNS = "name,uuid,state,kwargs,result,runtime"
#: Celery states after which a task changes no more.
FINAL_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED", "REJECTED", "IGNORED"})
#: A stand-alone run of 10+ digits: a phone number in clear (see worker.masking).
UNMASKED_RE = re.compile(r"(?<![0-9A-Za-z-])\+?[0-9]{10,}(?![0-9A-Za-z-])")
SETTLED_RE = re.compile(r"^(\d+) calls settled in ")
FLOWER_RE = re.compile(r"^Flower: (http://127\.0\.0\.1:\d+/)")
DN_RE = re.compile(r"'dn': '([^']+)'")


class ScreenshotError(RuntimeError):
    """A step failed; the message says which and why."""


@dataclass
class StackInfo:
    calls: int = 0
    flower_url: str = ""


def log(message: str) -> None:
    print(f"[flower-screenshot] {message}", flush=True)


def ensure_chromium() -> str:
    """Path of ``chromium``; installed with apt-get first where it is missing (as root)."""
    binary = shutil.which("chromium")
    if binary is not None:
        return binary
    log("chromium is missing: apt-get install -y --no-install-recommends chromium (as root)")
    binary = ensure_debian_program("chromium", "chromium")
    if binary is None:
        raise ScreenshotError(
            "chromium is missing; install it (apt-get install chromium) or run this as root"
        )
    return binary


def stack_env() -> dict[str, str]:
    def dropped(name: str) -> bool:
        return name in STACK_ENV_DROPPED or name.startswith("FLOWER_")

    names = sorted(name for name in os.environ if dropped(name))
    if names:
        log(f"ignoring {', '.join(names)}: the demo runs on a stack of its own")
    env = {k: v for k, v in os.environ.items() if not dropped(k)}
    env["PYTHONUNBUFFERED"] = "1"
    env["FLOWER_TASKS_COLUMNS"] = TASKS_COLUMNS  # Flower reads FLOWER_<OPTION> variables
    return env


def pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    """Copy the child's output into ``lines`` (``None`` at its end); keeps the pipe drained."""
    for line in stream:
        lines.put(line.rstrip("\n"))
    lines.put(None)


def wait_for_demo(
    proc: subprocess.Popen[str], lines: queue.Queue[str | None], timeout_s: float
) -> StackInfo:
    """Echo the stack's output until the demo's results and Flower's URL are printed."""
    info = StackInfo()
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ScreenshotError(f"the demo did not finish within {timeout_s:g} s")
        try:
            line = lines.get(timeout=min(left, 1.0))
        except queue.Empty:
            continue
        if line is None:
            raise ScreenshotError(f"callpass run exited ({proc.wait()}) before the demo finished")
        print(f"  | {line}", flush=True)
        if m := SETTLED_RE.match(line):
            info.calls = int(m.group(1))
        elif (m := FLOWER_RE.match(line)) and info.calls:
            info.flower_url = m.group(1)
            return info


def fetch_tasks(flower_url: str) -> list[dict[str, Any]]:
    """The tasks as the tasks page's table gets them. ``/tasks/datatable`` is a page view:
    Flower's ``/api`` answers 401 without auth unless FLOWER_UNAUTHENTICATED_API is set."""
    query = urllib.parse.urlencode(
        {
            "draw": 1,
            "start": 0,
            "length": 1000,
            "search[value]": "",
            "order[0][column]": 0,
            "order[0][dir]": "asc",
            "columns[0][data]": "name",
        }
    )
    url = f"{flower_url}tasks/datatable?{query}"
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - our loopback URL
        data = json.load(response)
    rows = data.get("data") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise ScreenshotError(f"Flower's /tasks/datatable answered no task list: {data!r:.200}")
    return [row for row in rows if isinstance(row, dict)]


def named_starts(tasks: list[dict[str, Any]]) -> int:
    return sum(1 for t in tasks if t.get("name") == START_TASK)


def wait_for_tasks(
    flower_url: str, min_tasks: int, timeout_s: float, alive: Callable[[], bool]
) -> list[dict[str, Any]]:
    """Wait until Flower lists at least ``min_tasks`` tasks, every one in a final state, and
    the list stays the same for 2 s (the last events are in)."""
    deadline = time.monotonic() + timeout_s
    shown = ""
    last_error = ""
    stable_since = 0.0
    while time.monotonic() < deadline:
        if not alive():
            raise ScreenshotError("callpass run exited while waiting for Flower's task list")
        try:
            tasks = fetch_tasks(flower_url)
        except (OSError, ValueError) as exc:
            last_error = f" (last error: {exc})"
        else:
            final = sum(1 for t in tasks if t.get("state") in FINAL_STATES)
            now = (
                f"Flower lists {len(tasks)} tasks ({named_starts(tasks)} {START_TASK}), "
                f"{final} finished"
            )
            if now != shown:
                log(now)
                shown = now
                stable_since = time.monotonic()
            elif (
                len(tasks) >= min_tasks
                and final == len(tasks)
                and time.monotonic() - stable_since >= 2.0
            ):
                return tasks
        time.sleep(0.5)
    raise ScreenshotError(f"Flower did not list the demo's tasks as finished{last_error}")


def seen_numbers(tasks: list[dict[str, Any]]) -> set[str]:
    """The masked numbers of the start_call tasks Flower lists."""
    return {
        m.group(1)
        for t in tasks
        if t.get("name") == START_TASK and (m := DN_RE.search(str(t.get("kwargs") or "")))
    }


def check_masked(tasks: list[dict[str, Any]]) -> None:
    """Refuse to take a picture of a full phone number in the tasks' arguments."""
    for task in tasks:
        for column in ("args", "kwargs"):
            if UNMASKED_RE.search(str(task.get(column) or "")):
                raise ScreenshotError(
                    f"task {task.get('uuid')} ({task.get('name')}) shows an unmasked number "
                    f"in its {column}; no screenshot taken"
                )


def screenshot(
    chromium: str, url: str, out: Path, window: str, budget_ms: int, profile: Path
) -> None:
    argv = [
        chromium,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        "--no-default-browser-check",
        f"--user-data-dir={profile}",
        f"--window-size={window}",
        f"--virtual-time-budget={budget_ms}",
        f"--screenshot={out}",
        url,
    ]
    log(f"chromium --headless=new --window-size={window} --screenshot={out} {url}")
    out.unlink(missing_ok=True)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ScreenshotError("chromium did not finish within 120 s") from exc
    if done.returncode != 0 or not out.is_file() or out.stat().st_size == 0:
        tail = "\n".join((done.stderr or "").splitlines()[-15:])
        raise ScreenshotError(f"chromium failed ({done.returncode}), no picture:\n{tail}")


def stop_stack(proc: subprocess.Popen[str]) -> None:
    """SIGINT to the stack's process group (it stops what it started), then TERM, then KILL."""
    for sig, wait_s in ((signal.SIGINT, 60.0), (signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            break
        log(f"stopping the stack ({signal.Signals(sig).name})")
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            continue
    if proc.poll() is None:
        log(f"callpass run (pid {proc.pid}) did not stop")
    elif proc.returncode != 0:
        log(f"callpass run exited with {proc.returncode}")


def run(args: argparse.Namespace) -> Path:
    out: Path = args.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    chromium = ensure_chromium()
    port = free_port()
    env = stack_env()
    with tempfile.TemporaryDirectory(prefix="flower-shot-") as tmp:
        argv = [sys.executable, "-u", "-m", "worker.cli", "run"]
        argv += ["--flower-port", str(port), "--run-dir", str(Path(tmp) / "run")]
        log(f"starting the stack: python {' '.join(argv[1:])}")
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            start_new_session=True,  # our own process group: SIGINT reaches the stack alone
        )
        assert proc.stdout is not None
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=pump, args=(proc.stdout, lines), daemon=True).start()
        alive: Callable[[], bool] = lambda: proc.poll() is None  # noqa: E731
        try:
            info = wait_for_demo(proc, lines, args.timeout)
            log(f"demo done ({info.calls} calls); Flower at {info.flower_url}")
            tasks = wait_for_tasks(info.flower_url, info.calls, 60, alive)
            seen = seen_numbers(tasks)
            if len(seen) < info.calls:  # worker/dev/runner.py waits for Flower to hear the worker
                raise ScreenshotError(
                    f"Flower lists {len(seen)} of the demo's {info.calls} numbers: it missed "
                    "the first events"
                )
            check_masked(tasks)
            screenshot(
                chromium,
                f"{info.flower_url}tasks",
                out,
                args.window_size,
                args.budget_ms,
                Path(tmp) / "chromium-profile",
            )
        finally:
            stop_stack(proc)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "flower-tasks.png")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds for the demo (180)")
    p.add_argument("--window-size", default="1400,1020", help="chromium window, W,H")
    p.add_argument("--budget-ms", type=int, default=15000, help="chromium virtual time budget")
    args = p.parse_args()
    started = time.monotonic()
    try:
        out = run(args)
    except (ScreenshotError, subprocess.CalledProcessError, OSError) as exc:
        print(f"flower-screenshot: failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("flower-screenshot: interrupted", file=sys.stderr)
        return 130
    size = out.stat().st_size
    log(f"wrote {out} ({size} bytes) in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
