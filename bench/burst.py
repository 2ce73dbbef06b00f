"""What a burst is measured against: its floor, and a person checking a code meanwhile.

* The **floor**: how long the same pool takes to run the burst's worth of the least a start
  can do (``naive.floor``: one API request, one result write), plus one API round trip. No
  worker places a burst's calls sooner on this machine.
* The **code-check probe**: while a burst is placed, ``verify_code`` round trips one after
  another, as a person at a form would make them.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from celery import Celery

from bench.measure import BackendWatcher
from callpass_producer import verify_code

__all__ = ["CodeCheckProbe", "floor_run"]


def floor_run(watcher: BackendWatcher, app: Celery, queue: str, calls: int) -> float:
    """Seconds the worker behind ``app`` takes to run ``calls`` floor tasks sent at once."""
    began = time.time()
    for i in range(calls):
        task_id = str(uuid.uuid4())
        watcher.watch(task_id)
        app.send_task("naive.floor", (f"7916{i:07d}", 10), queue=queue, task_id=task_id)
    deadline = time.monotonic() + 300
    while len(watcher.pin_at) < calls and time.monotonic() < deadline:
        time.sleep(0.01)
    if len(watcher.pin_at) < calls:
        raise TimeoutError(f"floor: {len(watcher.pin_at)} of {calls} tasks ran in 300 s")
    return max(watcher.pin_at.values()) - began


class CodeCheckProbe(threading.Thread):
    """``verify_code`` round trips, back to back with a pause, until stopped."""

    def __init__(self, app: Celery, pause_s: float = 0.05) -> None:
        super().__init__(name="bench-code-checks", daemon=True)
        self._app = app
        self._pause_s = pause_s
        self._stop_event = threading.Event()
        self.latencies: list[float] = []
        self.errors = 0

    def run(self) -> None:
        while not self._stop_event.is_set():
            began = time.monotonic()
            try:
                # An unknown request: the check does all its work (one script) and says so.
                verify_code(self._app, f"bench-probe-{uuid.uuid4().hex[:8]}", "0000", 30)
                self.latencies.append(time.monotonic() - began)
            except Exception:
                self.errors += 1
            self._stop_event.wait(self._pause_s)

    def stop(self) -> dict[str, Any]:
        self._stop_event.set()
        self.join(timeout=60)
        return {"checks": len(self.latencies), "errors": self.errors}
