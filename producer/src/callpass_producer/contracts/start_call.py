"""The keyword arguments of ``callpass.start_call``: each field with its rule, declared once.

The worker's admission (:func:`worker.validation.parse_start_request`), the producer helper and
``schemas/start_call.v1.json`` all read these. A refusal names the field and the rule in words a
producer in another language can act on: :func:`refusal_of` turns pydantic's error into them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Final
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError

from callpass_producer.contracts.outcome import (
    REQUEST_ID_MAX_LEN,
    TIMEOUT_MAX_S,
    TIMEOUT_MIN_S,
    Timeout,
)

__all__ = [
    "FALLBACK_TASK_MAX_LEN",
    "LIMIT_KEYS_MAX",
    "LIMIT_KEY_NAME",
    "LIMIT_KEY_VALUE_MAX_LEN",
    "START_CALL_FIELDS",
    "VERSION_2_FIELDS",
    "WEBHOOK_URL_MAX_LEN",
    "Dn",
    "FallbackTask",
    "LimitKeys",
    "QueueName",
    "RequestId",
    "StartCallArguments",
    "WebhookUrl",
    "field_rule",
    "refusal_of",
]

WEBHOOK_URL_MAX_LEN: Final = 2048
FALLBACK_TASK_MAX_LEN: Final = 200

#: The keyword arguments ``callpass.start_call`` takes; anything else is refused.
START_CALL_FIELDS: Final = (
    "dn",
    "timeout",
    "webhook_url",
    "request_id",
    "verification_id",
    "resend",
    "fallback_task",
    "fallback_queue",
    "limit_keys",
)
#: Arguments version 1 did not have: a request that passes any of them (not null) gets the
#: version-2 outcome document.
VERSION_2_FIELDS: Final = START_CALL_FIELDS[4:]
#: Names of the keys in ``limit_keys`` (CALLPASS_KEY_LIMITS limits them).
LIMIT_KEY_NAME: Final = r"[a-z][a-z0-9_]{0,31}"
LIMIT_KEYS_MAX: Final = 8
LIMIT_KEY_VALUE_MAX_LEN: Final = 256

_DN_RULE: Final = "must be 11 to 15 ASCII digits starting with 7, without '+' or spaces"
_TIMEOUT_RULE: Final = f"must be between {TIMEOUT_MIN_S} and {TIMEOUT_MAX_S} seconds"
_URL_TYPE_RULE: Final = f"must be a URL string of at most {WEBHOOK_URL_MAX_LEN} characters"
_URL_RULE: Final = "must be an http(s) URL with a host"
_VERIFICATION_ID_RULE: Final = (
    f"must be 1 to {REQUEST_ID_MAX_LEN} characters of letters, digits, '.', '_', ':' or '-'"
)
_RESEND_RULE: Final = "must be true or false"
_FALLBACK_TASK_RULE: Final = (
    f"must be a Celery task name: 1 to {FALLBACK_TASK_MAX_LEN} characters, dot-separated "
    "words of letters, digits, '_' or '-', each starting with a letter or '_'"
)
_FALLBACK_OWN_RULE: Final = "must not name a callpass.* task (the worker's own)"
_LIMIT_KEYS_RULE: Final = (
    f"must map at most {LIMIT_KEYS_MAX} names (1 to 32 lower-case letters, digits or '_', "
    f"starting with a letter) to strings of 1 to {LIMIT_KEY_VALUE_MAX_LEN} characters"
)
_QUEUE_RULE: Final = "must be 1 to 64 characters of letters, digits, '_', '.', ':' or '-'"
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


def _not_ours(name: str) -> str:
    # A producer could otherwise have the worker enqueue start_call itself, in a loop.
    if name.lower().startswith("callpass."):
        raise PydanticCustomError("not_a_callpass_task", _FALLBACK_OWN_RULE)
    return name


def _needs(field: str, when: dict[str, Any], other: str) -> dict[str, Any]:
    """JSON Schema for "``field`` matching ``when`` needs ``other`` (not null)"."""
    return {
        "if": {"properties": {field: when}, "required": [field]},
        "then": {"properties": {other: {"type": "string"}}, "required": [other]},
    }


#: E.164 without "+", starting with 7: 11 to 15 ASCII digits (the contract's reading).
Dn = Annotated[str, Field(pattern=r"^7[0-9]{10,14}$")]
RequestId = Annotated[str, Field(pattern=f"^[A-Za-z0-9._:-]{{1,{REQUEST_ID_MAX_LEN}}}$")]
FallbackTask = Annotated[
    str,
    Field(
        max_length=FALLBACK_TASK_MAX_LEN,
        pattern=r"^[A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z_][A-Za-z0-9_-]*)*$",
    ),
    AfterValidator(_not_ours),
]
QueueName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
LimitKeys = Annotated[
    dict[
        Annotated[str, Field(pattern=f"^{LIMIT_KEY_NAME}$")],
        Annotated[str, Field(min_length=1, max_length=LIMIT_KEY_VALUE_MAX_LEN)],
    ],
    Field(max_length=LIMIT_KEYS_MAX),
]
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
            "20.0 is refused, although JSON Schema's 'integer' lets it through. "
            "Passing any of verification_id, resend, fallback_task, fallback_queue or "
            "limit_keys makes the outcome a version-2 document.",
            # None and absent are the same: only a value that is not null needs the other.
            "allOf": [
                _needs("resend", {"const": True}, "verification_id"),
                _needs("fallback_queue", {"type": "string"}, "fallback_task"),
            ],
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
    verification_id: RequestId | None = Field(
        None,
        description="The verification this call belongs to. Without resend: the id of a new "
        "verification (null or absent: the request_id). With resend: the verification to "
        "call again, which must exist, be open and be for this dn.",
    )
    resend: bool | None = Field(
        None,
        description="true: another call in verification_id, refused (rate_limited, with "
        "retry_at) within the cooldown (CALLPASS_RESEND_COOLDOWNS_S) and past the cap "
        "(CALLPASS_RESEND_MAX_CALLS). Needs verification_id.",
    )
    fallback_task: FallbackTask | None = Field(
        None,
        description="A task of the product's (its SMS or voice sender), enqueued once when "
        "the call ends with next_step other_channel; kwargs verification_id, request_id, "
        "next_step, outcome (the document without its pin).",
    )
    fallback_queue: QueueName | None = Field(
        None,
        description="The queue fallback_task goes to; null or absent: CALLPASS_FALLBACK_QUEUE.",
    )
    limit_keys: LimitKeys | None = Field(
        None,
        description="Keys the fraud limits count calls by (CALLPASS_KEY_LIMITS), e.g. "
        '{"ip": "203.0.113.7", "account": "42"}; kept only as keyed hashes, never logged. '
        "A name with no limit configured is not counted.",
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


def _fallback_task_rule(error: ErrorDetails) -> str:
    return _FALLBACK_OWN_RULE if error["type"] == "not_a_callpass_task" else _FALLBACK_TASK_RULE


def _always(rule: str) -> Callable[[ErrorDetails], str]:
    """A field with one rule, whatever broke it."""
    return lambda error: rule


_RULES: Final = {
    "dn": _dn_rule,
    "timeout": _timeout_rule,
    "webhook_url": _webhook_url_rule,
    "request_id": _always(_REQUEST_ID_RULE),
    "verification_id": _always(_VERIFICATION_ID_RULE),
    "resend": _always(_RESEND_RULE),
    "fallback_task": _fallback_task_rule,
    "fallback_queue": _always(_QUEUE_RULE),
    "limit_keys": _always(_LIMIT_KEYS_RULE),
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
