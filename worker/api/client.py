"""Client of the CallPassword API (see ``docs/callpass-api.md``).

One :class:`requests.Session` per client (pooled keep-alive connections, TLS verification on;
the worker builds one client per thread, since sessions are not documented as thread-safe), explicit
connect and read time-outs on every request, ``requests`` errors translated to
:mod:`worker.api.errors` at one boundary, and short retries with tenacity:

* status requests are retried on any :class:`~worker.api.errors.TransientError`;
* a start request is retried only when it provably never reached the server (no connection
  was made, or the API answered 429/503); any other fault becomes
  :class:`~worker.api.errors.OutcomeUnknownError`, because a repeated start calls the person twice;
* a start given up on is given up on the wire too, and none is written after its ``send_by``
  (see :mod:`worker.api.http`); answers are read up to ``max_body_bytes``.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import requests

from callpass_producer.contracts.outcome import PIN_PATTERN, Outcome
from worker.api.errors import (
    CallPassError,
    DeadlinePassedError,
    MalformedResponseError,
    OutcomeUnknownError,
    TransientError,
)
from worker.api.guard import RequestGuard
from worker.api.http import ApiAdapter, api_socket_options, read_capped
from worker.api.results import classify_result
from worker.api.retry import retrying
from worker.api.transport import envelope_data, translate_transport_error
from worker.masking import mask_dn
from worker.ops import metrics
from worker.settings import SecretStr, Settings
from worker.validation import validate_callid, validate_dn, validate_timeout

__all__ = ["CallPassClient", "CallStatus", "StartedCall"]

log = logging.getLogger(__name__)

_PIN_RE = re.compile(PIN_PATTERN, re.ASCII)

T = TypeVar("T")

START_PATH = "api/{version}/start-call-password/"
STATUS_PATH = "api/v2.0/get-call-password-status/"


@dataclass(frozen=True)
class StartedCall:
    """A start accepted by the API."""

    callid: str
    pin: str
    #: Raw ``result`` of the start answer (``"null"`` for an async start).
    raw_result: str | None


@dataclass(frozen=True)
class CallStatus:
    """A call's status: ``outcome`` is ``None`` while it is in progress."""

    callid: str
    raw_result: str | None
    outcome: Outcome | None
    pin: str | None = None

    @property
    def final(self) -> bool:
        return self.outcome is not None


