"""The settings model: every ``CALLPASS_*`` variable as a typed field, its rule beside it.

Every setting has a default that suits local use (a Redis on 127.0.0.1 and the bundled
simulator). Read them with :func:`worker.settings.load_settings`, which names the variable
and the rule of a malformed value; the README's configuration table lists the same fields
(a test holds the two together).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any, Self

from pydantic import SecretStr, SerializerFunctionWrapHandler, model_serializer, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from callpass_producer.contracts.names import (
    CODE_QUEUE_SUFFIX,
    POLL_QUEUE_SUFFIX,
    WEBHOOK_QUEUE_SUFFIX,
)
from worker.api.limits import WindowLimit
from worker.api.retry import MAX_INLINE_WAIT_S
from worker.settings.consistency import check_consistency
from worker.settings.error_reports import ErrorReportSettings
from worker.settings.flows import VerificationFlowSettings
from worker.settings.lists import Delays, Hosts, Networks, Prefixes, WindowLimits
from worker.settings.rules import (
    BasicAuth,
    ExistingFile,
    Flag,
    HashKey,
    IPAddress,
    LogLevel,
    OptionalQueueName,
    QueueName,
    Token,
    WebhookSecrets,
    choice,
    number,
    service_url,
    url,
    whole_number,
    zero_or_number,
)
from worker.settings.tracing import TracingSettings
from worker.settings.variables import PREFIX, EnvironmentSource

if TYPE_CHECKING:
    from worker.webhooks.destinations import DestinationPolicy

#: Token the bundled simulator accepts by default; never valid at the real service.
SIMULATOR_DEV_TOKEN = "0123456789abcdef0123456789abcdef"  # noqa: S105 - public, simulator only

_REDIS = ("redis", "rediss", "unix")
#: A poll's lease outlasts its longest status exchange by this much.
POLL_LEASE_MARGIN_S = 10.0


def is_rabbitmq(broker_url: str) -> bool:
    return broker_url.startswith(("amqp://", "amqps://", "pyamqp://"))


class Settings(VerificationFlowSettings, ErrorReportSettings, TracingSettings):
    """All configuration of the worker, the CLI and the demo; see the README's table.

    ``Settings()`` reads ``os.environ`` through the fields' rules; :func:`load_settings` also
    refuses unknown ``CALLPASS_*`` variables and turns pydantic's error into a SettingsError.
    """

    model_config = SettingsConfigDict(env_prefix=PREFIX, frozen=True, hide_input_in_errors=True)

    #: Base URL of the CallPassword API (the bundled simulator by default).
    api_url: Annotated[str, url("https", "http")] = "http://127.0.0.1:8099/"
    #: Bearer token; the default is the simulator's development token.
    api_token: Token = SecretStr(SIMULATOR_DEV_TOKEN)
    #: Redis holding request records (claims, callids); also the default broker and backend.
    redis_url: Annotated[str, service_url(*_REDIS)] = "redis://127.0.0.1:6379/0"
    # No sentinel://: kombu needs a master name we do not take, and records need one URL.
    broker_url: Annotated[str, service_url(*_REDIS, "amqp", "amqps", optional=True)] = ""
    result_backend: Annotated[str, service_url(*_REDIS, optional=True)] = ""
    queue: QueueName = "callpass"
    connect_timeout_s: Annotated[float, number(0.1, 60)] = 3.05
    read_timeout_s: Annotated[float, number(0.1, 120)] = 10.0
    #: Extra read time for the synchronous methods, on top of the call's own timeout.
    sync_read_margin_s: Annotated[float, number(0, 120)] = 15.0
    http_attempts: Annotated[int, whole_number(1, 10)] = 3
    ca_bundle: ExistingFile = ""
    insecure_skip_tls_verify: Flag = False
    #: Plain http sends the token in clear: only loopback hosts, unless this says otherwise.
    insecure_allow_http: Flag = False
    default_call_timeout_s: Annotated[int, whole_number(2, 99)] = 20
    poll_interval_s: Annotated[float, number(0.1, 60)] = 2.0
    poll_end_slack_s: Annotated[float, number(0, 10)] = 0.1
    #: Calls hardly end sooner: ringing polls split the time from here to the end poll.
    poll_first_s: Annotated[float, number(0.1, 600)] = 1.0
    poll_grace_s: Annotated[float, number(0, 600)] = 15.0
    place_deadline_s: Annotated[float, number(1, 3600)] = 30.0
    result_expires_s: Annotated[int, whole_number(60, 30 * 86_400)] = 86_400
    visibility_timeout_s: Annotated[int, whole_number(30, 86_400)] = 300
    eta_task_limit: Annotated[int, whole_number(1, 1_000_000)] = 20_000
    log_level: LogLevel = "INFO"
    #: API requests per second across all workers (0: no limit).
    api_rate_limit_per_s: Annotated[int, whole_number(0, 100_000)] = 50
    #: Calls per number: CALLS/SECONDS pairs (empty: no limits).
    dn_limits: WindowLimits = (WindowLimit(3, 600), WindowLimit(10, 86_400))
    #: Numbers must start with one of these (empty: any number).
    allowed_prefixes: Prefixes = ()
    #: Transport failures within ``breaker_window_s`` that open the circuit (0: no breaker).
    breaker_threshold: Annotated[int, whole_number(0, 1000)] = 5
    breaker_window_s: Annotated[float, number(0.1, 3600)] = 10.0
    breaker_cooldown_s: Annotated[float, number(0.1, 3600)] = 5.0
    #: How long past ``timeout`` + grace polls go on while the API is unreachable.
    poll_outage_s: Annotated[float, number(0, 86_400)] = 300.0
    #: How long a pin can be checked with ``verify_code``, and how many tries it gets.
    pin_ttl_s: Annotated[int, whole_number(10, 86_400)] = 600
    code_attempts: Annotated[int, whole_number(1, 20)] = 3
    #: False: pins never leave the worker (no pin in results); producers use verify_code.
    pins_leave_worker: Flag = True
    #: Key of the pins' HMAC; empty: derived from the API token (same on every worker).
    pin_hash_key: HashKey = SecretStr("")
    #: Where events go when a request names no ``webhook_url`` (empty: nowhere).
    webhook_url: Annotated[str, url("https", "http", optional=True)] = ""
    #: ``whsec_…`` signing secrets, comma-separated; every delivery is signed with each.
    webhook_secrets: WebhookSecrets = SecretStr("")
    #: Delay before each delivery attempt, in seconds: the first, then after each failure.
    webhook_retry_schedule_s: Delays = (0, 5, 300, 1800, 7200, 18_000, 36_000)
    #: Connect and read time-out of one delivery, each, in seconds.
    webhook_timeout_s: Annotated[float, number(0.1, 60)] = 5.0
    #: Longest one delivery attempt takes, all told (0: twice ``webhook_timeout_s``).
    webhook_deadline_s: Annotated[float, zero_or_number(0.5, 600)] = 0.0
    #: How long a sent delivery holds its event before it is sent again (0: a minute, or six
    #: times ``webhook_timeout_s`` if longer); above the deadline, checked at start-up.
    webhook_lease_s: Annotated[float, zero_or_number(10, 86_400)] = 0.0
    #: Deliveries one worker process makes at once; more wait, so calls keep their threads.
    webhook_concurrency: Annotated[int, whole_number(1, 1000)] = 4
    #: Hosts deliveries may go to (``*.example.com`` for subdomains); empty: any public host.
    webhook_allowed_hosts: Hosts = ()
    #: Hosts plain http may go to; everything else needs https.
    webhook_http_hosts: Hosts = ()
    #: Private, loopback or link-local networks deliveries may reach anyway (CIDRs).
    webhook_allowed_networks: Networks = ()
    #: How long dead-lettered events are kept for ``callpass webhooks replay``.
    webhook_dead_ttl_s: Annotated[int, whole_number(3600, 365 * 86_400)] = 7 * 86_400
    #: Queue of delivery tasks (empty: ``<queue>.webhooks``); every worker consumes it too.
    webhook_queue: OptionalQueueName = ""
    #: Send Flower events for ``poll_status`` tasks too (several per call; off: starts,
    #: code checks and deliveries only).
    poll_task_events: Flag = False
    #: Polls one worker process runs at once, on threads of its own beside the pool.
    poll_concurrency: Annotated[int, whole_number(1, 1000)] = 16
    #: Longest a due poll waits behind queued starts before it runs anyway.
    poll_yield_max_s: Annotated[float, number(0, 600)] = 30.0
    #: Celery pool: threads (the work waits on HTTP), gevent, prefork or solo.
    worker_pool: Annotated[str, choice("threads", "gevent", "prefork", "solo")] = "threads"
    #: ``text`` for people, ``json`` (one object per line) for log collectors.
    log_format: Annotated[str, choice("text", "json")] = "text"
    #: Port of each worker's Prometheus endpoint (0: none; not 9808, celery-exporter's default,
    #: which often runs beside us) and the address it binds.
    metrics_port: Annotated[int, whole_number(0, 65_535)] = 9818
    metrics_address: IPAddress = "127.0.0.1"
    #: File the worker touches with every Celery heartbeat (``callpass healthcheck``; empty: none).
    heartbeat_file: str = ""
    #: Seconds a stopping worker lets running tasks finish before it hands messages back.
    soft_shutdown_s: Annotated[float, number(0, 3600)] = 10.0
    #: ``user:password`` (comma-separated, each checked) that Flower (``make run``, compose)
    #: asks for; empty: no login.
    flower_basic_auth: BasicAuth = SecretStr("")
    #: Largest API answer body read; a longer one is malformed (the envelope is tiny).
    api_max_body_bytes: Annotated[int, whole_number(1024, 16 * 1024 * 1024)] = 65_536
    #: A Redis whose ``maxmemory-policy`` is not ``noeviction``: ``refuse`` to start, or ``warn``.
    redis_eviction_policy_check: Annotated[str, choice("refuse", "warn")] = "refuse"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Exact names, raw text: the rules above read the README's formats, not JSON.
        return (init_settings, EnvironmentSource(settings_cls))

    @model_validator(mode="after")
    def _rules_between_settings(self) -> Self:
        check_consistency(self)
        return self

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # A traceback or a debug line may show settings: never a URL's password (secrets
        # show as SecretStr('**********')).
        from worker.masking import redact_setting

        for name, value in super().__repr_args__():
            yield name, redact_setting(name or "", value)

    @model_serializer(mode="wrap")
    def _dump_for_showing(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # What model_dump() gives is for printing and logging: URLs lose their credentials
        # as in repr, and secrets stay SecretStr (or '**********' in JSON mode).
        from worker.masking import redact_setting

        dumped: dict[str, Any] = handler(self)
        return {name: redact_setting(name, value) for name, value in dumped.items()}

    # --- derived values ------------------------------------------------------------------

    @property
    def webhook_keys(self) -> tuple[bytes, ...]:
        from worker.webhooks.signature import parse_secret

        raw = self.webhook_secrets.get_secret_value()
        return tuple(parse_secret(part.strip()) for part in raw.split(",") if part.strip())

    @property
    def webhook_policy(self) -> DestinationPolicy:
        """Where webhook deliveries may go (the SSRF guard's rules)."""
        from worker.webhooks.destinations import DestinationPolicy

        return DestinationPolicy(
            allowed_hosts=self.webhook_allowed_hosts,
            http_hosts=self.webhook_http_hosts,
            allowed_networks=self.webhook_allowed_networks,
        )

    @property
    def effective_webhook_deadline_s(self) -> float:
        return self.webhook_deadline_s or 2 * self.webhook_timeout_s

    @property
    def effective_webhook_lease_s(self) -> float:
        return self.webhook_lease_s or max(60.0, 6 * self.webhook_timeout_s)

    @property
    def effective_webhook_queue(self) -> str:
        return self.webhook_queue or self.queue + WEBHOOK_QUEUE_SUFFIX

    @property
    def code_queue(self) -> str:
        return self.queue + CODE_QUEUE_SUFFIX

    @property
    def poll_queue(self) -> str:
        return self.queue + POLL_QUEUE_SUFFIX

    @property
    def call_queues(self) -> tuple[str, ...]:
        """The queues of a call's life, most urgent first: code checks, starts, polls."""
        return (self.code_queue, self.queue, self.poll_queue)

    @property
    def consumed_queues(self) -> tuple[str, ...]:
        """What a worker consumes, most urgent first (the order a Redis broker serves them
        in): the calls' queues, then webhook deliveries."""
        return (*self.call_queues, self.effective_webhook_queue)

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or self.redis_url

    @property
    def effective_result_backend(self) -> str:
        return self.result_backend or self.redis_url

    @property
    def uses_simulator_token(self) -> bool:
        return self.api_token.get_secret_value() == SIMULATOR_DEV_TOKEN

    @property
    def max_start_s(self) -> float:
        """Longest one start exchange can take with its inline retries and waits, in seconds.

        A record left in ``dialing`` for longer belongs to a worker that died mid-request.
        """
        exchanges = self.http_attempts * (self.connect_timeout_s + self.read_timeout_s)
        # Between attempts: a Retry-After of at most MAX_INLINE_WAIT_S (backoff is shorter).
        return exchanges + (self.http_attempts - 1) * MAX_INLINE_WAIT_S + 1.0

    @property
    def poll_lease_s(self) -> float:
        """How long a taken poll is held before it falls due again (its runner died): past the
        longest status exchange (the same inline retries as a start's)."""
        return self.max_start_s + POLL_LEASE_MARGIN_S

    @property
    def tls_verify(self) -> bool | str:
        """What ``requests`` takes as ``verify``."""
        if self.insecure_skip_tls_verify:
            return False
        return self.ca_bundle or True
