"""Rules for the parameters of a call, checked before anything is sent or claimed.

Each rule raises :class:`~worker.errors.InvalidRequestError` naming the field and the rule,
in words a producer in another language can act on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from worker.errors import InvalidRequestError

__all__ = [
    "START_CALL_FIELDS",
    "StartRequest",
    "parse_start_request",
    "validate_callid",
    "validate_dn",
    "validate_request_id",
    "validate_timeout",
    "validate_webhook_url",
]

# The contract's reading: E.164 without "+", starting with 7, 11 to 15 ASCII digits.
_DN_RE = re.compile(r"7[0-9]{10,14}", re.ASCII)
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}", re.ASCII)
_CALLID_RE = re.compile(r"[A-Za-z0-9-]{1,128}", re.ASCII)

TIMEOUT_MIN_S = 2
TIMEOUT_MAX_S = 99
WEBHOOK_URL_MAX_LEN = 2048

#: The keyword arguments ``callpass.start_call`` takes; anything else is refused.
START_CALL_FIELDS = ("dn", "timeout", "webhook_url", "request_id")


def validate_dn(dn: object) -> str:
    if not isinstance(dn, str):
        raise InvalidRequestError("dn", f"must be a string of digits, got {type(dn).__name__}")
    if not _DN_RE.fullmatch(dn):
        raise InvalidRequestError(
            "dn", "must be 11 to 15 ASCII digits starting with 7, without '+' or spaces"
        )
    return dn


def validate_timeout(timeout: object) -> int:
    # bool is an int subclass: True must not pass as a 1-second call.
    if isinstance(timeout, bool) or not isinstance(timeout, int):
        raise InvalidRequestError(
            "timeout", f"must be a whole number of seconds, got {type(timeout).__name__}"
        )
    if not TIMEOUT_MIN_S <= timeout <= TIMEOUT_MAX_S:
        raise InvalidRequestError(
            # No echo of the value: a producer that mixed up its fields may have put a number here.
            "timeout",
            f"must be between {TIMEOUT_MIN_S} and {TIMEOUT_MAX_S} seconds",
        )
    return timeout


def validate_callid(callid: object) -> str:
    if not isinstance(callid, str) or not _CALLID_RE.fullmatch(callid):
        raise InvalidRequestError("callid", "must be 1 to 128 letters, digits or '-'")
    return callid


def validate_request_id(request_id: object) -> str:
    if not isinstance(request_id, str) or not _REQUEST_ID_RE.fullmatch(request_id):
        raise InvalidRequestError(
            "request_id", "must be 1 to 128 characters of letters, digits, '.', '_', ':' or '-'"
        )
    return request_id


def validate_webhook_url(url: object) -> str:
    if not isinstance(url, str) or len(url) > WEBHOOK_URL_MAX_LEN:
        raise InvalidRequestError(
            "webhook_url", f"must be a URL string of at most {WEBHOOK_URL_MAX_LEN} characters"
        )
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
    except ValueError:  # e.g. "http://[::1" or a host that NFKC-normalises into a separator
        hostname = None
        parts = None
    if parts is None or parts.scheme not in ("https", "http") or not hostname:
        raise InvalidRequestError("webhook_url", "must be an http(s) URL with a host")
    return url


@dataclass(frozen=True)
class StartRequest:
    """A validated ``start_call`` request."""

    dn: str
    timeout: int
    webhook_url: str | None
    request_id: str | None


def parse_start_request(
    args: tuple[Any, ...], kwargs: dict[str, Any], default_timeout: int
) -> StartRequest:
    """Validate the raw task arguments of ``callpass.start_call``.

    Arguments are keyword-only: a foreign producer's positional list is ambiguous, so it is
    refused rather than guessed at.
    """
    if args:
        raise InvalidRequestError(
            "args", f"must be empty: pass {', '.join(START_CALL_FIELDS)} as keyword arguments"
        )
    unknown = sorted(str(k) for k in kwargs if k not in START_CALL_FIELDS)
    if unknown:
        raise InvalidRequestError(
            unknown[0][:64],
            f"is not an argument of start_call (known: {', '.join(START_CALL_FIELDS)})",
        )
    if "dn" not in kwargs:
        raise InvalidRequestError("dn", "is required")
    dn = validate_dn(kwargs["dn"])
    raw_timeout = kwargs.get("timeout")
    timeout = default_timeout if raw_timeout is None else validate_timeout(raw_timeout)
    raw_url = kwargs.get("webhook_url")
    webhook_url = None if raw_url is None else validate_webhook_url(raw_url)
    raw_id = kwargs.get("request_id")
    request_id = None if raw_id is None else validate_request_id(raw_id)
    return StartRequest(dn=dn, timeout=timeout, webhook_url=webhook_url, request_id=request_id)
