"""Fault injection: the failures a remote API shows, at configurable rates.

Faults *before* processing (503, 429, a dropped connection) leave no call behind; faults
*after* processing (500/502, malformed JSON, a dropped connection) hit a start whose call was
placed, which is exactly the case a client must not resend.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, fields
from enum import Enum
from typing import Any

__all__ = ["Fault", "FaultConfig", "FaultPicker"]


class Fault(Enum):
    NONE = "none"
    UNAVAILABLE = "503"  # before processing
    RATE_LIMITED = "429"  # before processing, with Retry-After
    DROP_BEFORE = "drop-before"
    SERVER_ERROR = "500"  # after processing
    MALFORMED = "malformed"  # after processing
    DROP_AFTER = "drop-after"


@dataclass
class FaultConfig:
    """Rates are probabilities per API request (0-1); times in milliseconds or seconds."""

    latency_ms: float = 0.0
    spike_rate: float = 0.0
    spike_ms: float = 2000.0
    unavailable_rate: float = 0.0
    rate_limit_rate: float = 0.0
    retry_after_s: int = 1
    server_error_rate: float = 0.0
    malformed_rate: float = 0.0
    drop_rate: float = 0.0

    def update(self, values: dict[str, Any]) -> None:
        """Apply a partial update; unknown names or non-numbers raise ``ValueError``."""
        known = {f.name: f.type for f in fields(self)}
        for name, value in values.items():
            if name not in known:
                raise ValueError(f"unknown fault setting {name!r}; known: {sorted(known)}")
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"fault setting {name!r} must be a number >= 0")
            if name.endswith("_rate") and value > 1:
                raise ValueError(f"fault setting {name!r} is a probability (0-1)")
            setattr(self, name, int(value) if name == "retry_after_s" else float(value))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class FaultPicker:
    def __init__(self, config: FaultConfig, seed: int | None = None) -> None:
        self.config = config
        self._rng = random.Random(seed)

    def latency_s(self) -> float:
        c = self.config
        extra = c.spike_ms if c.spike_rate and self._rng.random() < c.spike_rate else 0.0
        return (c.latency_ms + extra) / 1000.0

    def pick(self) -> Fault:
        c = self.config
        r = self._rng.random()
        for fault, rate in (
            (Fault.UNAVAILABLE, c.unavailable_rate),
            (Fault.RATE_LIMITED, c.rate_limit_rate),
            (Fault.SERVER_ERROR, c.server_error_rate),
            (Fault.MALFORMED, c.malformed_rate),
        ):
            if r < rate:
                return fault
            r -= rate
        if r < c.drop_rate:
            return Fault.DROP_BEFORE if self._rng.random() < 0.5 else Fault.DROP_AFTER
        return Fault.NONE
