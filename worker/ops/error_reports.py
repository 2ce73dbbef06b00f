"""Error reports to Sentry (optional: the ``errors`` extra), scrubbed before they leave.

:func:`init_error_reports` starts the SDK in a worker process when ``CALLPASS_SENTRY_DSN`` is
set: failed tasks (the SDK's Celery integration) and ERROR log lines become events, with the
INFO log lines and HTTP requests before them as breadcrumbs. :class:`ReportScrubber` walks
every event, breadcrumb and transaction before it is sent: phone numbers masked, pins, codes,
tokens, passwords and webhook secrets replaced by ``[Filtered]``, webhook URLs cut to their
host. A scrubber that fails drops its event rather than send it unscrubbed.

Local variables of stack frames are not captured at all (``include_local_variables=False``):
they hold the number, the pin and the token in shapes no scrubber can recognise (a model's
repr, a request body in bytes), and the file, line and log breadcrumbs are what a bug needs.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from typing import Any
from urllib.parse import unquote, urlsplit

from worker.masking import (
    CREDENTIAL_SCHEME_RE,
    PIN_IN_TEXT_RE,
    mask_dn,
    mask_log_text,
    redact_url,
    url_origin,
)
from worker.settings import Settings

__all__ = ["FILTERED", "ReportScrubber", "init_error_reports", "release"]

log = logging.getLogger(__name__)

FILTERED = "[Filtered]"
#: Keys whose values are dropped whole, wherever they are (besides the SDK's own denylist).
DENIED_KEYS = frozenset(
    {
        "pin",
        "pins",
        "code",
        "api_token",
        "pin_hash_key",
        "webhook_secrets",
        "test_numbers",
        "flower_basic_auth",
        "sentry_dsn",
        # An HTTP breadcrumb's URL parts beside "url": a receiver's query may hold its
        # secret, the API's the number.
        "http.query",
        "http.fragment",
        "query_string",
    }
)
# Key names that say credential (``hook_token``, ``redis_password``, ``x-auth-key``).
# Not "pass" alone: "callpass" is in our own names.
_SECRET_KEY_RE = re.compile(r"passw|secret|token|auth|cred|api_?key|cookie|signature", re.I)
#: Keys holding a phone number, and keys holding a URL.
NUMBER_KEYS = frozenset({"dn", "phone", "number"})
URL_KEYS = frozenset({"url", "webhook_url", "http.url"})
#: Integers that are ids or positions, not numbers to mask.
_STRUCTURAL_INT_KEYS = frozenset({"id", "thread_id", "lineno", "colno", "len"})

_URL_IN_TEXT_RE = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>()\[\]{},]+")
_SCHEME_WITH_PATH = ("redis", "rediss", "unix", "amqp", "amqps", "pyamqp")
# Per process: a prefork child starts a client of its own (the parent's sending thread does
# not survive the fork); the start-up line is logged once, by the parent.
_started = {"pid": 0, "announced": False}


def release() -> str:
    """``callpass-worker@<version>``: the release events name."""
    try:
        return f"callpass-worker@{version('callpass-worker')}"
    except PackageNotFoundError:
        return "callpass-worker@unknown"


def init_error_reports(settings: Settings) -> bool:
    """Start Sentry in this process if ``CALLPASS_SENTRY_DSN`` is set (once per process);
    True if reports are on."""
    dsn = settings.sentry_dsn.get_secret_value()
    if not dsn:
        return False
    if _started["pid"] == os.getpid():
        return True
    try:
        import sentry_sdk
        from sentry_sdk.integrations.celery import CeleryIntegration
        from sentry_sdk.scrubber import DEFAULT_DENYLIST, EventScrubber
    except ImportError:
        log.warning(
            "CALLPASS_SENTRY_DSN is set but sentry-sdk is not installed "
            "(pip install 'callpass-worker[errors]'): no error reports"
        )
        return False
    scrubber = ReportScrubber(settings)
    sentry_sdk.init(
        dsn=dsn,
        release=release(),
        environment=settings.sentry_environment or None,
        send_default_pii=False,
        include_local_variables=False,
        max_request_body_size="never",
        # The SDK's key scrubber over the parts it knows; ours then walks the whole event.
        event_scrubber=EventScrubber(denylist=[*DEFAULT_DENYLIST, *DENIED_KEYS], recursive=True),
        before_send=scrubber.event,
        before_send_transaction=scrubber.event,
        before_breadcrumb=scrubber.breadcrumb,
        # Errors only: no traces, and no trace headers added to the messages we publish.
        traces_sample_rate=None,
        # No sentry-trace/baggage headers on our HTTP requests either: baggage carries the
        # DSN's key, and the API and webhook receivers are third parties.
        trace_propagation_targets=[],
        auto_enabling_integrations=False,
        integrations=[CeleryIntegration(propagate_traces=False, monitor_beat_tasks=False)],
        in_app_include=["worker", "tasks"],
    )
    _started["pid"] = os.getpid()
    if not _started["announced"]:  # once per worker, not once per prefork child
        _started["announced"] = True
        _announce(settings, dsn)
    return True


def _announce(settings: Settings, dsn: str) -> None:
    log.info(
        "error reports: Sentry at %s, environment %s, release %s",
        redact_url(dsn),
        settings.sentry_environment or os.environ.get("SENTRY_ENVIRONMENT", "production"),
        release(),
    )


def _known_secrets(settings: Settings) -> Iterator[str]:
    """Secret values of these settings, each replaced wherever it shows in a text."""
    yield settings.api_token.get_secret_value()
    yield settings.pin_hash_key.get_secret_value()
    yield from settings.webhook_secrets.get_secret_value().split(",")
    for login in settings.flower_basic_auth.get_secret_value().split(","):
        yield login.partition(":")[2]
    for service in (settings.redis_url, settings.broker_url, settings.result_backend):
        password = urlsplit(service).password
        yield from (password, unquote(password)) if password else ()
    webhook = urlsplit(settings.webhook_url)
    yield webhook.path.strip("/") + (f"?{webhook.query}" if webhook.query else "")
    yield settings.sentry_dsn.get_secret_value()


def _is_number_int(value: Any, key: str) -> bool:
    """A phone number sent as an integer (ten digits or more, or under a number's key)."""
    if not isinstance(value, int) or isinstance(value, bool):
        return False
    return key in NUMBER_KEYS or (abs(value) >= 10**9 and key not in _STRUCTURAL_INT_KEYS)


class ReportScrubber:
    """``before_send`` / ``before_send_transaction`` / ``before_breadcrumb`` for these
    settings: a recursive walk that filters by key and scrubs every text."""

    def __init__(self, settings: Settings) -> None:
        # Longest first, so a secret that contains another is replaced whole; short values
        # ("/", a one-letter password) would replace ordinary text and are left to the rules.
        found = {s.strip() for s in _known_secrets(settings)}
        self._secrets = sorted((s for s in found if len(s) >= 6), key=len, reverse=True)
        self._api_origin = url_origin(settings.api_url)

    def event(self, event: Any, hint: Any) -> Any:
        """The event to send, scrubbed; ``None`` (dropped) if scrubbing fails."""
        try:
            # A task's arguments are never sent, whatever the SDK's defaults become: a
            # verify_code's are the typed code, a start_call's the number and keys.
            job = (event.get("extra") or {}).get("celery-job")
            if isinstance(job, dict):
                job.update({k: FILTERED for k in ("args", "kwargs") if k in job})
            return self.scrub(event)
        except Exception as exc:  # never send what could not be scrubbed
            log.warning("error report dropped: its scrubbing failed (%s)", type(exc).__name__)
            return None

    def breadcrumb(self, crumb: Any, hint: Any) -> Any:
        return self.event(crumb, hint)

    def scrub(self, value: Any, key: str = "") -> Any:
        """``value`` (found under ``key``) with nothing in it that must not leave."""
        lowered = key.lower()
        if lowered in DENIED_KEYS or _SECRET_KEY_RE.search(lowered):
            return value if value in (None, "") else FILTERED
        if isinstance(value, dict):
            return {k: self.scrub(v, str(k)) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.scrub(v, key) for v in value]
        if isinstance(value, str):
            if lowered in NUMBER_KEYS:
                return mask_dn(value)
            return self.url(value) if lowered in URL_KEYS else self.text(value)
        return mask_dn(value) if _is_number_int(value, lowered) else value

    def text(self, text: str) -> str:
        """Free text (a message, an exception, a breadcrumb): secrets, pins, URL paths,
        credentials and numbers hidden."""
        for secret in self._secrets:
            text = text.replace(secret, FILTERED)
        text = CREDENTIAL_SCHEME_RE.sub(rf"\1\2{FILTERED}", text)
        text = PIN_IN_TEXT_RE.sub(rf"\1{FILTERED}", text)
        text = _URL_IN_TEXT_RE.sub(lambda m: self.url(m.group(0)), text)
        return mask_log_text(text)  # also urllib3's "with url: /path" and the numbers

    def url(self, url: str) -> str:
        """The API's and the services' URLs keep their path (numbers masked, credentials
        hidden); any other (a webhook receiver's) keeps its host only."""
        scheme = url.partition("://")[0].lower()
        # The API's by its origin, not a prefix: "https://api.example.com.evil.net/…" is not.
        if url_origin(url) == self._api_origin or scheme in _SCHEME_WITH_PATH:
            return redact_url(self.text_without_urls(url), keep_path=True)
        return redact_url(url)

    def text_without_urls(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, FILTERED)
        return PIN_IN_TEXT_RE.sub(rf"\1{FILTERED}", text)
