"""Background threads of each worker process: the sweeper and the webhook mover.

The sweeper re-drives requests whose next step went missing (see
:mod:`worker.pipeline.sweeper`); one process at a time sweeps, under a short Redis
lease. The mover sends webhook events whose next attempt is due (see
:mod:`worker.webhooks.store`); taking events is atomic, so every worker runs one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from worker.pipeline.core import Pipeline
from worker.webhooks.events import WebhookEvents

__all__ = ["Periodic", "SweeperThread", "WebhookMoverThread"]

log = logging.getLogger(__name__)


class Periodic(threading.Thread):
    """Runs ``step`` every ``interval_s`` until stopped; a failing step is logged, not fatal."""

    def __init__(self, name: str, interval_s: float, step: Callable[[], int], done: str) -> None:
        super().__init__(name=name, daemon=True)
        self._interval_s = interval_s
        self._step = step
        self._done = done  # log line for a step that did something: "... %d ..."
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self._interval_s):
            try:
                count = self._step()
                if count:
                    log.info(self._done, count)
            except Exception:  # Redis down, a bug: never kill the thread, try next round
                log.warning(
                    "%s failed; trying again in %.1f s", self.name, self._interval_s, exc_info=True
                )

    def stop(self) -> None:
        self._stop_event.set()


class SweeperThread(Periodic):
    def __init__(self, pipeline: Pipeline, interval_s: float = 5.0) -> None:
        def step() -> int:
            if not pipeline.store.try_lock("sweeper", interval_s * 0.9):
                return 0
            return pipeline.sweep()

        super().__init__("callpass-sweeper", interval_s, step, "sweeper re-drove %d request(s)")


class WebhookMoverThread(Periodic):
    def __init__(self, events: WebhookEvents, interval_s: float = 1.0) -> None:
        super().__init__(
            "callpass-webhook-mover", interval_s, events.move_due, "sent %d due webhook(s)"
        )
