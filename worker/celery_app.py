"""The Celery app: broker, backend and every reliability setting, each chosen on purpose.

Start a worker with ``celery -A worker.celery_app worker`` (the Makefile and compose do).
Settings are read and validated when this module is imported, so a worker with a malformed
``CALLPASS_*`` variable stops before it takes a single message.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import redis
from celery import Celery, signals
from kombu import Exchange, Queue

from worker.flower_entry import login_variables
from worker.flower_guard import check_flower_process
from worker.flower_options import is_flower_command
from worker.health import touch_heartbeat
from worker.logs import bind_log_context, clear_log_context, configure_logging
from worker.masking import redact_url
from worker.redis_sockets import backend_socket_settings, broker_socket_options
from worker.settings import Settings, SettingsError, get_settings, is_rabbitmq

__all__ = ["app", "celery_config", "startup_warnings"]

log = logging.getLogger(__name__)


def _queues(settings: Settings) -> list[Queue]:
    """Our queues, each with its own exchange and key: a bare Queue(name) would be bound with
    the default queue's key, and every message would be copied into both queues."""
    names = (settings.queue, settings.effective_webhook_queue)
    if not is_rabbitmq(settings.effective_broker_url):
        return [Queue(name, Exchange(name, type="direct"), routing_key=name) for name in names]
    # RabbitMQ: quorum queues (replicated, survive a broker node) and topic exchanges, which
    # Celery's native delayed delivery needs: a countdown poll waits in the broker's delay
    # queues, not in a worker's memory, and no worker holds it unacked.
    return [
        Queue(
            name,
            Exchange(name, type="topic"),
            routing_key=name,
            queue_arguments={"x-queue-type": "quorum"},
        )
        for name in names
    ]


def _broker_options(settings: Settings) -> dict[str, Any]:
    if is_rabbitmq(settings.effective_broker_url):
        # A publish returns once RabbitMQ has the message: a poll is never lost in a buffer.
        return {"confirm_publish": True}
    # kombu sweeps for messages of dead workers every interval x throttle s (100 s by default);
    # every 5 s, so recovery takes the visibility time-out plus seconds, not minutes more.
    # A Redis gone silent must raise within seconds (worker/redis_sockets.py).
    return {
        "visibility_timeout": settings.visibility_timeout_s,
        "unacked_restore_interval": 5,
        "unacked_restore_throttle": 1,
        **broker_socket_options(),
    }


def celery_config(settings: Settings) -> dict[str, Any]:
    """All Celery settings in one place, one reason each."""
    visibility = {"visibility_timeout": settings.visibility_timeout_s}
    return {
        "broker_url": settings.effective_broker_url,
        # Redis brokers get kombu's transport with a fix that keeps a worker alive across a
        # Redis restart (see worker/redis_transport.py).
        "broker_transport": (
            "worker.redis_transport:Transport"
            if settings.effective_broker_url.startswith(("redis://", "rediss://", "unix://"))
            else None
        ),
        "result_backend": settings.effective_result_backend,
        # JSON only: producers in other languages can read and write every message.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # Our tasks are idempotent (request records), so a message is acked only once handled,
        # and one whose worker died is delivered again instead of being lost.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # A countdown poll sits unacked in Redis until due; it must not be redelivered to a
        # second worker before then, nor wait an hour after a crash (kombu's default).
        "broker_transport_options": _broker_options(settings),
        "result_backend_transport_options": visibility,
        # Each worker slot takes a few messages at a time; countdown messages do not count
        # against this (kombu raises the prefetch for them), so busy slots don't starve them.
        "worker_prefetch_multiplier": 4,
        # Countdown polls hold memory in the worker until due (~11 KB each, celery#2218).
        "worker_eta_task_limit": settings.eta_task_limit,
        # Polls are planned to a fraction of a second; the default timer tick is 1 s.
        "worker_timer_precision": 0.05,
        # Outcomes stay readable for a day by default, then Redis frees them.
        "result_expires": settings.result_expires_s,
        # Events feed Flower; STARTED is not tracked because our tasks publish their own states.
        "worker_send_task_events": True,
        "task_track_started": False,
        # Our own log handler (masking filter) instead of Celery's.
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        "task_default_queue": settings.queue,
        # Webhook deliveries have their own queue, so a backlog of them (a receiver that is
        # down) is served in turn with calls, not ahead of them; workers consume both unless
        # started with -Q (e.g. dedicated webhook workers: -Q callpass.webhooks).
        "task_queues": _queues(settings),
        "broker_connection_retry_on_startup": True,
        # The threads pool ignores time limits; the HTTP client's own time-outs bound a task.
        # A setting, not only `--pool`: Celery takes `--pool prefork` for its default and
        # lets this configured pool win over it.
        "worker_pool": settings.worker_pool,
        "worker_concurrency": 32,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        # A cold shutdown (SIGQUIT, a second SIGTERM) still lets running tasks finish this
        # long; Kubernetes' grace period exceeds it plus the longest task (deploy/k8s).
        "worker_soft_shutdown_timeout": settings.soft_shutdown_s,
        "imports": ["tasks.calls", "tasks.webhooks"],
        # The result backend's Redis: the same bounds as the broker's (Celery's read
        # time-out is 120 s by default, with no connect time-out and no keep-alive).
        **backend_socket_settings(),
        # Answers (and never prints) messages Celery cannot read: pickle, YAML, raw bytes,
        # a body that is not [args, kwargs, embed] (see worker/foreign_messages.py).
        "worker_consumer": "worker.foreign_messages:ForeignMessageConsumer",
    }


