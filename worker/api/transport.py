"""The one boundary where ``requests`` and raw HTTP answers become :mod:`worker.api.errors`."""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from typing import Any

import requests
from urllib3.exceptions import (
    ConnectTimeoutError,
    NameResolutionError,
    NewConnectionError,
)

from worker.api.errors import (
    ApiRejectedError,
    AuthError,
    CallPassError,
    ConnectError,
    ConnectionLostError,
    MalformedResponseError,
    PermanentError,
    RateLimitedError,
    ReadTimeoutError,
    ServerError,
    TransientError,
)
from worker.api.retry_after import retry_after_s
from worker.exception_chain import find_in_chain

__all__ = ["envelope_data", "translate_transport_error"]

# urllib3 errors raised before a single byte of the request was sent.
_NOT_SENT = (NewConnectionError, ConnectTimeoutError, NameResolutionError)


def _never_sent(exc: BaseException) -> bool:
    """Walk the cause chain (requests wraps urllib3's MaxRetryError) for a connect failure."""
    return find_in_chain(exc, _NOT_SENT) is not None


def translate_transport_error(exc: requests.RequestException) -> CallPassError:
    """Map a ``requests`` exception to our tree; the message never holds headers or body."""
    if isinstance(exc, requests.ConnectTimeout) or (
        isinstance(exc, requests.ConnectionError) and _never_sent(exc)
    ):
        return ConnectError(f"could not connect to the API ({type(exc).__name__})")
    if isinstance(exc, requests.exceptions.SSLError):
        if find_in_chain(exc, ssl.SSLCertVerificationError) is not None:
            # Certificate checks come with the handshake, before the request: nothing was sent.
            return ConnectError("the API's TLS certificate was refused (see CALLPASS_CA_BUNDLE)")
        # Any other TLS error may come after the request went out (a reused connection).
        return ConnectionLostError("TLS error on the connection to the API")
    if isinstance(exc, requests.ReadTimeout):
        return ReadTimeoutError("the API did not answer within the read time-out")
    if isinstance(exc, requests.ConnectionError | requests.exceptions.ChunkedEncodingError):
        return ConnectionLostError(f"the connection to the API broke ({type(exc).__name__})")
    return TransientError(f"request to the API failed ({type(exc).__name__})")


def envelope_data(status_code: int, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    """Return ``data`` of a success envelope, or raise the error the answer stands for.

    The envelope decides, not the HTTP status alone (contract); a body that is not the
    envelope is a transient server fault.
    """
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        doc = None
    if not isinstance(doc, dict) or doc.get("status") not in ("success", "error"):
        # No excerpt of the body: a start answer may hold a pin.
        raise _http_error(status_code, headers, "") or MalformedResponseError(
            f"HTTP {status_code}: body ({len(body)} bytes) is not a JSON envelope"
        )
    data = doc.get("data")
    if doc["status"] == "error":
        message = data.get("message") if isinstance(data, dict) else None
        message = str(message) if message else "error without message"
        raise _http_error(status_code, headers, message) or ApiRejectedError(message, status_code)
    if not isinstance(data, dict):
        raise MalformedResponseError(f"HTTP {status_code}: success envelope without data object")
    if data.get("result") == "error":
        raise ApiRejectedError(str(data.get("message") or "error without message"), status_code)
    return data


def _http_error(
    status_code: int, headers: Mapping[str, str], message: str
) -> PermanentError | TransientError | None:
    """The error an HTTP status alone implies, when it implies one."""
    suffix = f": {message}" if message else ""
    if status_code in (401, 403):
        return AuthError(f"the API refused the token (HTTP {status_code}){suffix}", status_code)
    if status_code == 429:
        return RateLimitedError(
            f"rate limited by the API{suffix}", 429, retry_after_s(headers.get("Retry-After"))
        )
    if status_code >= 500:
        return ServerError(f"API server error (HTTP {status_code}){suffix}", status_code)
    return None
