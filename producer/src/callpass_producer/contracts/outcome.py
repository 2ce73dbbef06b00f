"""The outcome document every request settles with, exactly one per request.

What ``AsyncResult(<start_call task id>).get()`` returns, and the ``data`` of a
``call.completed`` webhook event (schema: ``schemas/outcome.v1.json``).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "OUTCOME_VERSION",
    "OUTCOME_VERSION_2",
    "PIN_PATTERN",
    "REQUEST_ID_MAX_LEN",
    "TIMEOUT_MAX_S",
    "TIMEOUT_MIN_S",
    "NextStep",
    "Outcome",
    "OutcomeDocument",
    "OutcomeDocumentV2",
    "OutcomeError",
    "Pin",
    "Timeout",
]

OUTCOME_VERSION: Literal[1] = 1
#: The version a request gets when it passes any argument version 1 did not have.
OUTCOME_VERSION_2: Literal[2] = 2

#: The last digits of the caller ID: the code the user types in.
PIN_PATTERN: Final = "[0-9]{4,6}"
#: How long a call may ring, in whole seconds (the API's own bounds).
TIMEOUT_MIN_S: Final = 2
TIMEOUT_MAX_S: Final = 99
#: A producer's request id (or, without one, the start_call task id) in a document.
REQUEST_ID_MAX_LEN: Final = 128

Pin = Annotated[str, Field(pattern=f"^{PIN_PATTERN}$")]
Timeout = Annotated[int, Field(ge=TIMEOUT_MIN_S, le=TIMEOUT_MAX_S)]
#: ISO-8601 UTC with milliseconds (``2026-12-01T10:00:00.000Z``).
Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"})]


class Outcome(StrEnum):
    """Outcomes a request settles with. The first group comes from the call itself."""

    ANSWERED = "answered"
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    REJECTED = "rejected"
    NOT_DELIVERED = "not_delivered"
    BAD_NUMBER = "bad_number"
    NETWORK_TROUBLE = "network_trouble"
    #: A final hang-up cause outside the table: reported verbatim, the call was not answered.
    NOT_ANSWERED = "not_answered"
    #: No final status within ``timeout`` + grace, or a start whose fate is unknown.
    UNKNOWN = "unknown"
    # Requests that placed no call:
    INVALID = "invalid"
    API_ERROR = "api_error"
    AUTH_FAILED = "auth_failed"
    EXPIRED = "expired"
    #: Over a per-number limit; ``retry_at`` says when a call may be tried again.
    RATE_LIMITED = "rate_limited"


class OutcomeError(BaseModel):
    """Which field of a request was refused, and by which rule (``invalid`` only)."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    field: str
    rule: str


class OutcomeDocument(BaseModel):
    """The settled request; times are ISO-8601 strings, fixed when the document is built."""

    model_config = ConfigDict(
        hide_input_in_errors=True,  # errors never show a number or a pin
        frozen=True,
        extra="forbid",
        title="callpass outcome document, version 1",
        json_schema_extra={
            "description": "What AsyncResult(<start_call task id>).get() returns: "
            "exactly one per request."
        },
    )

    version: Literal[1] = OUTCOME_VERSION
    request_id: Annotated[str | None, Field(max_length=REQUEST_ID_MAX_LEN)] = Field(
        description="The producer's request_id, or the start_call task id when none was given."
    )
    dn_masked: str | None = Field(description="The number with its middle digits masked.")
    callid: str | None = Field(
        description="The API's call id; null when no call was placed (or its fate is unknown)."
    )
    pin: Pin | None
    outcome: Outcome
    call_placed: bool | None = Field(
        description="true: a call was placed; false: certainly not; "
        "null: nobody can know (a start lost in flight)."
    )
    raw_result: str | None = Field(description="The API's result verbatim (hang-up cause).")
    api_message: str | None = Field(
        description="The API's data.message verbatim, or why the outcome is unknown/expired."
    )
    error: OutcomeError | None
    timeout: Timeout | None
    requested_at: Timestamp | None
    placed_at: Timestamp | None
    completed_at: Timestamp
    status_requests: Annotated[int, Field(ge=0)]
    retry_at: Timestamp | None = Field(
        description="rate_limited only: when a call to this number may be tried again."
    )


class NextStep(StrEnum):
    """What a product should do once a call has ended (``next_step`` of a version-2 document)."""

    #: The call rang: the caller ID is on the phone; ask the user for its last digits.
    WAIT_FOR_CODE = "wait_for_code"
    #: A limit holds: another call may go at ``next_step_at``.
    RETRY_LATER = "retry_later"
    #: The call did not reach the phone (or cannot be made): use SMS, voice or e-mail.
    OTHER_CHANNEL = "other_channel"
    #: The number is wrong or unreachable for good: ask the user for it again.
    ASK_FOR_NUMBER = "ask_for_number"
    #: Nothing the user can do: the request itself is wrong (a bug to fix), or it is done.
    NONE = "none"


class OutcomeDocumentV2(OutcomeDocument):
    """Version 2: version 1's fields, the verification and what to do next.

    A request gets it when it passes any ``start_call`` argument that version 1 did not have
    (``verification_id``, ``resend``, ``fallback_task``, ``fallback_queue``, ``limit_keys``);
    every other request keeps getting version 1, unchanged.
    """

    model_config = ConfigDict(
        title="callpass outcome document, version 2",
        json_schema_extra={
            "description": "What AsyncResult(<start_call task id>).get() returns for a request "
            "that passed a version-2 argument: exactly one per request."
        },
    )

    version: Literal[2] = OUTCOME_VERSION_2  # type: ignore[assignment]
    verification_id: Annotated[str | None, Field(max_length=REQUEST_ID_MAX_LEN)] = Field(
        description="The verification this call belongs to (its request_id when none was given)."
    )
    next_step: NextStep = Field(description="What the product should do now, from the outcome.")
    next_step_at: Timestamp | None = Field(
        description="retry_later only: when another call may be asked for."
    )
