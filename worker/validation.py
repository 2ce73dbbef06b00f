"""The worker's admission of a call's parameters, checked before anything is sent or claimed.

The rules are the fields of
:class:`callpass_producer.contracts.start_call.StartCallArguments` (and their types, which
the API client checks its parameters with); here a broken one becomes
:class:`~worker.api.errors.InvalidRequestError` naming the field and the rule.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, cast

from pydantic import ConfigDict, TypeAdapter, ValidationError

from callpass_producer.arguments import check_start_arguments, outcome_version_of
from callpass_producer.contracts.outcome import Timeout
from callpass_producer.contracts.start_call import (
    START_CALL_FIELDS,
    WEBHOOK_URL_MAX_LEN,
    Dn,
    RequestId,
    WebhookUrl,
    field_rule,
)
from callpass_producer.errors import InvalidArguments
from worker.api.errors import InvalidRequestError

__all__ = [
    "START_CALL_FIELDS",
    "WEBHOOK_URL_MAX_LEN",
    "StartRequest",
    "outcome_version_of",
    "parse_start_request",
    "validate_callid",
    "validate_dn",
    "validate_request_id",
    "validate_timeout",
    "validate_webhook_url",
]

# The API's call ids: not a start_call argument, but checked before a status request is sent.
_CALLID_RE = re.compile(r"[A-Za-z0-9-]{1,128}", re.ASCII)

# One field on its own, as strict as in the model (pydantic-core's validators, called directly).
_STRICT: Final = ConfigDict(strict=True)
_VALIDATE_DN: Final = TypeAdapter(Dn, config=_STRICT).validator.validate_python
_VALIDATE_TIMEOUT: Final = TypeAdapter(Timeout, config=_STRICT).validator.validate_python
_VALIDATE_WEBHOOK_URL: Final = TypeAdapter(WebhookUrl, config=_STRICT).validator.validate_python
_VALIDATE_REQUEST_ID: Final = TypeAdapter(RequestId, config=_STRICT).validator.validate_python


@dataclass(frozen=True)
class StartRequest:
    """A validated ``start_call`` request, its timeout resolved."""

    dn: str = field(repr=False)  # never shown in clear
    timeout: int
    webhook_url: str | None
    request_id: str | None
    verification_id: str | None = None
    resend: bool = False
    fallback_task: str | None = None
    fallback_queue: str | None = None
    limit_keys: dict[str, str] | None = field(default=None, repr=False)  # never shown
    #: 2 when any version-2 argument was passed: the outcome is a version-2 document.
    outcome_version: int = 1


def parse_start_request(
    args: tuple[Any, ...], kwargs: dict[str, Any], default_timeout: int
) -> StartRequest:
    """Validate the raw task arguments of ``callpass.start_call`` (the contract's rules:
    :func:`callpass_producer.arguments.check_start_arguments`)."""
    try:
        request = check_start_arguments(args, kwargs)
    except InvalidArguments as exc:
        raise InvalidRequestError(exc.field, exc.rule) from None
    return StartRequest(
        dn=request.dn,
        timeout=default_timeout if request.timeout is None else request.timeout,
        webhook_url=request.webhook_url,
        request_id=request.request_id,
        verification_id=request.verification_id,
        resend=bool(request.resend),
        fallback_task=request.fallback_task,
        fallback_queue=request.fallback_queue,
        limit_keys=request.limit_keys,
        outcome_version=outcome_version_of(kwargs),
    )


def _checked(validate: Callable[[object], Any], field: str, value: object) -> Any:
    try:
        return validate(value)
    except ValidationError as exc:
        details = exc.errors(include_url=False, include_context=False)[0]
        raise InvalidRequestError(field, field_rule(field, details)) from None


def validate_dn(dn: object) -> str:
    return cast(str, _checked(_VALIDATE_DN, "dn", dn))


def validate_timeout(timeout: object) -> int:
    return cast(int, _checked(_VALIDATE_TIMEOUT, "timeout", timeout))


def validate_webhook_url(url: object) -> str:
    return cast(str, _checked(_VALIDATE_WEBHOOK_URL, "webhook_url", url))


def validate_request_id(request_id: object) -> str:
    return cast(str, _checked(_VALIDATE_REQUEST_ID, "request_id", request_id))


def validate_callid(callid: object) -> str:
    if not isinstance(callid, str) or not _CALLID_RE.fullmatch(callid):
        raise InvalidRequestError("callid", "must be 1 to 128 letters, digits or '-'")
    return callid