class CallPassClient:
    """Synchronous; one per thread (its ``requests.Session`` is not shared between threads)."""

    def __init__(
        self,
        base_url: str,
        token: SecretStr,
        *,
        connect_timeout_s: float = 3.05,
        read_timeout_s: float = 10.0,
        sync_read_margin_s: float = 15.0,
        attempts: int = 3,
        verify: bool | str = True,
        session: requests.Session | None = None,
        guard: RequestGuard | None = None,
        max_body_bytes: int = 65_536,
    ) -> None:
        self._base_url = base_url if base_url.endswith("/") else base_url + "/"
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self._sync_read_margin_s = sync_read_margin_s
        self._attempts = attempts
        self._guard = guard
        self._max_body_bytes = max_body_bytes
        self._session = session or requests.Session()
        # The kernel gives up on a request unacknowledged for as long as one exchange may take.
        options = api_socket_options(connect_timeout_s + read_timeout_s, read_timeout_s)
        for prefix in ("https://", "http://"):
            self._session.mount(prefix, ApiAdapter(options))
        # Passed with every request: a session-level `verify` loses to REQUESTS_CA_BUNDLE and
        # CURL_CA_BUNDLE in the environment (requests' merge rules), and CALLPASS_CA_BUNDLE must
        # win over them.
        self._verify = verify
        # The token lives only in the session's headers: never in a URL, an argument or a log.
        self._session.headers["Authorization"] = f"Bearer {token.get_secret_value()}"
        self._session.headers["User-Agent"] = "callpass-worker"

    @classmethod
    def from_settings(cls, settings: Settings, guard: RequestGuard | None = None) -> CallPassClient:
        return cls(
            settings.api_url,
            settings.api_token,
            connect_timeout_s=settings.connect_timeout_s,
            read_timeout_s=settings.read_timeout_s,
            sync_read_margin_s=settings.sync_read_margin_s,
            attempts=settings.http_attempts,
            verify=settings.tls_verify,
            guard=guard,
            max_body_bytes=settings.api_max_body_bytes,
        )

    def close(self) -> None:
        self._session.close()

    # -- methods of the API ---------------------------------------------------------------

    def start_call_async(
        self,
        dn: str,
        timeout: int,
        request_id: str | None = None,
        send_by: float | None = None,
    ) -> StartedCall:
        """Place a call with v2.0 ``async=1``; the answer comes at once with callid and pin.

        With ``send_by`` (epoch seconds) no attempt is written after it: past it the start
        fails with :class:`DeadlinePassedError` (nothing sent), and a connect may take only
        until then."""
        params = {"dn": validate_dn(dn), "timeout": validate_timeout(timeout), "async": 1}
        return self._start("v2.0", params, self._read_timeout_s, request_id, send_by)

    def start_call_sync(
        self, dn: str, timeout: int, *, version: str = "v1.0", request_id: str | None = None
    ) -> CallStatus:
        """Place a call and wait for its outcome (v1.0, or v2.0 with ``async=0``)."""
        if version not in ("v1.0", "v2.0"):
            raise ValueError(f"version must be v1.0 or v2.0, got {version!r}")
        params: dict[str, Any] = {"dn": validate_dn(dn), "timeout": validate_timeout(timeout)}
        if version == "v2.0":
            params["async"] = 0
        read_timeout = timeout + self._sync_read_margin_s
        started = self._start(version, params, read_timeout, request_id)
        return CallStatus(
            callid=started.callid,
            raw_result=started.raw_result,
            outcome=_classify(started.raw_result),
            pin=started.pin,
        )

    def get_status(self, callid: str) -> CallStatus:
        """Ask for a call's status; safe to repeat, so transient faults are retried."""
        params = {"callid": validate_callid(callid)}
        data = self._retrying(
            lambda: self._post(STATUS_PATH, params, self._read_timeout_s),
            retry_if=lambda exc: isinstance(exc, TransientError),
        )
        raw = data.get("result")
        return CallStatus(
            callid=str(data.get("callid") or callid),
            raw_result=None if raw is None else str(raw),
            outcome=_classify(raw),
        )

    # -- plumbing -------------------------------------------------------------------------

    def _start(
        self,
        version: str,
        params: dict[str, Any],
        read_timeout_s: float,
        request_id: str | None,
        send_by: float | None = None,
    ) -> StartedCall:
        headers = {"X-Request-Id": request_id} if request_id else None
        path = START_PATH.format(version=version)
        try:
            return self._retrying(
                lambda: _started(self._post(path, params, read_timeout_s, headers, send_by)),
                retry_if=lambda exc: (
                    isinstance(exc, TransientError)
                    and exc.never_reached_server
                    and not isinstance(exc, DeadlinePassedError)
                ),
            )
        except TransientError as exc:
            if exc.never_reached_server:
                raise
            log.warning(
                "start to %s may have reached the API (%s): not resent",
                mask_dn(params["dn"]),
                type(exc).__name__,
            )
            raise OutcomeUnknownError(
                "the start request may have reached the API; whether a call was placed is unknown",
                cause=f"{type(exc).__name__}: {exc}",
            ) from exc

    def _post(
        self,
        path: str,
        params: dict[str, Any],
        read_timeout_s: float,
        headers: dict[str, str] | None = None,
        send_by: float | None = None,
    ) -> dict[str, Any]:
        # Checked before the guard too: a refusal after it would leave a half-open breaker's
        # probe unreported (the rare deadline passed while waiting for a rate slot still does).
        self._connect_budget(send_by)
        if self._guard is not None:
            self._guard.before_request()  # may refuse: nothing is sent then
        connect_timeout_s = self._connect_budget(send_by)
        # The method label of callpass_api_requests_total.
        method = (
            "status"
            if path == STATUS_PATH
            else f"start_{'async' if params.get('async') == 1 else 'sync'}"
        )
        sent = time.monotonic()
        try:
            try:
                response = self._session.post(
                    self._base_url + path,
                    data=params,
                    headers=headers,
                    timeout=(connect_timeout_s, read_timeout_s),
                    allow_redirects=False,
                    verify=self._verify,
                    stream=True,  # the body is read under its cap
                )
            except requests.RequestException as exc:
                metrics.api_request(method, None, time.monotonic() - sent)
                raise translate_transport_error(exc) from exc
            metrics.api_request(method, response.status_code, time.monotonic() - sent)
            body = read_capped(response, self._max_body_bytes)
            data = envelope_data(response.status_code, response.headers, body)
        except CallPassError as exc:
            if self._guard is not None:
                self._guard.after_request(exc)
            raise
        if self._guard is not None:
            self._guard.after_request(None)
        return data

    def _connect_budget(self, send_by: float | None) -> float:
        """The connect time-out, cut to what is left before ``send_by``; past it, refuse."""
        if send_by is None:
            return self._connect_timeout_s
        left = send_by - time.time()
        if left <= 0:
            raise DeadlinePassedError("start not sent: its placement deadline passed")
        return min(self._connect_timeout_s, left)

    def _retrying(self, fn: Callable[[], T], retry_if: Callable[[BaseException], bool]) -> T:
        return retrying(self._attempts, retry_if)(fn)


def _classify(raw: object) -> Outcome | None:
    try:
        return classify_result(raw)
    except ValueError as exc:
        raise MalformedResponseError(str(exc)) from None


def _started(data: dict[str, Any]) -> StartedCall:
    """Parse a start answer. A success without callid or pin is malformed (and, for a start,
    the call may have been placed: the caller turns it into an unknown outcome)."""
    callid, pin = data.get("callid"), data.get("pin")
    if not isinstance(callid, str) or not callid:
        raise MalformedResponseError("start answer has no callid")
    if not isinstance(pin, str) or not _PIN_RE.fullmatch(pin):
        raise MalformedResponseError("start answer has no 4-6 digit pin")
    raw = data.get("result")
    return StartedCall(callid=callid, pin=pin, raw_result=None if raw is None else str(raw))
