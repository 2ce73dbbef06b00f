"""How the pipeline is wired to Celery, Redis and the HTTP client: explicit builders, given the
settings and the app (``worker/process/parts.py`` builds them once per worker process)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import redis
import requests
from celery import Celery

from callpass_producer.contracts.names import START_TASK, WEBHOOK_TASK
from worker.api.breaker import CircuitBreaker
from worker.api.client import CallPassClient
from worker.api.guard import ApiGuard
from worker.api.limits import GlobalRateLimiter
from worker.api.retry_after import MAX_RETRY_AFTER_S
from worker.broker.redis_sockets import records_socket_options
from worker.masking import masked_reprs
from worker.ops.tracing import request_tracing
from worker.pipeline import Dispatcher
from worker.pipeline.core import Pipeline
from worker.pipeline.due_polls import DuePoll, DuePolls, due_polls_key
from worker.pipeline.outbox import Outbox, lost_after_s
from worker.pipeline.schedule import PollSchedule
from worker.pipeline.store import RequestStore, now
from worker.process.flow_wiring import call_limits, fallbacks, pin_vault, verifications
from worker.process.poll_runner import PollRunner
from worker.process.result_sink import CeleryResultSink
from worker.settings import Settings, is_rabbitmq
from worker.settings.rules import fixed_pins_of
from worker.webhooks.delivery import WebhookDeliverer
from worker.webhooks.events import WebhookEvents
from worker.webhooks.guard import guarded_session
from worker.webhooks.store import WebhookStore

__all__ = [
    "CeleryDispatcher",
    "build_pipeline",
    "build_poll_runner",
    "build_webhook_deliverer",
    "records_redis",
    "webhook_store",
]


class CeleryDispatcher(Dispatcher):
    """Sends our own follow-up steps: polls into the due set in Redis, re-sent starts as Celery
    messages (masked reprs, the anchoring headers)."""

    def __init__(self, app: Celery, queue: str, due_polls: DuePolls) -> None:
        self._app = app
        self._queue = queue
        self._due_polls = due_polls
        self._whole_seconds = is_rabbitmq(str(app.conf.broker_url or ""))

    def _countdown(self, seconds: float) -> float | None:
        if seconds <= 0:
            return None
        # RabbitMQ's native delayed delivery routes by whole seconds, and Celery 5.7 fails
        # ("countdown must be a positive number") on a countdown under one second.
        return max(seconds, 1.0) if self._whole_seconds else seconds

    @property
    def due_polls(self) -> DuePolls:
        return self._due_polls

    def send_poll(self, request_id: str, token: str, countdown_s: float) -> None:
        # No message: the poll waits in Redis for a runner (worker.process.poll_runner), which
        # retries failed polls itself.
        self._due_polls.add(DuePoll(request_id, token), _due_at(countdown_s))

    def hand_on_poll(
        self, request_id: str, token: str, next_token: str, countdown_s: float, progress_by: float
    ) -> bool:
        poll = DuePoll(request_id, token)
        return self._due_polls.hand_on(poll, next_token, _due_at(countdown_s), progress_by)

    def resend_start(
        self,
        task_id: str,
        kwargs: dict[str, Any],
        requested_at: float,
        attempt: int,
        countdown_s: float,
        extra_headers: dict[str, Any] | None = None,
    ) -> None:
        argsrepr, kwargsrepr = masked_reprs((), kwargs)
        self._app.send_task(
            START_TASK,
            kwargs=kwargs,
            task_id=task_id,
            countdown=self._countdown(countdown_s),
            queue=self._queue,
            argsrepr=argsrepr,
            kwargsrepr=kwargsrepr,
            headers={
                "callpass_requested_at": requested_at,
                "callpass_attempt": attempt,
                **(extra_headers or {}),
            },
        )


def _due_at(countdown_s: float) -> float:
    return now() + max(countdown_s, 0.0)


_local = threading.local()


def _thread_client(settings: Settings, guard: ApiGuard) -> CallPassClient:
    # One requests.Session per thread: sessions are not documented as thread-safe. Kept with
    # the guard it was built for: another pipeline in this process (its own guard) gets its own.
    held: tuple[ApiGuard, CallPassClient] | None = getattr(_local, "client", None)
    if held is None or held[0] is not guard:
        held = (guard, CallPassClient.from_settings(settings, guard))
        _local.client = held
    return held[1]


def due_polls(settings: Settings, client: redis.Redis) -> DuePolls:
    """The due set; where the broker is this Redis, due polls yield to queued starts."""
    on_this_redis = settings.effective_broker_url == settings.redis_url
    yield_to = (settings.code_queue, settings.queue) if on_this_redis else ()
    return DuePolls(client, due_polls_key(settings.queue), yield_to)


def records_redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, **records_socket_options())


def webhook_store(settings: Settings, client: redis.Redis) -> WebhookStore:
    # Outlives the whole schedule, a Retry-After at its cap, and a day of workers being down.
    schedule_total = int(sum(settings.webhook_retry_schedule_s) + MAX_RETRY_AFTER_S)
    return WebhookStore(
        client,
        pending_ttl_s=schedule_total + 86_400,
        delivered_ttl_s=settings.result_expires_s,
        dead_ttl_s=settings.webhook_dead_ttl_s,
    )


def webhook_events(app: Celery, settings: Settings, client: redis.Redis) -> WebhookEvents:
    def dispatch(event_id: str, attempt: int) -> None:
        app.send_task(
            WEBHOOK_TASK, args=[event_id, attempt], queue=settings.effective_webhook_queue
        )

    return WebhookEvents(
        store=webhook_store(settings, client),
        dispatch=dispatch,
        policy=settings.webhook_policy,
        first_delay_s=settings.webhook_retry_schedule_s[0],
        # Past a queue wait and one attempt's deadline, a sent delivery counts as lost.
        lease_s=settings.effective_webhook_lease_s,
        default_url=settings.webhook_url,
        enabled=bool(settings.webhook_keys),
        tracing=request_tracing(settings),
    )


def build_webhook_deliverer(
    settings: Settings, app: Celery, events: WebhookEvents
) -> WebhookDeliverer:
    """Delivers what ``events`` (the pipeline's) stored: the same store, policy and lease."""
    sessions = threading.local()

    def session() -> requests.Session:
        # One session per thread, like the API client.
        current: requests.Session | None = getattr(sessions, "session", None)
        if current is None:
            current = guarded_session(events.policy)
            sessions.session = current
        return current

    def defer(event_id: str, attempt: int, countdown_s: float) -> None:
        app.send_task(
            WEBHOOK_TASK,
            args=[event_id, attempt],
            queue=settings.effective_webhook_queue,
            countdown=max(1.0, countdown_s),  # RabbitMQ's delayed delivery: whole seconds
        )

    return WebhookDeliverer(
        store=events.store,
        keys=settings.webhook_keys,
        schedule_s=settings.webhook_retry_schedule_s,
        timeout_s=settings.webhook_timeout_s,
        policy=events.policy,
        session=session,
        lock_s=events.lease_s,
        deadline_s=settings.effective_webhook_deadline_s,
        # Per process: the threads and gevent pools are one process; see the README.
        slots=threading.BoundedSemaphore(settings.webhook_concurrency),
        defer=defer,
        tracing=request_tracing(settings),
    )


def build_pipeline(settings: Settings, app: Celery) -> Pipeline:
    """A new pipeline with its own Redis client and API guard (the caller keeps it)."""
    redis_client = records_redis(settings.redis_url)
    breaker = CircuitBreaker(
        redis_client,
        settings.breaker_threshold,
        settings.breaker_window_s,
        settings.breaker_cooldown_s,
    )
    limiter = (
        GlobalRateLimiter(redis_client, settings.api_rate_limit_per_s)
        if settings.api_rate_limit_per_s
        else None
    )
    guard = ApiGuard(breaker, limiter)
    schedule = PollSchedule(
        interval_s=settings.poll_interval_s,
        end_slack_s=settings.poll_end_slack_s,
        first_poll_s=settings.poll_first_s,
        grace_s=settings.poll_grace_s,
    )
    return Pipeline(
        client=lambda: _thread_client(settings, guard),
        store=RequestStore(redis_client, ttl_s=settings.result_expires_s),
        sink=CeleryResultSink(app),
        dispatcher=CeleryDispatcher(app, settings.queue, due_polls(settings, redis_client)),
        schedule=schedule,
        default_timeout_s=settings.default_call_timeout_s,
        place_deadline_s=settings.place_deadline_s,
        max_start_s=settings.max_start_s,
        allowed_prefixes=settings.allowed_prefixes,
        poll_outage_s=settings.poll_outage_s,
        progress_slack_s=lost_after_s(settings.visibility_timeout_s),
        outbox=Outbox(redis_client, grace_s=lost_after_s(settings.visibility_timeout_s)),
        pins=pin_vault(settings, redis_client),
        pins_leave_worker=settings.pins_leave_worker,
        webhooks=webhook_events(app, settings, redis_client),
        verifications=verifications(settings, redis_client),
        fallbacks=fallbacks(settings, app, redis_client),
        call_limits=call_limits(settings, redis_client),
        test_pins=fixed_pins_of(settings.test_numbers),
        prefix_digits=settings.metrics_prefix_digits,
        tracing=request_tracing(settings),
    )


def build_poll_runner(
    settings: Settings, pipeline: Pipeline, pool_saturated: Callable[[], bool]
) -> PollRunner:
    """The runner of the polls ``pipeline`` sends (its dispatcher must be ours)."""
    dispatcher = pipeline.dispatcher
    if not isinstance(dispatcher, CeleryDispatcher):
        raise TypeError("the pipeline's polls are not in a due set of ours")
    return PollRunner(
        dispatcher.due_polls,
        pipeline.poll,
        concurrency=settings.poll_concurrency,
        lease_s=settings.poll_lease_s,
        yield_max_s=settings.poll_yield_max_s,
        pool_saturated=pool_saturated,
    )
