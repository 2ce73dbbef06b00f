"""How big a chaos run is: ``full`` for ``make chaos``, ``small`` inside ``make test``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["SETTLE_S", "SIZES", "Size"]


@dataclass(frozen=True)
class Size:
    """How big a run is: ``full`` for ``make chaos``, ``small`` inside ``make test``."""

    name: str
    killed_requests: int
    kills: int
    redis_requests: int
    fault_requests: int
    outage_requests: int
    outage_s: float
    shutdown_requests: int
    rate_requests: int
    property_examples: int
    webhook_requests: int
    receiver_down_s: float
    webhook_kills: int
    # Silent partitions (chaos/partitions.py): appended with defaults, full size.
    partition_requests: int = 160
    redis_cut_s: float = 60.0
    one_worker_cut_s: float = 90.0
    # The API behind a silent cut (chaos/api_partitions.py): shorter and longer than the
    # 30 s placement deadline.
    api_cut_short_s: float = 25.0
    api_cut_long_s: float = 45.0
    trickle_requests: int = 150  # full size (the default)
    # Hostile messages (chaos/hostile_row.py): appended with a default, full size.
    hostile_requests: int = 300
    # Verifications with resends (chaos/verification_rows.py): full size.
    verifications: int = 150

    @classmethod
    def get(cls, name: str) -> Size:
        return SIZES[name]


# A 30 s cut: long enough that an unbounded socket waits ~20 s past the heal for TCP's next
# retransmission (backed off to 25.6 s by then), short enough for make test.
SMALL_PARTITIONS: dict[str, Any] = {
    "partition_requests": 60,
    "redis_cut_s": 30.0,
    "one_worker_cut_s": 30.0,
    "api_cut_short_s": 10.0,
    "api_cut_long_s": 35.0,
}

SIZES = {
    "full": Size("full", 500, 6, 200, 300, 120, 60.0, 150, 200, 10_000, 200, 120.0, 3),
    # make test runs the 2,000-payload property test itself; this row only checks the wiring.
    "small": Size(
        "small",
        killed_requests=60,
        kills=2,
        redis_requests=40,
        fault_requests=60,
        outage_requests=30,
        outage_s=12.0,
        shutdown_requests=30,
        rate_requests=50,
        property_examples=100,
        webhook_requests=30,
        receiver_down_s=8.0,
        webhook_kills=1,
        trickle_requests=20,
        hostile_requests=60,
        verifications=20,
        **SMALL_PARTITIONS,
    ),
}

#: Seconds past the last disruption within which every request must have settled.
SETTLE_S = 120.0