try:
    _settings = get_settings()
except SettingsError as exc:
    # One clear line instead of a traceback; the worker does not start.
    raise SystemExit(f"callpass: configuration error: {exc}") from None

app = Celery("callpass")
app.config_from_object(celery_config(_settings))


@signals.setup_logging.connect
def _setup_logging(loglevel: Any = None, **_: Any) -> None:
    # Connecting this signal stops Celery from configuring logging itself.
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)


@signals.task_prerun.connect
def _bind_task_log_context(task_id: str | None = None, **_: Any) -> None:
    clear_log_context()  # a pool thread runs one task after another
    bind_log_context(task_id=task_id)


@signals.task_postrun.connect
def _clear_task_log_context(**_: Any) -> None:
    clear_log_context()


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


@signals.worker_init.connect
def _announce(**_: Any) -> None:
    from worker.redis_policy import EvictionPolicyRefused, check_eviction_policies

    settings = get_settings()
    # Celery sets up logging only after worker_init: without this, these lines would reach
    # stderr unformatted and unmasked (WARNING and up) or not at all (INFO).
    configure_logging(settings.log_level, settings.log_format)
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
        from worker.metrics import serve_metrics

        serve_metrics(
            settings.metrics_port,
            settings.metrics_address,
            redis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2),
            # Queue lengths only where the broker is this Redis (kombu keeps a list per queue).
            (settings.queue, settings.effective_webhook_queue)
            if settings.effective_broker_url == settings.redis_url
            else (),
            # The configured pool is the pool: Celery keeps it over `--pool prefork`.
            settings.worker_pool,
        )


@signals.heartbeat_sent.connect
def _touch_heartbeat(**_: Any) -> None:
    # Celery sends a heartbeat every 2 s from the consumer's own loop: a file that stops
    # changing means a worker that no longer takes messages (`callpass healthcheck`).
    path = get_settings().heartbeat_file
    if path:
        touch_heartbeat(path)


_sweepers: list[Any] = []


@signals.worker_ready.connect
def _start_sweeper(sender: Any = None, **_: Any) -> None:
    from worker.pipeline.threads import Sweeper, WebhookMover
    from worker.runtime import get_pipeline

    pipeline = get_pipeline(app)
    threads: list[Any] = [Sweeper(pipeline)]
    if pipeline.webhooks is not None and pipeline.webhooks.enabled:
        threads.append(WebhookMover(pipeline.webhooks))
    for thread in threads:
        thread.start()
        _sweepers.append(thread)


@signals.worker_shutdown.connect
def _stop_sweeper(**_: Any) -> None:
    for sweeper in _sweepers:
        sweeper.stop()


# Flower shows every task's arguments and results and can revoke tasks and shut workers down,
# and by default it listens on every interface with no login. So `celery -A worker.celery_app
# flower` stops here, before binding, when a login could get in without a password (the same
# guard also runs in `callpass flower` and on Flower's own command: worker/flower_entry.py).
if is_flower_command(sys.argv):
    # The login from our settings, unless Flower's own variable is set: Flower reads its
    # environment after this module is imported, and so does the guard below.
    os.environ.update(login_variables(os.environ, _settings.flower_basic_auth.get_secret_value()))
    _flower_refusal: str | None = check_flower_process(sys.argv, os.environ)
    if _flower_refusal is not None:
        raise SystemExit("callpass: " + _flower_refusal)
    # Flower needs events, not results: without the backend its result API cannot show pins.
    app.conf.update({"result_backend": None})
