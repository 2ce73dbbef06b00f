"""The keyword arguments of ``callpass.start_call``: each field with its rule, declared once.

The worker's admission (:func:`worker.validation.parse_start_request`), the producer helper and
``schemas/start_call.v1.json`` all read these. A refusal names the field and the rule in words a
producer in another language can act on: :func:`refusal_of` turns pydantic's error into them.
"""

from __future__ import annotations

from typing import Annotated, Final
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError

from worker.contracts.outcome import REQUEST_ID_MAX_LEN, TIMEOUT_MAX_S, TIMEOUT_MIN_S, Timeout

__all__ = [
    "START_CALL_FIELDS",
    "WEBHOOK_URL_MAX_LEN",
    "Dn",
    "RequestId",
    "StartCallArguments",
    "WebhookUrl",
    "field_rule",
    "refusal_of",
]

WEBHOOK_URL_MAX_LEN: Final = 2048

#: The keyword arguments ``callpass.start_call`` takes; anything else is refused.
START_CALL_FIELDS: Final = ("dn", "timeout", "webhook_url", "request_id")

_DN_RULE: Final = "must be 11 to 15 ASCII digits starting with 7, without '+' or spaces"
_TIMEOUT_RULE: Final = f"must be between {TIMEOUT_MIN_S} and {TIMEOUT_MAX_S} seconds"
_URL_TYPE_RULE: Final = f"must be a URL string of at most {WEBHOOK_URL_MAX_LEN} characters"
_URL_RULE: Final = "must be an http(s) URL with a host"
_REQUEST_ID_RULE: Final = (
    f"must be 1 to {REQUEST_ID_MAX_LEN} characters of letters, digits, '.', '_', ':' or '-'"
)

# What urlsplit reads as an http(s) URL with a host, as a JSON Schema (ECMA-262) pattern: the
# schema's account of _http_url_with_host. Left out: control characters inside the URL (urlsplit
# drops tabs and newlines), hosts that NFKC-normalise into a separator, and brackets anywhere
# but around an IPv6 host ("https://h[::1]" passes urlsplit; the schema refuses it).
_URL_SCHEMA_PATTERN: Final = (
    r"^[\u0000-\u0020]*[Hh][Tt][Tt][Pp][Ss]?://(?:[^/?#@\[\]]*@)*"
    r"(?:[^/?#@:\[\]][^/?#@\[\]]*|\[[0-9A-Fa-f:.]+\][^/?#@\[\]]*)(?:[/?#]|$)"
)


def _http_url_with_host(url: str) -> str:
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
    except ValueError:  # e.g. "http://[::1" or a host that NFKC-normalises into a separator
        raise PydanticCustomError("http_url_with_host", _URL_RULE) from None
    if parts.scheme not in ("https", "http") or not hostname:
        raise PydanticCustomError("http_url_with_host", _URL_RULE)
    return url


#: E.164 without "+", starting with 7: 11 to 15 ASCII digits (the contract's reading).
Dn = Annotated[str, Field(pattern=r"^7[0-9]{10,14}$")]
RequestId = Annotated[str, Field(pattern=f"^[A-Za-z0-9._:-]{{1,{REQUEST_ID_MAX_LEN}}}$")]
WebhookUrl = Annotated[
    str,
    Field(max_length=WEBHOOK_URL_MAX_LEN, json_schema_extra={"pattern": _URL_SCHEMA_PATTERN}),
    AfterValidator(_http_url_with_host),
]


class StartCallArguments(BaseModel):
    """What a producer passes; ``None`` and absent are the same (the worker's default)."""

    # strict: "20", 20.0 and True are not a timeout of 20 s; b"7999…" is not a number.
    model_config = ConfigDict(
        hide_input_in_errors=True,  # errors never show a number or a pin
        frozen=True,
        extra="forbid",
        strict=True,
        title="callpass.start_call keyword arguments, version 1",
        json_schema_extra={
            "description": "The kwargs of a callpass.start_call message (args must be empty). "
            "Anything else settles as outcome 'invalid' naming the field and the rule; "
            "no call is placed. timeout is a JSON integer written without a fraction: "
            "20.0 is refused, although JSON Schema's 'integer' lets it through."
        },
    )

    dn: Dn = Field(description="E.164 without '+': 11 to 15 ASCII digits starting with 7.")
    timeout: Timeout | None = Field(
        None,
        description="Seconds the call may ring; null or absent: CALLPASS_DEFAULT_CALL_TIMEOUT_S.",
    )
    webhook_url: WebhookUrl | None = Field(
        None,
        description="Where call.placed and call.completed events go (signed, Standard "
        "Webhooks). https, or http to a host in CALLPASS_WEBHOOK_HTTP_HOSTS; private addresses "
        "refused unless in CALLPASS_WEBHOOK_ALLOWED_NETWORKS. Null or absent: "
        "CALLPASS_WEBHOOK_URL, if set.",
    )
    request_id: RequestId | None = Field(
        None,
        description="The producer's idempotency key: the same request_id is never dialed "
        "twice. Null or absent: the task id.",
    )


def _type_name(error: ErrorDetails) -> str:
    return type(error["input"]).__name__


def _dn_rule(error: ErrorDetails) -> str:
    if error["type"] == "missing":
        return "is required"
    if error["type"] == "string_type":
        return f"must be a string of digits, got {_type_name(error)}"
    return _DN_RULE


def _timeout_rule(error: ErrorDetails) -> str:
    if error["type"] == "int_type":
        return f"must be a whole number of seconds, got {_type_name(error)}"
    # No echo of the value: a producer that mixed up its fields may have put a number here.
    return _TIMEOUT_RULE


def _webhook_url_rule(error: ErrorDetails) -> str:
    return _URL_TYPE_RULE if error["type"] in ("string_type", "string_too_long") else _URL_RULE


def _request_id_rule(error: ErrorDetails) -> str:
    return _REQUEST_ID_RULE


_RULES: Final = {
    "dn": _dn_rule,
    "timeout": _timeout_rule,
    "webhook_url": _webhook_url_rule,
    "request_id": _request_id_rule,
}


def field_rule(field: str, details: ErrorDetails) -> str:
    """The rule ``field`` broke, in the words a refusal names it with."""
    return _RULES[field](details)


def refusal_of(error: ValidationError) -> tuple[str, str]:
    """``(field, rule)`` for the first field, in declaration order, that broke its rule.

    Unknown arguments are the caller's to refuse first (their names are the producer's words,
    and a refusal names only one of them).
    """
    for details in error.errors(include_url=False, include_context=False):
        field = details["loc"][0] if details["loc"] else None
        if isinstance(field, str) and field in _RULES:
            return field, _RULES[field](details)
    raise ValueError(f"not a start_call field error ({error.error_count()} errors)") from error
