"""The ``start_call`` arguments checked as a worker checks them, before anything is sent.

The rules of each field are in :mod:`callpass_producer.contracts.start_call`; here are the
rules of the message as a whole (keyword arguments only, no unknown names, arguments that
need each other), and the first broken rule becomes :class:`InvalidArguments`.
"""

from __future__ import annotations

from typing import Any, Final

from pydantic import ValidationError

from callpass_producer.contracts.start_call import (
    START_CALL_FIELDS,
    VERSION_2_FIELDS,
    StartCallArguments,
    refusal_of,
)
from callpass_producer.errors import InvalidArguments

__all__ = ["check_start_arguments", "outcome_version_of"]

_FIELD_SET: Final = frozenset(START_CALL_FIELDS)
_VALIDATE_ARGUMENTS: Final = StartCallArguments.__pydantic_validator__.validate_python


def check_start_arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> StartCallArguments:
    """The arguments of ``callpass.start_call``, or :class:`InvalidArguments` for the first
    rule they break.

    Arguments are keyword-only: a foreign producer's positional list is ambiguous, so it is
    refused rather than guessed at.
    """
    if args:
        raise InvalidArguments(
            "args", f"must be empty: pass {', '.join(START_CALL_FIELDS)} as keyword arguments"
        )
    try:
        request: StartCallArguments = _VALIDATE_ARGUMENTS(kwargs)
    except ValidationError as exc:
        raise _refusal(kwargs, exc) from None
    if request.resend and request.verification_id is None:
        raise InvalidArguments("verification_id", "is required when resend is true")
    if request.fallback_queue is not None and request.fallback_task is None:
        raise InvalidArguments("fallback_queue", "needs fallback_task")
    return request


def outcome_version_of(kwargs: object) -> int:
    """2 for arguments that pass a version-2 field (not null), else 1: what a request that
    is refused, or accepted, gets as its outcome document."""
    if isinstance(kwargs, dict) and any(kwargs.get(f) is not None for f in VERSION_2_FIELDS):
        return 2
    return 1


def _refusal(kwargs: dict[str, Any], error: ValidationError) -> InvalidArguments:
    # Unknown arguments first, the first by name: what a producer mistyped matters most.
    unknown = sorted(str(k) for k in kwargs if k not in _FIELD_SET)
    if unknown:
        return InvalidArguments(
            unknown[0][:64],
            f"is not an argument of start_call (known: {', '.join(START_CALL_FIELDS)})",
        )
    return InvalidArguments(*refusal_of(error))
