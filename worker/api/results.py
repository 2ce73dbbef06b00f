"""What a call's raw ``result`` means to a product: the documented classification.

The raw value is always kept beside the outcome. See the README's outcome table.
"""

from __future__ import annotations

import re

from callpass_producer.contracts.outcome import Outcome

__all__ = ["classify_result", "is_in_progress"]


_CAUSES: dict[str, Outcome] = {
    "NORMAL_CLEARING": Outcome.ANSWERED,
    "NO_ANSWER": Outcome.NO_ANSWER,
    "USER_BUSY": Outcome.BUSY,
    "CALL_REJECTED": Outcome.REJECTED,
    "NO_USER_RESPONSE": Outcome.NOT_DELIVERED,
    "SUBSCRIBER_ABSENT": Outcome.NOT_DELIVERED,
    "DESTINATION_OUT_OF_ORDER": Outcome.NOT_DELIVERED,
    "UNALLOCATED_NUMBER": Outcome.BAD_NUMBER,
    "NO_ROUTE_DESTINATION": Outcome.BAD_NUMBER,
    "NUMBER_CHANGED": Outcome.BAD_NUMBER,
    "INVALID_NUMBER_FORMAT": Outcome.BAD_NUMBER,
    "NORMAL_CIRCUIT_CONGESTION": Outcome.NETWORK_TROUBLE,
    "NETWORK_OUT_OF_ORDER": Outcome.NETWORK_TROUBLE,
    "NORMAL_TEMPORARY_FAILURE": Outcome.NETWORK_TROUBLE,
    "SWITCH_CONGESTION": Outcome.NETWORK_TROUBLE,
    "RECOVERY_ON_TIMER_EXPIRE": Outcome.NETWORK_TROUBLE,
}

# "Any other non-empty upper-case string is a final outcome" (contract).
_CAUSE_RE = re.compile(r"[A-Z][A-Z0-9_]*", re.ASCII)


def is_in_progress(result: object) -> bool:
    """``"null"``, JSON null or an absent ``result``: the call has not ended yet."""
    return result is None or result == "null" or result == ""


def classify_result(result: object) -> Outcome | None:
    """Map a raw ``result`` to an :class:`Outcome`; ``None`` while the call is in progress.

    Raises ``ValueError`` for a value that is neither in progress nor a hang-up cause, which
    the client reports as a malformed response.
    """
    if is_in_progress(result):
        return None
    if not isinstance(result, str) or not _CAUSE_RE.fullmatch(result):
        raise ValueError(f"result is not a hang-up cause: {str(result)[:40]!r}")
    return _CAUSES.get(result, Outcome.NOT_ANSWERED)
