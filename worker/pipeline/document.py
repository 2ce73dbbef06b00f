"""Building the outcome document every request settles with (the model:
:class:`callpass_producer.contracts.outcome.OutcomeDocument`, schema ``schemas/outcome.v1.json``).

The document stays a model until it leaves the worker (a result, a webhook event); only there
is it serialised, with ``model_dump(mode="json")``. Building never raises: values that came
from outside (a stored field, a foreign task id) and break the contract are shown as ``null``.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from pydantic import ValidationError

from callpass_producer.contracts.next_step import next_step_of
from callpass_producer.contracts.outcome import (
    OUTCOME_VERSION_2,
    PIN_PATTERN,
    REQUEST_ID_MAX_LEN,
    TIMEOUT_MAX_S,
    TIMEOUT_MIN_S,
    NextStep,
    Outcome,
    OutcomeDocument,
    OutcomeDocumentV2,
    OutcomeError,
)
from worker.sane_values import iso

__all__ = ["build_outcome", "parse_outcome"]

log = logging.getLogger(__name__)

#: The contract's bounds, checked before building (building must never raise).
_PIN_RE = re.compile(PIN_PATTERN, re.ASCII)
_TIMEOUT_RANGE = range(TIMEOUT_MIN_S, TIMEOUT_MAX_S + 1)


def build_outcome(
    outcome: Outcome,
    *,
    completed_at: float,
    request_id: str | None = None,
    dn_masked: str | None = None,
    callid: str | None = None,
    pin: str | None = None,
    raw_result: str | None = None,
    api_message: str | None = None,
    error: OutcomeError | None = None,
    timeout: int | None = None,
    requested_at: float | None = None,
    placed_at: float | None = None,
    status_requests: int = 0,
    call_placed: bool | None = False,
    retry_at: float | None = None,
    version: int = 1,
    verification_id: str | None = None,
) -> OutcomeDocument:
    """Build a document; ``call_placed`` is ``None`` when nobody can know (a lost start).

    ``version`` 2 adds ``verification_id`` (the request id when ``None``) and the next step.
    """
    fields: dict[str, Any] = dict(
        request_id=_bounded(request_id),
        dn_masked=dn_masked,
        callid=callid,
        pin=pin if pin is not None and _PIN_RE.fullmatch(pin) else None,
        outcome=outcome,
        call_placed=True if callid is not None else call_placed,
        raw_result=raw_result,
        api_message=api_message,
        error=error,
        timeout=timeout if timeout in _TIMEOUT_RANGE else None,
        requested_at=iso(requested_at),
        placed_at=iso(placed_at),
        completed_at=iso(completed_at) or "",
        status_requests=max(0, status_requests),
        retry_at=iso(retry_at),
    )
    if version != OUTCOME_VERSION_2:
        return OutcomeDocument(**fields)
    return _version_2(fields, verification_id or request_id)


def _version_2(fields: dict[str, Any], verification_id: str | None) -> OutcomeDocumentV2:
    error: OutcomeError | None = fields["error"]
    next_step = next_step_of(
        fields["outcome"],
        callid=fields["callid"],
        error_field=error.field if error is not None else None,
        retry_at=fields["retry_at"],
    )
    return OutcomeDocumentV2(
        **fields,
        verification_id=_bounded(verification_id),
        next_step=next_step,
        next_step_at=fields["retry_at"] if next_step == NextStep.RETRY_LATER else None,
    )


def _bounded(an_id: str | None) -> str | None:
    """An id that breaks the contract's length (a foreign task id) is shown as ``null``."""
    return an_id if an_id is None or len(an_id) <= REQUEST_ID_MAX_LEN else None


def parse_outcome(stored: dict[str, Any]) -> OutcomeDocument:
    """A document read back (from a request record): validated, or as it is when it breaks
    the contract (written by another version), so it still reaches its producers."""
    model = OutcomeDocumentV2 if stored.get("version") == OUTCOME_VERSION_2 else OutcomeDocument
    try:
        return model.model_validate(stored)
    except ValidationError as exc:
        log.warning("a stored outcome breaks the contract (%d errors)", exc.error_count())
        # Every field present (None where it is missing), so reading one never fails.
        known = {name: stored.get(name) for name in model.model_fields}
        return model.model_construct(**known)
