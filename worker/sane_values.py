"""Values that come from outside this process (message headers, stored records), made safe.

A header is whatever a producer wrote, in any language, with any clock; a stored field is
whatever the last writer left. Nothing read from either may turn a rule off (a NaN time makes
every deadline comparison false), move a deadline (a producer clock minutes ahead), or make a
later step raise (a formatter that meets ``inf``). These functions take any value and answer
either a value the pipeline can use or ``None``; they never raise.
"""

from __future__ import annotations

import logging
import math
import time
from datetime import UTC, datetime

__all__ = [
    "MAX_CLOCK_SKEW_S",
    "epoch_of",
    "formattable_time",
    "iso",
    "sane_count",
    "sane_float",
    "sane_time",
]

log = logging.getLogger(__name__)

#: How far ahead of this host's clock a producer's time may be and still count (then it is
#: taken as "now"): hosts synced by NTP differ by milliseconds, not seconds.
MAX_CLOCK_SKEW_S = 5.0
#: The latest time ``datetime`` formats (end of year 9999); later values cannot be shown.
_LATEST_FORMATTABLE = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()


def sane_float(value: object) -> float | None:
    """``value`` as a finite float (ints, floats and their text), else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def sane_time(value: object, now: float, *, source: str = "") -> float | None:
    """``value`` as epoch seconds if it is a sane time at ``now``, else ``None``.

    Sane: a finite number, not before the epoch, and not ahead of ``now`` by more than
    :data:`MAX_CLOCK_SKEW_S` (within it, the time is taken as ``now``, so a request is never
    requested after it was placed). With ``source`` (a header's name), an insane value is
    logged by its type only: a hostile header may carry a phone number.
    """
    number = sane_float(value) if isinstance(value, int | float) else None
    if number is None or number < 0 or number > now + MAX_CLOCK_SKEW_S:
        if source and value is not None:
            log.warning(
                "%s ignored: %s is not an epoch time between 0 and now + %.0fs",
                source,
                type(value).__name__,
                MAX_CLOCK_SKEW_S,
            )
        return None
    return min(number, now)


def sane_count(value: object, limit: int) -> int:
    """``value`` if it is an int from 0 to ``limit`` (bools are not counts), else 0."""
    if isinstance(value, bool) or not isinstance(value, int):
        return 0
    return value if 0 <= value <= limit else 0


def formattable_time(value: float | None) -> float | None:
    """``value`` if ``datetime`` can format it as a UTC time, else ``None``."""
    if value is None or not math.isfinite(value) or not 0 <= value <= _LATEST_FORMATTABLE:
        return None
    return value


def iso(ts: float | None) -> str | None:
    """Epoch seconds → ISO-8601 UTC with milliseconds; ``None`` for a time it cannot show.

    Never raises: a settle must not fail on a time that came from outside (NaN, ``inf``).
    """
    ts = formattable_time(ts)
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def epoch_of(iso_text: str) -> float:
    """An ISO-8601 time as epoch seconds; now for text that is not one (never raises)."""
    try:
        return datetime.fromisoformat(iso_text.replace("Z", "+00:00")).timestamp()
    except (ValueError, OverflowError):
        return time.time()
