"""What the benchmark reads off the machine: CPU and memory of processes, and when producers
could first see a pin and an outcome in the result backend."""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import redis

__all__ = ["BackendWatcher", "cpu_seconds", "percentile", "rss_bytes"]

_TICK = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                kids.append(int(entry.name))
    return kids


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        todo.extend(_children(current))
    return pids


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its live children (prefork pools)."""
    total = 0
    for p in _tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / _TICK


def rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and its children."""
    total = 0
    for p in _tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def percentile(values: Iterable[float], q: float) -> float | None:
    data = sorted(values)
    if not data:
        return None
    if len(data) == 1:
        return data[0]
    return statistics.quantiles(data, n=1000, method="inclusive")[min(998, int(q * 1000) - 1)]


class BackendWatcher(threading.Thread):
    """Reads ``celery-task-meta-<id>`` keys as a producer would, recording when each task's
    pin (``PLACED``, or a ``SUCCESS`` carrying a pin) and outcome were first visible."""

    def __init__(
        self, client: redis.Redis, pin_tick_s: float = 0.005, outcome_tick_s: float = 0.1
    ) -> None:
        super().__init__(name="bench-watcher", daemon=True)
        self._redis = client
        self._tick = pin_tick_s
        self._outcome_tick = outcome_tick_s
        self._lock = threading.Lock()
        self._want_pin: set[str] = set()
        self._want_outcome: set[str] = set()
        self.pin_at: dict[str, float] = {}
        self.outcome_at: dict[str, float] = {}
        self.outcomes: dict[str, dict[str, Any]] = {}
        self._stop_event = threading.Event()

    def watch(self, task_id: str) -> None:
        with self._lock:
            self._want_pin.add(task_id)
            self._want_outcome.add(task_id)

    def answered(self) -> int:
        """Tasks whose pin or outcome has been seen."""
        with self._lock:
            return len(self.pin_at.keys() | self.outcome_at.keys())

    def pending(self) -> int:
        with self._lock:
            return len(self._want_outcome)

    def run(self) -> None:
        last_outcome_scan = 0.0
        while not self._stop_event.is_set():
            with self._lock:
                pins = list(self._want_pin)
            self._scan(pins, outcomes=False)
            if time.monotonic() - last_outcome_scan > self._outcome_tick:
                with self._lock:
                    wanted = list(self._want_outcome)
                self._scan(wanted, outcomes=True)
                last_outcome_scan = time.monotonic()
            self._stop_event.wait(self._tick)

    def _scan(self, task_ids: list[str], outcomes: bool) -> None:
        for start in range(0, len(task_ids), 500):
            chunk = task_ids[start : start + 500]
            raws = self._redis.mget([f"celery-task-meta-{t}" for t in chunk])
            seen = time.time()
            for task_id, raw in zip(chunk, raws, strict=True):
                if not raw:
                    continue
                meta = json.loads(raw)
                status, result = meta.get("status"), meta.get("result")
                has_pin = status == "PLACED" or (
                    status == "SUCCESS" and isinstance(result, dict) and result.get("pin")
                )
                with self._lock:
                    if has_pin and task_id in self._want_pin:
                        self._want_pin.discard(task_id)
                        self.pin_at[task_id] = seen
                    if outcomes and status == "SUCCESS":
                        self._want_pin.discard(task_id)
                        self._want_outcome.discard(task_id)
                        self.outcome_at[task_id] = seen
                        self.outcomes[task_id] = result if isinstance(result, dict) else {}

    def stop(self) -> None:
        self._stop_event.set()
