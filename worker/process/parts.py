"""What one app's tasks reach in a worker process: its pipeline and its webhook deliverer.

Built once per process, where the worker process starts (``worker/process/signals.py``: at
``worker_init`` for the threads and solo pools, at ``worker_process_init`` in each prefork
child) or else on first use. A forked child never uses its parent's: it builds its own.
"""

from __future__ import annotations

import os
import threading
import weakref
from dataclasses import dataclass

from celery import Celery

from worker.pipeline.core import Pipeline
from worker.process.poll_runner import StartsInFlight
from worker.process.wiring import build_pipeline, build_webhook_deliverer
from worker.settings import Settings
from worker.webhooks.delivery import WebhookDeliverer

__all__ = ["WorkerParts"]


@dataclass(frozen=True)
class _Built:
    pid: int
    pipeline: Pipeline
    deliverer: WebhookDeliverer


class WorkerParts:
    """The pipeline and webhook deliverer of ``app``, built from ``settings`` on first use in
    each process."""

    def __init__(self, settings: Settings, app: Celery) -> None:
        self.settings = settings
        self._app = app
        self._built: _Built | None = None
        #: Starts running in this process (the poll runner yields while they fill the pool).
        self.starts = StartsInFlight()
        self._lock = threading.Lock()
        # A child forked while another thread of the parent held the lock would wait forever.
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _renew_lock(ref))

    def pipeline(self) -> Pipeline:
        return self._current().pipeline

    def webhook_deliverer(self) -> WebhookDeliverer:
        return self._current().deliverer

    def _current(self) -> _Built:
        built = self._built
        if built is not None and built.pid == os.getpid():
            return built
        with self._lock:
            built = self._built
            if built is None or built.pid != os.getpid():
                built = self._build()
                self._built = built
            return built

    def _build(self) -> _Built:
        pipeline = build_pipeline(self.settings, self._app)
        assert pipeline.webhooks is not None  # build_pipeline always wires webhook events
        deliverer = build_webhook_deliverer(self.settings, self._app, pipeline.webhooks)
        return _Built(os.getpid(), pipeline, deliverer)


def _renew_lock(ref: weakref.ref[WorkerParts]) -> None:
    parts = ref()
    if parts is not None:
        parts._lock = threading.Lock()
