"""The answer of ``callpass.verify_code`` (``[request_id, code]``): ``{valid, reason,
attempts_left}``; schema ``verify_code.v1.json``."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["UNKNOWN_REQUEST", "CodeCheck", "CodeReason"]


class CodeReason(StrEnum):
    """Why a code was accepted or refused."""

    OK = "ok"
    MISMATCH = "mismatch"
    EXPIRED = "expired"
    TOO_MANY_ATTEMPTS = "too_many_attempts"
    UNKNOWN_REQUEST = "unknown_request"
    MALFORMED_CODE = "malformed_code"


class CodeCheck(BaseModel):
    """A code the user typed, checked: a correct one is consumed; attempts are capped."""

    model_config = ConfigDict(
        hide_input_in_errors=True,  # errors never show a number or a pin
        frozen=True,
        extra="forbid",
        title="callpass.verify_code answer, version 1",
        json_schema_extra={
            "description": "What callpass.verify_code([request_id, code]) returns. A correct "
            "code is valid once: it is consumed; attempts per request are capped."
        },
    )

    valid: bool
    reason: CodeReason
    attempts_left: Annotated[int, Field(ge=0)] = Field(
        description="How many more codes may be tried for this request; 0 when it is "
        "unknown, expired or out of attempts."
    )


#: The answer for a request id that names no request (or a worker that keeps no pins).
UNKNOWN_REQUEST = CodeCheck(valid=False, reason=CodeReason.UNKNOWN_REQUEST, attempts_left=0)
