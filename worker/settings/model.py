"""Typed settings, read once from ``CALLPASS_*`` environment variables.

Every setting has a default that suits local use (a Redis on 127.0.0.1 and the bundled
simulator). A malformed value raises :class:`SettingsError` naming the variable and the rule,
so a worker with a bad configuration refuses to start instead of failing on the first call.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from worker.addresses import is_loopback
from worker.limits import WindowLimit, parse_window_limits
from worker.webhook_signature import parse_secret

if TYPE_CHECKING:
    from worker.webhook_guard import DestinationPolicy

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

__all__ = [
    "SIMULATOR_DEV_TOKEN",
    "Settings",
    "SettingsError",
    "get_settings",
    "is_rabbitmq",
    "reset_settings",
]

PREFIX = "CALLPASS_"

#: Token the bundled simulator accepts by default; never valid at the real service.
SIMULATOR_DEV_TOKEN = "0123456789abcdef0123456789abcdef"  # noqa: S105 - public, simulator only

#: Longest Retry-After honoured inside one HTTP exchange, in seconds (the client's cap).
MAX_INLINE_WAIT_S = 5.0
#: Backoff before re-sending a start that never reached the API, in seconds.
START_RETRY_DELAYS_S = (1.0, 2.0, 4.0, 8.0)
START_RETRY_MAX_DELAY_S = max(START_RETRY_DELAYS_S)
#: A webhook lease outlasts an attempt's deadline by this much: time to record the attempt.
WEBHOOK_LEASE_MARGIN_S = 10.0

# The contract's reading: lower-case hex, 32 or 64 characters.
_TOKEN_RE = re.compile(r"^(?:[0-9a-f]{32}|[0-9a-f]{64})$")

# Variables of the simulator, the contract suite and the demo share the prefix but not this class.
_OTHER_TOOLS = (
    "CALLPASS_SIM_",
    "CALLPASS_CONTRACT_",
    "CALLPASS_DEMO_",
    "CALLPASS_PROPERTY_",
    "CALLPASS_TEST_",
)


class SettingsError(ValueError):
    """A ``CALLPASS_*`` variable is malformed; the message names it and the rule."""

    def __init__(self, variable: str, rule: str) -> None:
        super().__init__(variable, rule)
        self.variable = variable
        self.rule = rule

    def __str__(self) -> str:
        return f"{self.variable}: {self.rule}"


class SecretStr:
    """A string that never shows itself in ``repr``/``str`` (logs, tracebacks, Flower)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "SecretStr('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretStr) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def _parse_float(name: str, raw: str, lo: float, hi: float) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(name, f"must be a number, got {raw!r}") from None
    if not lo <= value <= hi:
        raise SettingsError(name, f"must be between {lo:g} and {hi:g}, got {raw}")
    return value


def _parse_int(name: str, raw: str, lo: int, hi: int) -> int:
    if not re.fullmatch(r"-?[0-9]+", raw.strip()):
        raise SettingsError(name, f"must be a whole number, got {raw!r}")
    value = int(raw)
    if not lo <= value <= hi:
        raise SettingsError(name, f"must be between {lo} and {hi}, got {raw}")
    return value


