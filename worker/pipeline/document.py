"""The outcome document every request settles with (schema: ``schemas/outcome.v1.json``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypedDict

from worker.pipeline.outcomes import Outcome
from worker.sane_values import formattable_time

__all__ = ["OUTCOME_VERSION", "OutcomeDocument", "build_outcome", "iso"]

OUTCOME_VERSION = 1


class OutcomeError(TypedDict):
    field: str
    rule: str


class OutcomeDocument(TypedDict):
    version: int
    request_id: str | None
    dn_masked: str | None
    callid: str | None
    pin: str | None
    outcome: str
    call_placed: bool | None
    raw_result: str | None
    api_message: str | None
    error: OutcomeError | None
    timeout: int | None
    requested_at: str | None
    placed_at: str | None
    completed_at: str
    status_requests: int
    retry_at: str | None


def iso(ts: float | None) -> str | None:
    """Epoch seconds → ISO-8601 UTC with milliseconds; ``None`` for a time it cannot show.

    Never raises: a settle must not fail on a time that came from outside (NaN, ``inf``).
    """
    ts = formattable_time(ts)
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
) -> dict[str, Any]:
    """Build a document; ``call_placed`` is ``None`` when nobody can know (a lost start)."""
    doc: OutcomeDocument = {
        "version": OUTCOME_VERSION,
        "request_id": request_id,
        "dn_masked": dn_masked,
        "callid": callid,
        "pin": pin,
        "outcome": outcome.value,
        "call_placed": True if callid is not None else call_placed,
        "raw_result": raw_result,
        "api_message": api_message,
        "error": error,
        "timeout": timeout,
        "requested_at": iso(requested_at),
        "placed_at": iso(placed_at),
        "completed_at": iso(completed_at) or "",
        "status_requests": status_requests,
        "retry_at": iso(retry_at),
    }
    return dict(doc)
