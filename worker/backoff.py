"""Exponential backoff with a cap: how long to wait before trying again."""

from __future__ import annotations

__all__ = ["capped_backoff_s"]

#: Past this many doublings every cap we use is reached; it also keeps ``2 ** n`` finite.
_MAX_DOUBLINGS = 16


def capped_backoff_s(attempt: int, base_s: float, cap_s: float) -> float:
    """``base_s * 2 ** attempt``, at most ``cap_s`` (attempt 0 waits ``base_s``)."""
    # The exponent is capped before the power: 2**1000 would overflow the float product.
    doublings: int = min(max(attempt, 0), _MAX_DOUBLINGS)
    return min(cap_s, base_s * float(2**doublings))
