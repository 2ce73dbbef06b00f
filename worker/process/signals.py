"""What a worker does around its tasks, on Celery's signals: logging, the task's log context,
the start-up announcement and checks, the heartbeat file, the pipeline built where the process
starts, and the background threads (sweeper, webhook mover, poll runner).

Celery's signals are process-wide: each handler here answers only for the app it was
connected for (the sender's app), with the settings that app was built from.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery import Celery, signals

from worker.masking import redact_url
from worker.ops.error_reports import init_error_reports
from worker.ops.health import touch_heartbeat
from worker.ops.logs import bind_log_context, clear_log_context, configure_logging
from worker.ops.tracing import start_tracing
from worker.pipeline.core import Pipeline
from worker.pipeline.due_polls import due_polls_key
from worker.process.parts import WorkerParts
from worker.process.poll_runner import PollRunner
from worker.process.threads import Periodic, SweeperThread, WebhookMoverThread
from worker.process.wiring import build_poll_runner
from worker.settings import Settings

__all__ = ["WorkerSignals", "startup_warnings"]

log = logging.getLogger(__name__)


def startup_warnings(settings: Settings) -> list[str]:
    """What an operator must hear about at start-up."""
    warnings = []
    if settings.insecure_skip_tls_verify:
        warnings.append(
            "CALLPASS_INSECURE_SKIP_TLS_VERIFY is on: the API's TLS certificate is NOT checked; "
            "anyone on the path can read the token"
        )
    if settings.insecure_allow_http and settings.api_url.startswith("http://"):
        warnings.append("CALLPASS_INSECURE_ALLOW_HTTP is on: the token travels in clear")
    return warnings


def _sender_app(sender: Any) -> Any:
    # The worker, its consumer and a task each know their app; the heartbeat knows its
    # event dispatcher's.
    return getattr(sender, "app", None) or getattr(getattr(sender, "eventer", None), "app", None)


def _is_prefork(pool: Any) -> bool:
    from celery.concurrency import get_implementation
    from celery.concurrency.prefork import TaskPool as PreforkPool

    return issubclass(get_implementation(pool), PreforkPool)


class WorkerSignals:
    """The signal handlers of ``app``'s worker."""

    def __init__(self, app: Celery, settings: Settings, parts: WorkerParts) -> None:
        self._app = app
        self._settings = settings
        self._parts = parts
        self._serving = False  # a worker of this app starts in this process (or its parent)
        self._threads: list[Periodic] = []
        self._poll_runner: PollRunner | None = None

    def connect(self) -> None:
        # Strong references: the app lives as long as its worker, and a handler only answers
        # for its own app.
        signals.setup_logging.connect(self._setup_logging, weak=False)
        signals.task_prerun.connect(self._bind_task_log_context, weak=False)
        signals.task_postrun.connect(self._clear_task_log_context, weak=False)
        signals.worker_init.connect(self._worker_init, weak=False)
        signals.worker_process_init.connect(self._worker_process_init, weak=False)
        signals.heartbeat_sent.connect(self._touch_heartbeat, weak=False)
        signals.worker_ready.connect(self._start_threads, weak=False)
        signals.worker_shutting_down.connect(self._stop_taking_polls, weak=False)
        signals.worker_shutdown.connect(self._stop_threads, weak=False)

    def _ours(self, sender: Any) -> bool:
        return _sender_app(sender) is self._app

    def _setup_logging(self, **_: Any) -> None:
        # Connecting this signal stops Celery from configuring logging itself. (Celery names
        # no app here: in a process with several apps, each configures it in turn.)
        configure_logging(self._settings.log_level, self._settings.log_format)

    def _bind_task_log_context(
        self, sender: Any = None, task_id: str | None = None, **_: Any
    ) -> None:
        if self._ours(sender):
            clear_log_context()  # a pool thread runs one task after another
            bind_log_context(task_id=task_id)

    def _clear_task_log_context(self, sender: Any = None, **_: Any) -> None:
        if self._ours(sender):
            clear_log_context()

    def _worker_init(self, sender: Any = None, **_: Any) -> None:
        if not self._ours(sender):
            return
        self._serving = True
        self._announce()
        start_tracing(self._settings)  # before any task: prefork children inherit it
        # The threads and solo pools run tasks in this process: build their pipeline now.
        # Prefork children build their own (worker_process_init).
        if not _is_prefork(sender.pool_cls):
            self._parts.pipeline()

    def _worker_process_init(self, **_: Any) -> None:
        if self._serving:  # a prefork child of this app's worker (or the solo pool)
            init_error_reports(self._settings)  # the parent's Sentry client stays behind
            self._parts.pipeline()

    def _announce(self) -> None:
        from worker.ops.redis_policy import EvictionPolicyRefused, check_eviction_policies

        settings = self._settings
        # Celery sets up logging only after worker_init: without this, these lines would reach
        # stderr unformatted and unmasked (WARNING and up) or not at all (INFO).
        configure_logging(settings.log_level, settings.log_format)
        init_error_reports(settings)  # first: a refusal to start below is reported too
        log.info(
            "callpass worker: API %s, queue %s, %s token",
            redact_url(settings.api_url, keep_path=True),
            settings.queue,
            "simulator" if settings.uses_simulator_token else "configured",
        )
        for warning in startup_warnings(settings):
            log.warning(warning)
        try:  # before the first message: a Redis that may evict records could let a call repeat
            eviction_warnings = check_eviction_policies(settings)
        except EvictionPolicyRefused as exc:
            log.critical("callpass worker does not start: %s", exc)
            raise SystemExit(1) from None
        for warning in eviction_warnings:
            log.warning(warning)
        if settings.metrics_port:
            self._serve_metrics()

    def _serve_metrics(self) -> None:
        from worker.ops.metrics import serve_metrics

        settings = self._settings
        serve_metrics(
            settings.metrics_port,
            settings.metrics_address,
            redis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2),
            # Queue lengths only where the broker is this Redis (kombu keeps a list per queue).
            settings.consumed_queues if settings.effective_broker_url == settings.redis_url else (),
            # The configured pool is the pool: Celery keeps it over `--pool prefork`.
            settings.worker_pool,
            due_polls_key(settings.queue),
        )

    def _touch_heartbeat(self, sender: Any = None, **_: Any) -> None:
        # Celery sends a heartbeat every 2 s from the consumer's own loop: a file that stops
        # changing means a worker that no longer takes messages (`callpass healthcheck`).
        path = self._settings.heartbeat_file
        if path and self._ours(sender):
            touch_heartbeat(path)

    def _start_threads(self, sender: Any = None, **_: Any) -> None:
        if not self._ours(sender):
            return
        self._warn_about_missing_queues(sender)
        pipeline = self._parts.pipeline()
        threads: list[Periodic] = [SweeperThread(pipeline)]
        if pipeline.webhooks is not None and pipeline.webhooks.enabled:
            threads.append(WebhookMoverThread(pipeline.webhooks))
        for thread in threads:
            thread.start()
            self._threads.append(thread)
        if self._settings.poll_queue in _consumed(sender):
            self._start_poll_runner(sender, pipeline)

    def _start_poll_runner(self, consumer: Any, pipeline: Pipeline) -> None:
        # Where the pool runs tasks in this process, a pool full of starts is a burst.
        pool_size = int(getattr(consumer.pool, "limit", None) or self._app.conf.worker_concurrency)
        starts = self._parts.starts
        runner = build_poll_runner(
            self._settings, pipeline, pool_saturated=lambda: starts.count >= pool_size
        )
        runner.start()
        self._poll_runner = runner

    def _warn_about_missing_queues(self, consumer: Any) -> None:
        """A worker taking starts (``-Q``) but not their polls places calls nobody polls."""
        settings = self._settings
        consumed = _consumed(consumer)
        if settings.queue in consumed and settings.poll_queue not in consumed:
            log.warning(
                "this worker takes starts from %s but not their polls from %s: add it to -Q "
                "(or run workers that take it), or placed calls are never polled",
                settings.queue,
                settings.poll_queue,
            )

    def _stop_taking_polls(self, **_: Any) -> None:
        # Sent as the shutdown begins (its sender is the hostname, not the app): from now on
        # the other workers run the due polls, while this one's pool drains.
        if self._poll_runner is not None:
            self._poll_runner.stop_taking()

    def _stop_threads(self, sender: Any = None, **_: Any) -> None:
        if self._ours(sender):
            try:
                for thread in self._threads:
                    thread.stop()
            finally:
                if self._poll_runner is not None:
                    self._poll_runner.stop()  # the polls running now finish, like the tasks


def _consumed(consumer: Any) -> set[str]:
    """The queues this worker takes messages from (``-Q``, or every declared one)."""
    return set(getattr(consumer.app.amqp.queues, "consume_from", None) or ())
