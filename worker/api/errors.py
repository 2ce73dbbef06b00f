"""Errors of the CallPassword client: one tree, so a caller decides from the type alone.

::

    CallPassError                     root; never carries the token
    ├── InvalidRequestError           ours: a parameter broke a rule; nothing was sent
    ├── PermanentError                the API answered and retrying will not help
    │   ├── AuthError                 401/403: token missing, malformed or unknown
    │   └── ApiRejectedError          method-level error ("destination not allowed", …)
    ├── TransientError                safe to retry a *status* request after a pause
    │   ├── ConnectError              no connection was made: the request never left
    │   ├── DeadlinePassedError       a start not sent: its placement deadline passed
    │   ├── RateLimitedError          429 (``retry_after`` seconds, when the API said)
    │   ├── ServerError               5xx
    │   ├── ReadTimeoutError          connected, sent, no answer in time
    │   ├── ConnectionLostError       the connection broke after the request was sent
    │   └── MalformedResponseError    a body that is not the contract's JSON envelope
    │                                 (or larger than CALLPASS_API_MAX_BODY_BYTES)
    └── OutcomeUnknownError           a *start* request that may have reached the server:
                                      never sent again (the person would be called twice)

Every class passes all its fields to ``Exception.__init__`` so it survives Celery's JSON
result serializer, which rebuilds an exception as ``cls(*exc.args)``.
"""

from __future__ import annotations

__all__ = [
    "ApiRejectedError",
    "AuthError",
    "CallPassError",
    "ConnectError",
    "ConnectionLostError",
    "DeadlinePassedError",
    "InvalidRequestError",
    "MalformedResponseError",
    "OutcomeUnknownError",
    "PermanentError",
    "RateLimitedError",
    "ReadTimeoutError",
    "ServerError",
    "TransientError",
]


class CallPassError(Exception):
    """Root of the client's errors."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidRequestError(CallPassError):
    """A parameter broke a rule of the contract; the request was not sent."""

    def __init__(self, field: str, rule: str) -> None:
        Exception.__init__(self, field, rule)
        self.field = field
        self.rule = rule
        self.message = f"{field}: {rule}"


class PermanentError(CallPassError):
    """The API answered; the same request will get the same answer."""

    def __init__(self, message: str, http_status: int | None = None) -> None:
        Exception.__init__(self, message, http_status)
        self.message = message
        self.http_status = http_status


class AuthError(PermanentError):
    """The API refused the token (HTTP 401 or 403)."""


class ApiRejectedError(PermanentError):
    """A method-level error; ``message`` is the API's ``data.message`` verbatim."""


class TransientError(CallPassError):
    """A fault that may pass; a status request may be sent again."""

    def __init__(self, message: str, http_status: int | None = None) -> None:
        Exception.__init__(self, message, http_status)
        self.message = message
        self.http_status = http_status

    #: True when the request provably never reached the server, so a start may be resent.
    never_reached_server = False


class ConnectError(TransientError):
    """No connection could be made; the request never left this machine."""

    never_reached_server = True


class DeadlinePassedError(TransientError):
    """A start was not sent because its placement deadline passed; it must not be retried."""

    never_reached_server = True


class RateLimitedError(TransientError):
    """HTTP 429: the API refused to process the request; resend after ``retry_after`` s."""

    never_reached_server = True

    def __init__(
        self, message: str, http_status: int | None = 429, retry_after: float | None = None
    ) -> None:
        Exception.__init__(self, message, http_status, retry_after)
        self.message = message
        self.http_status = http_status
        self.retry_after = retry_after


class ServerError(TransientError):
    """HTTP 5xx. Only 503 says the request was not processed."""

    @property
    def never_reached_server(self) -> bool:  # type: ignore[override]
        return self.http_status == 503


class ReadTimeoutError(TransientError):
    """The request was sent and no answer came within the read time-out."""


class ConnectionLostError(TransientError):
    """The connection broke once the request was on its way (reset, closed mid-answer)."""


class MalformedResponseError(TransientError):
    """The body is not the contract's JSON envelope (or is larger than the cap)."""


class OutcomeUnknownError(CallPassError):
    """A start request may have reached the server; whether a call was placed is unknown."""

    def __init__(self, message: str, cause: str = "") -> None:
        Exception.__init__(self, message, cause)
        self.message = message
        self.cause = cause