def _parse_bool(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise SettingsError(name, f"must be true or false, got {raw!r}")


def _parse_url(name: str, raw: str, schemes: tuple[str, ...]) -> str:
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        parts = urlsplit("")
    if parts.scheme not in schemes or not parts.netloc:
        raise SettingsError(name, f"must be a URL with scheme {' or '.join(schemes)} and a host")
    return raw


def _parse_token(name: str, raw: str) -> SecretStr:
    if not _TOKEN_RE.fullmatch(raw):
        # Never echo the value: it is a secret even when malformed.
        raise SettingsError(
            name, f"must be 32 or 64 lower-case hex characters (got {len(raw)} characters)"
        )
    return SecretStr(raw)


def _parse_level(name: str, raw: str) -> str:
    level = raw.strip().upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise SettingsError(
            name, f"must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got {raw!r}"
        )
    return level


@dataclass(frozen=True)
class Settings:
    """All configuration of the worker, the CLI and the demo; see the README's table."""

    #: Base URL of the CallPassword API (the bundled simulator by default).
    api_url: str = "http://127.0.0.1:8099/"
    #: Bearer token; the default is the simulator's development token.
    api_token: SecretStr = field(default_factory=lambda: SecretStr(SIMULATOR_DEV_TOKEN))
    #: Redis holding request records (claims, callids); also the default broker and backend.
    redis_url: str = "redis://127.0.0.1:6379/0"
    broker_url: str = ""  # empty: same as redis_url
    result_backend: str = ""  # empty: same as redis_url
    queue: str = "callpass"
    connect_timeout_s: float = 3.05
    read_timeout_s: float = 10.0
    #: Extra read time for the synchronous methods, on top of the call's own timeout.
    sync_read_margin_s: float = 15.0
    http_attempts: int = 3
    ca_bundle: str = ""
    insecure_skip_tls_verify: bool = False
    #: Plain http sends the token in clear: only loopback hosts, unless this says otherwise.
    insecure_allow_http: bool = False
    default_call_timeout_s: int = 20
    poll_interval_s: float = 2.0
    poll_end_slack_s: float = 0.1
    #: Calls hardly end sooner: ringing polls split the time from here to the end poll.
    poll_first_s: float = 1.0
    poll_grace_s: float = 15.0
    place_deadline_s: float = 30.0
    result_expires_s: int = 86_400
    visibility_timeout_s: int = 300
    eta_task_limit: int = 20_000
    log_level: str = "INFO"
    #: API requests per second across all workers (0: no limit).
    api_rate_limit_per_s: int = 50
    #: Calls per number: CALLS/SECONDS pairs (empty: no limits).
    dn_limits: tuple[WindowLimit, ...] = (WindowLimit(3, 600), WindowLimit(10, 86_400))
    #: Numbers must start with one of these (empty: any number).
    allowed_prefixes: tuple[str, ...] = ()
    #: Transport failures within ``breaker_window_s`` that open the circuit (0: no breaker).
    breaker_threshold: int = 5
    breaker_window_s: float = 10.0
    breaker_cooldown_s: float = 5.0
    #: How long past ``timeout`` + grace polls go on while the API is unreachable.
    poll_outage_s: float = 300.0
    #: How long a pin can be checked with ``verify_code``, and how many tries it gets.
    pin_ttl_s: int = 600
    code_attempts: int = 3
    #: False: pins never leave the worker (no pin in results); producers use verify_code.
    pins_leave_worker: bool = True
    #: Key of the pins' HMAC; empty: derived from the API token (same on every worker).
    pin_hash_key: SecretStr = field(default_factory=lambda: SecretStr(""))
    #: Where events go when a request names no ``webhook_url`` (empty: nowhere).
    webhook_url: str = ""
    #: ``whsec_…`` signing secrets, comma-separated; every delivery is signed with each.
    webhook_secrets: SecretStr = field(default_factory=lambda: SecretStr(""))
    #: Delay before each delivery attempt, in seconds: the first, then after each failure.
    webhook_retry_schedule_s: tuple[float, ...] = (0, 5, 300, 1800, 7200, 18_000, 36_000)
    #: Connect and read time-out of one delivery, each, in seconds.
    webhook_timeout_s: float = 5.0
    #: Longest one delivery attempt takes, all told (0: twice ``webhook_timeout_s``).
    webhook_deadline_s: float = 0.0
    #: How long a sent delivery holds its event before it is sent again (0: a minute, or six
    #: times ``webhook_timeout_s`` if longer); above the deadline, checked at start-up.
    webhook_lease_s: float = 0.0
    #: Deliveries one worker process makes at once; more wait, so calls keep their threads.
    webhook_concurrency: int = 4
    #: Hosts deliveries may go to (``*.example.com`` for subdomains); empty: any public host.
    webhook_allowed_hosts: tuple[str, ...] = ()
    #: Hosts plain http may go to; everything else needs https.
    webhook_http_hosts: tuple[str, ...] = ()
    #: Private, loopback or link-local networks deliveries may reach anyway (CIDRs).
    webhook_allowed_networks: tuple[IPNetwork, ...] = ()
    #: How long dead-lettered events are kept for ``callpass webhooks replay``.
    webhook_dead_ttl_s: int = 7 * 86_400
    #: Queue of delivery tasks (empty: ``<queue>.webhooks``); every worker consumes it too.
    webhook_queue: str = ""
    #: Celery pool: threads (the work waits on HTTP), gevent, prefork or solo.
    worker_pool: str = "threads"
    #: ``text`` for people, ``json`` (one object per line) for log collectors.
    log_format: str = "text"
    #: Port of each worker's Prometheus endpoint (0: none) and the address it binds.
    metrics_port: int = 9808
    metrics_address: str = "127.0.0.1"
    #: File the worker touches with every Celery heartbeat (``callpass healthcheck``; empty: none).
    heartbeat_file: str = ""
    #: Seconds a stopping worker lets running tasks finish before it hands messages back.
    soft_shutdown_s: float = 10.0
    #: ``user:password`` (comma-separated, each checked) that Flower (``make run``, compose)
    #: asks for; empty: no login.
    flower_basic_auth: SecretStr = field(default_factory=lambda: SecretStr(""))
    #: Largest API answer body read; a longer one is malformed (the envelope is tiny).
    api_max_body_bytes: int = 65_536
    #: A Redis whose ``maxmemory-policy`` is not ``noeviction``: ``refuse`` to start, or ``warn``.
    redis_eviction_policy_check: str = "refuse"

    def __repr__(self) -> str:
        # A traceback or a debug line may show settings: never a URL's password.
        from worker.masking import redact_setting

        shown = (
            f"{f.name}={redact_setting(f.name, getattr(self, f.name))!r}" for f in fields(self)
        )
        return f"Settings({', '.join(shown)})"

    @property
    def webhook_keys(self) -> tuple[bytes, ...]:
        raw = self.webhook_secrets.get_secret_value()
        return tuple(parse_secret(part.strip()) for part in raw.split(",") if part.strip())

    @property
    def webhook_policy(self) -> DestinationPolicy:
        """Where webhook deliveries may go (the SSRF guard's rules)."""
        from worker.webhook_guard import DestinationPolicy

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
        return self.webhook_queue or f"{self.queue}.webhooks"

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
    def tls_verify(self) -> bool | str:
        """What ``requests`` takes as ``verify``."""
        if self.insecure_skip_tls_verify:
            return False
        return self.ca_bundle or True

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every ``CALLPASS_*`` variable; raise :class:`SettingsError`."""
        env = os.environ if environ is None else environ
        known = {PREFIX + f.name.upper() for f in fields(cls)}
        unknown = sorted(
            k
            for k in env
            if k.startswith(PREFIX) and k not in known and not k.startswith(_OTHER_TOOLS)
        )
        if unknown:
            raise SettingsError(unknown[0], "is not a known setting (see the README's table)")

        values = {
            f.name: _PARSERS[f.name](PREFIX + f.name.upper(), env[PREFIX + f.name.upper()])
            for f in fields(cls)
            if PREFIX + f.name.upper() in env
        }
        settings = cls(**values)
        settings.check_consistency()
        return settings

    def check_consistency(self) -> None:
        """Rules that tie settings together."""
        host = urlsplit(self.api_url).hostname or ""
        if (
            urlsplit(self.api_url).scheme == "http"
            and not is_loopback(host)
            and not self.insecure_allow_http
        ):
            raise SettingsError(
                PREFIX + "API_URL",
                "must be https (plain http would send the token in clear); http is accepted "
                "for loopback hosts, or anywhere with CALLPASS_INSECURE_ALLOW_HTTP=true",
            )
        if self.webhook_url and not self.webhook_secrets.get_secret_value():
            raise SettingsError(
                PREFIX + "WEBHOOK_URL", "needs CALLPASS_WEBHOOK_SECRETS to sign deliveries"
            )
        if self.webhook_url:
            # Otherwise every request without a webhook_url of its own would settle invalid.
            from worker.webhook_guard import DestinationRefused

            try:
                self.webhook_policy.check_url(self.webhook_url)
            except DestinationRefused as exc:
                raise SettingsError(PREFIX + "WEBHOOK_URL", exc.rule) from None
        self._check_webhook_lease()
        # A message not yet due (a countdown) or still running must never be handed to a
        # second worker: the visibility time-out exceeds the longest countdown plus a run.
        longest_countdown = max(
            # the widest gap between polls: placement to the first one, or one interval
            self.poll_first_s + self.poll_interval_s + self.poll_end_slack_s + 1.0,
            START_RETRY_MAX_DELAY_S,  # a start deferred while the API is unreachable
            self.max_start_s + 1.0,  # a duplicate waiting for a dialing delivery
        )
        needed = longest_countdown + self.max_start_s
        if self.visibility_timeout_s <= needed:
            raise SettingsError(
                PREFIX + "VISIBILITY_TIMEOUT_S",
                f"must exceed the longest countdown plus the longest run ({needed:g} s with "
                "these time-outs and attempts)",
            )

    def _check_webhook_lease(self) -> None:
        # A lease that ends while its attempt still runs sends the attempt again.
        lease, deadline = self.effective_webhook_lease_s, self.effective_webhook_deadline_s
        if lease < deadline + WEBHOOK_LEASE_MARGIN_S:
            raise SettingsError(
                PREFIX + "WEBHOOK_LEASE_S",
                f"must exceed CALLPASS_WEBHOOK_DEADLINE_S by at least "
                f"{WEBHOOK_LEASE_MARGIN_S:g} s (lease {lease:g} s, deadline {deadline:g} s): "
                "a delivery still in flight would be sent again",
            )


def is_rabbitmq(broker_url: str) -> bool:
    return broker_url.startswith(("amqp://", "amqps://", "pyamqp://"))


def _parse_queue(name: str, raw: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", raw):
        raise SettingsError(name, "must be 1-64 characters of letters, digits, _ . : -")
    return raw


def _parse_path(name: str, raw: str) -> str:
    if raw and not os.path.isfile(raw):
        raise SettingsError(name, f"must name an existing file, got {raw!r}")
    return raw


Parser = Callable[[str, str], Any]


def _floats(lo: float, hi: float) -> Parser:
    return lambda name, raw: _parse_float(name, raw, lo, hi)


def _ints(lo: int, hi: int) -> Parser:
    return lambda name, raw: _parse_int(name, raw, lo, hi)


def _urls(*schemes: str, optional: bool = False) -> Parser:
    return lambda name, raw: raw if optional and not raw else _parse_url(name, raw, schemes)


def _service_urls(*schemes: str, optional: bool = False) -> Parser:
    """A Redis or broker URL: credentials only before the host, where every log masks them."""

    def parse(name: str, raw: str) -> str:
        from worker.masking import secret_query_names

        url: str = _urls(*schemes, optional=optional)(name, raw)
        names = secret_query_names(url)
        if names:  # the names only, never the values
            raise SettingsError(
                name,
                f"must not carry credentials in its query string ({names[0]}=…): put them "
                "before the host, as in redis://:PASSWORD@host:6379/0 (kombu reads only those)",
            )
        return url

    return parse


_REDIS = ("redis", "rediss", "unix")

#: How each variable is read; the dataclass above holds the defaults.
_PARSERS: dict[str, Parser] = {
    "api_url": _urls("https", "http"),
    "api_token": _parse_token,
    "redis_url": _service_urls(*_REDIS),
    # No sentinel://: kombu needs a master name we do not take, and records need one URL.
    "broker_url": _service_urls(*_REDIS, "amqp", "amqps", optional=True),
    "result_backend": _service_urls(*_REDIS, optional=True),
    "queue": _parse_queue,
    "connect_timeout_s": _floats(0.1, 60),
    "read_timeout_s": _floats(0.1, 120),
    "sync_read_margin_s": _floats(0, 120),
    "http_attempts": _ints(1, 10),
    "ca_bundle": _parse_path,
    "insecure_skip_tls_verify": _parse_bool,
    "insecure_allow_http": _parse_bool,
    "default_call_timeout_s": _ints(2, 99),
    "poll_interval_s": _floats(0.1, 60),
    "poll_end_slack_s": _floats(0, 10),
    "poll_first_s": _floats(0.1, 600),
    "poll_grace_s": _floats(0, 600),
    "place_deadline_s": _floats(1, 3600),
    "result_expires_s": _ints(60, 30 * 86_400),
    "visibility_timeout_s": _ints(30, 86_400),
    "eta_task_limit": _ints(1, 1_000_000),
    "log_level": _parse_level,
    "api_rate_limit_per_s": _ints(0, 100_000),
    "dn_limits": lambda name, raw: _parse_limits(name, raw),
    "allowed_prefixes": lambda name, raw: _parse_prefixes(name, raw),
    "breaker_threshold": _ints(0, 1000),
    "breaker_window_s": _floats(0.1, 3600),
    "breaker_cooldown_s": _floats(0.1, 3600),
    "poll_outage_s": _floats(0, 86_400),
    "pin_ttl_s": _ints(10, 86_400),
    "code_attempts": _ints(1, 20),
    "pins_leave_worker": _parse_bool,
    "pin_hash_key": lambda name, raw: _parse_secret(name, raw),
    "webhook_url": _urls("https", "http", optional=True),
    "webhook_secrets": lambda name, raw: _parse_webhook_secrets(name, raw),
    "webhook_retry_schedule_s": lambda name, raw: _parse_schedule(name, raw),
    "webhook_timeout_s": _floats(0.1, 60),
    "webhook_deadline_s": lambda name, raw: _parse_zero_or_float(name, raw, 0.5, 600),
    "webhook_lease_s": lambda name, raw: _parse_zero_or_float(name, raw, 10, 86_400),
    "webhook_concurrency": _ints(1, 1000),
    "webhook_allowed_hosts": lambda name, raw: _parse_hosts(name, raw),
    "webhook_http_hosts": lambda name, raw: _parse_hosts(name, raw),
    "webhook_allowed_networks": lambda name, raw: _parse_networks(name, raw),
    "webhook_dead_ttl_s": _ints(3600, 365 * 86_400),
    "webhook_queue": lambda name, raw: _parse_queue(name, raw) if raw else raw,
    "worker_pool": lambda name, raw: _parse_choice(
        name, raw, ("threads", "gevent", "prefork", "solo")
    ),
    "log_format": lambda name, raw: _parse_choice(name, raw, ("text", "json")),
    "metrics_port": _ints(0, 65_535),
    "metrics_address": lambda name, raw: _parse_address(name, raw),
    "heartbeat_file": lambda name, raw: raw,
    "soft_shutdown_s": _floats(0, 3600),
    "flower_basic_auth": lambda name, raw: _parse_basic_auth(name, raw),
    "api_max_body_bytes": _ints(1024, 16 * 1024 * 1024),
    "redis_eviction_policy_check": lambda name, raw: _parse_choice(name, raw, ("refuse", "warn")),
}


def _parse_zero_or_float(name: str, raw: str, lo: float, hi: float) -> float:
    """0 (the derived default) or a number between ``lo`` and ``hi``."""
    value = _parse_float(name, raw, 0, hi)
    if 0 < value < lo:
        raise SettingsError(name, f"must be 0 (the default) or between {lo:g} and {hi:g}")
    return value


def _parse_choice(name: str, raw: str, choices: tuple[str, ...]) -> str:
    value = raw.strip().lower()
    if value not in choices:
        raise SettingsError(name, f"must be one of {', '.join(choices)}, got {raw!r}")
    return value


def _parse_address(name: str, raw: str) -> str:
    try:
        return str(ipaddress.ip_address(raw.strip()))
    except ValueError:
        raise SettingsError(name, f"must be an IP address like 0.0.0.0, got {raw!r}") from None


def _parse_basic_auth(name: str, raw: str) -> SecretStr:
    # Every entry, split as Flower splits FLOWER_BASIC_AUTH (each comma, nothing stripped):
    # Flower lets in a login equal to any one of them, so "admin:pw," admits an empty one.
    for index, entry in enumerate(raw.split(",") if raw else [], start=1):
        user, colon, password = entry.partition(":")
        if not entry.isascii() or not colon or not user.strip() or len(password.strip()) < 8:
            # The rule and the position only, never the value: it holds a password.
            raise SettingsError(
                name,
                f"entry #{index} must be user:password (ASCII, user not blank, a password of "
                "8+ characters); an empty entry (a trailing or doubled comma) lets anyone in",
            )
    return SecretStr(raw)


def _parse_webhook_secrets(name: str, raw: str) -> SecretStr:
    for index, part in enumerate(p.strip() for p in raw.split(",") if p.strip()):
        try:
            parse_secret(part)
        except ValueError as exc:  # the rule only: never the secret itself
            raise SettingsError(name, f"secret #{index + 1} {exc}") from None
    return SecretStr(raw)


def _parse_schedule(name: str, raw: str) -> tuple[float, ...]:
    delays = []
    for part in raw.split(","):
        try:
            delays.append(float(part))
        except ValueError:
            raise SettingsError(
                name, f"must be comma-separated seconds like 0,5,300, got {part.strip()!r}"
            ) from None
    if not 1 <= len(delays) <= 50 or not all(0 <= d <= 7 * 86_400 for d in delays):
        raise SettingsError(name, "must list 1 to 50 delays, each between 0 and 604800 seconds")
    return tuple(delays)


def _parse_hosts(name: str, raw: str) -> tuple[str, ...]:
    hosts = tuple(h.strip().lower() for h in raw.split(",") if h.strip())
    bad = [h for h in hosts if not re.fullmatch(r"(\*\.)?[a-z0-9.:_\[\]-]{1,253}", h)]
    if bad:
        raise SettingsError(name, f"must be comma-separated host names: {bad[0]!r}")
    return hosts


def _parse_networks(name: str, raw: str) -> tuple[IPNetwork, ...]:
    networks = []
    for part in (p.strip() for p in raw.split(",") if p.strip()):
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise SettingsError(
                name, f"must be comma-separated networks like 10.0.0.0/8, got {part!r}"
            ) from None
    return tuple(networks)


def _parse_secret(name: str, raw: str) -> SecretStr:
    if raw and len(raw) < 16:
        raise SettingsError(name, f"must be at least 16 characters (got {len(raw)})")
    return SecretStr(raw)


def _parse_limits(name: str, raw: str) -> tuple[WindowLimit, ...]:
    try:
        return parse_window_limits(raw)
    except ValueError as exc:
        raise SettingsError(
            name, f"must be CALLS/SECONDS pairs like 3/600,10/86400: {exc}"
        ) from None


def _parse_prefixes(name: str, raw: str) -> tuple[str, ...]:
    prefixes = tuple(p.strip() for p in raw.split(",") if p.strip())
    bad = [p for p in prefixes if not re.fullmatch(r"7[0-9]{0,14}", p)]
    if bad:
        raise SettingsError(
            name, f"must be comma-separated digit prefixes starting with 7: {bad[0]!r}"
        )
    return prefixes


_cached: Settings | None = None


def get_settings() -> Settings:
    """The process-wide settings, read on first use."""
    global _cached
    if _cached is None:
        _cached = Settings.from_env()
    return _cached


def reset_settings() -> None:
    """Forget the cached settings (tests change the environment)."""
    global _cached
    _cached = None
