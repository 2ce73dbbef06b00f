"""The Celery app: broker, backend and every reliability setting, each chosen on purpose.

:func:`create_app` builds an app from settings: its configuration, its tasks and its worker's
signal handlers. ``celery -A worker.celery_app worker`` (the Makefile, compose, Kubernetes)
reads this module's ``app``, built from the environment when it is first read: importing the
module does nothing, and reading ``app`` with a malformed ``CALLPASS_*`` variable stops the
process with one line naming it, before a worker takes a single message.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from tasks.calls import register_call_tasks
from tasks.webhooks import register_webhook_tasks
from worker.broker.redis_sockets import backend_socket_settings, broker_socket_options
from worker.process.parts import WorkerParts
from worker.process.signals import WorkerSignals
from worker.settings import Settings, SettingsError, is_rabbitmq, load_settings

__all__ = [
    "celery_config",
    "create_app",
    "create_flower_app",
    "environment_settings",
]


#: Task events without publisher confirms: see worker.broker.event_dispatcher.
EVENT_DISPATCHER = "worker.broker.event_dispatcher:UnconfirmedEventDispatcher"


def create_app(settings: Settings) -> Celery:
    """A Celery app configured from ``settings``, with our tasks and its worker's signal
    handlers; the pipeline is built in each worker process that runs its tasks."""
    app = Celery("callpass")
    app.config_from_object(celery_config(settings))
    # Before anything asks for app.events.Dispatcher (a cached property).
    app.events.dispatcher_cls = EVENT_DISPATCHER
    parts = WorkerParts(settings, app)
    register_call_tasks(app, parts)
    register_webhook_tasks(app, parts)
    WorkerSignals(app, settings, parts).connect()
    return app


def create_flower_app(settings: Settings) -> Celery:
    """The app Flower gets (``callpass flower``): Flower needs events, not results, and
    without the result backend its result API cannot show pins."""
    from worker.flower.entry import drop_result_backend

    app = create_app(settings)
    drop_result_backend(app)
    return app


def _queues(settings: Settings) -> list[Queue]:
    """Our queues, most urgent first, each with its own exchange and key: a bare Queue(name)
    would be bound with the default queue's key, and every message would be copied into both
    queues."""
    names = settings.consumed_queues
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
    # A Redis gone silent must raise within seconds (worker/broker/redis_sockets.py).
    return {
        "visibility_timeout": settings.visibility_timeout_s,
        # BRPOP names the queues in their order (Settings.consumed_queues): a poll or a
        # delivery is taken only when no start waits, so a burst of starts never waits
        # behind polls.
        "queue_order_strategy": "priority",
        "unacked_restore_interval": 5,
        "unacked_restore_throttle": 1,
        **broker_socket_options(),
    }


def celery_config(settings: Settings) -> dict[str, Any]:
    """All Celery settings in one place, one reason each."""
    return {
        **_transport_config(settings),
        **_delivery_config(),
        **_worker_config(settings),
        # Answers (and never prints) messages Celery cannot read: pickle, YAML, raw bytes,
        # a body that is not [args, kwargs, embed] (see worker/broker/foreign_messages.py).
        "worker_consumer": "worker.broker.foreign_messages:ForeignMessageConsumer",
    }


def _transport_config(settings: Settings) -> dict[str, Any]:
    visibility = {"visibility_timeout": settings.visibility_timeout_s}
    return {
        "broker_url": settings.effective_broker_url,
        # Redis brokers get kombu's transport with a fix that keeps a worker alive across a
        # Redis restart (see worker/broker/redis_transport.py).
        "broker_transport": (
            "worker.broker.redis_transport:Transport"
            if settings.effective_broker_url.startswith(("redis://", "rediss://", "unix://"))
            else None
        ),
        "result_backend": settings.effective_result_backend,
        # A countdown poll sits unacked in Redis until due; it must not be redelivered to a
        # second worker before then, nor wait an hour after a crash (kombu's default).
        "broker_transport_options": _broker_options(settings),
        "result_backend_transport_options": visibility,
        "broker_connection_retry_on_startup": True,
        # The result backend's Redis: the same bounds as the broker's (Celery's read
        # time-out is 120 s by default, with no connect time-out and no keep-alive).
        **backend_socket_settings(),
        "task_default_queue": settings.queue,
        # Polls and webhook deliveries have queues of their own, taken after the calls' queue
        # (a backlog of them delays outcomes, never a placement); workers consume all four
        # unless started with -Q (e.g. dedicated webhook workers: -Q callpass.webhooks).
        "task_queues": _queues(settings),
        # Outcomes stay readable for a day by default, then Redis frees them.
        "result_expires": settings.result_expires_s,
    }


def _delivery_config() -> dict[str, Any]:
    return {
        # JSON only: producers in other languages can read and write every message.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # Our tasks are idempotent (request records), so a message is acked only once handled,
        # and one whose worker died is delivered again instead of being lost.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # Events feed Flower; STARTED is not tracked because our tasks publish their own states.
        "worker_send_task_events": True,
        "task_track_started": False,
    }


def _worker_config(settings: Settings) -> dict[str, Any]:
    return {
        # One message per slot (per queue consumer on RabbitMQ's quorum queues, where Celery
        # turns global QoS off): a worker reserves no starts it cannot run yet, so a code
        # check or a start sent meanwhile is next, not behind 3 x 32 reserved messages
        # (under a burst of 800: code-check p99 75 ms against 92, time to pin p99 5.4 s
        # against 6.2-7.3 s). Countdown messages do not count against this (Celery raises
        # the prefetch for each one it holds).
        "worker_prefetch_multiplier": 1,
        # Countdown polls hold memory in the worker until due (~11 KB each, celery#2218).
        "worker_eta_task_limit": settings.eta_task_limit,
        # Polls are planned to a fraction of a second; the default timer tick is 1 s.
        "worker_timer_precision": 0.05,
        # Our own log handler (masking filter) instead of Celery's.
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        # The threads pool ignores time limits; the HTTP client's own time-outs bound a task.
        # A setting, not only `--pool`: Celery takes `--pool prefork` for its default and
        # lets this configured pool win over it.
        "worker_pool": settings.worker_pool,
        "worker_concurrency": 32,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        # A cold shutdown (SIGQUIT, a second SIGTERM) still lets running tasks finish this
        # long; Kubernetes' grace period exceeds it plus the longest task (deploy/k8s).
        "worker_soft_shutdown_timeout": settings.soft_shutdown_s,
    }


#: What this module builds from the environment when first read: ``app`` for the worker
#: (``celery -A worker.celery_app``), ``flower_app`` for ``callpass flower``.
_FROM_ENVIRONMENT: dict[str, Callable[[Settings], Celery]] = {
    "app": create_app,
    "flower_app": create_flower_app,
}
_built: dict[str, tuple[Celery, Settings]] = {}
_building = threading.Lock()


def __getattr__(name: str) -> Celery:
    # PEP 562: runs when `app` is read (Celery's -A reads it), not when the module is imported.
    factory = _FROM_ENVIRONMENT.get(name)
    if factory is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    with _building:
        if name not in _built:
            try:
                settings = load_settings()
            except SettingsError as exc:
                # One clear line instead of a traceback; the worker does not start.
                raise SystemExit(f"callpass: configuration error: {exc}") from None
            _built[name] = (factory(settings), settings)
    return _built[name][0]


def environment_settings(app: object) -> Settings | None:
    """The settings ``app`` was built from, when it is this module's ``app`` or
    ``flower_app``; ``None`` for any other app."""
    for built, settings in _built.values():
        if built is app:
            return settings
    return None
