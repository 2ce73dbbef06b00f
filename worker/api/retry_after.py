"""``Retry-After``: how long an HTTP peer (the API, a webhook receiver) asks us to wait.

RFC 9110 allows delta-seconds or an HTTP date. A value that is neither, or asks for more than
a day, is ignored: the caller's own schedule applies.
"""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime

__all__ = ["MAX_RETRY_AFTER_S", "retry_after_s"]

#: The longest wait a peer can ask for; beyond it the answer is treated as no answer.
MAX_RETRY_AFTER_S = 86_400.0


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (0 for a date already past), or ``None``."""
    if not value:
        return None
    text = value.strip()
    seconds: float | None
    if text.isascii() and text.replace(".", "", 1).isdigit():
        seconds = float(text)  # delta-seconds (a decimal fraction is tolerated)
    else:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = max(0.0, when.timestamp() - (time.time() if now is None else now))
    return seconds if seconds <= MAX_RETRY_AFTER_S else None
