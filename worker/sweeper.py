"""The sweeper: a thread in each worker that re-drives requests whose next step went missing.

One process at a time sweeps (a short Redis lease), every ``interval_s`` seconds; see
:meth:`worker.lifecycle.Pipeline.sweep` for what it does to each overdue request.
"""

from __future__ import annotations

import logging
import threading

from worker.lifecycle import Pipeline

__all__ = ["Sweeper"]

log = logging.getLogger(__name__)


class Sweeper(threading.Thread):
    def __init__(self, pipeline: Pipeline, interval_s: float = 5.0) -> None:
        super().__init__(name="callpass-sweeper", daemon=True)
        self._pipeline = pipeline
        self._interval_s = interval_s
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self._interval_s):
            try:
                if self._pipeline.store.try_lock("sweeper", self._interval_s * 0.9):
                    touched = self._pipeline.sweep()
                    if touched:
                        log.info("sweeper re-drove %d overdue request(s)", touched)
            except Exception:  # Redis down, a bug: never kill the thread, try next round
                log.warning("sweep failed; trying again in %.0f s", self._interval_s, exc_info=True)

    def stop(self) -> None:
        self._stop_event.set()
