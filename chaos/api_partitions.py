"""Chaos rows with the API behind a silent cut (chaos/netns.py): the simulator runs inside a
network namespace, the workers reach it over one veth link, and the link drops every packet
for a while (nothing refused, nothing reset), then heals.

Each row counts calls placed after their placement deadline and starts settled ``unknown``
that the API still received after the heal (both from the simulator's own record of when each
call started), and measures how soon after the heal the workers place calls again."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chaos.harness import Harness, Row
from chaos.netns import Partition
from chaos.partitions import (
    late_calls,
    skipped_row,  # one rule for every partition row
)
from worker.dev.stack import wait_until

if TYPE_CHECKING:
    from chaos.sizes import Size

__all__ = ["api_cut_long", "api_cut_short"]

PLACE_DEADLINE_S = 30.0
#: After the heal, traffic goes on this long: the workers must be placing calls again.
AFTER_HEAL_S = 20.0
#: Calls must be placed again this soon after the heal (breaker cool-down 5 s, then a probe).
RECOVERY_LIMIT_S = 15.0
SETTLE_S = 150.0


def _api_cut_row(run_dir: Path, size: Size, scenario: str, cut_s: float) -> Row:
    """Two workers and a steady flow of requests; the API is cut off for ``cut_s``."""
    skipped = skipped_row(scenario)
    if skipped is not None:
        return skipped
    began = time.monotonic()
    env = {"CALLPASS_PLACE_DEADLINE_S": str(PLACE_DEADLINE_S)}
    with Partition(links=1) as partition:
        h = Harness(run_dir, workers=2, sim_netns=partition, worker_env=env)
        try:
            # Placed and polled across the cut: the workers hold keep-alive connections.
            before = h.enqueue(size.partition_requests // 4)
            wait_until(lambda: len(h.calls()) >= len(before), 60, "the first calls placed")
            rate = size.partition_requests / (cut_s + AFTER_HEAL_S)
            partition.cut()
            h.enqueue_over(int(rate * cut_s), cut_s)
            partition.heal()
            healed_at = time.time()
            h.enqueue_over(int(rate * AFTER_HEAL_S), AFTER_HEAL_S)
            notes = f"API cut {cut_s:g} s, placement deadline {PLACE_DEADLINE_S:g} s"
            row = h.verdict(scenario, SETTLE_S, notes, began)
            _judge(h, row, healed_at)
            return row
        finally:
            h.close()


def _judge(h: Harness, row: Row, healed_at: float) -> None:
    calls = h.calls()
    late = late_calls(h, PLACE_DEADLINE_S)
    if late:
        row.problems.append(f"{late} calls placed after their {PLACE_DEADLINE_S:g} s deadline")
    revived = _unknown_placed_after(h, calls, healed_at)
    if revived:
        row.problems.append(f"{revived} starts settled unknown reached the API after the heal")
    after = sorted(c["started_at"] - healed_at for c in calls if c["started_at"] >= healed_at)
    first = f"{after[0]:.1f} s" if after else "never"
    if not after or after[0] > RECOVERY_LIMIT_S:
        row.problems.append(f"no call placed within {RECOVERY_LIMIT_S:g} s of the heal ({first})")
    calls_part = row.notes[row.notes.index(";") :]
    head = row.notes[: row.notes.index(";")]
    row.notes = (
        f"{head}; late {late}; unknown placed after the heal {revived}; "
        f"first call placed {first} after the heal{calls_part}"
    )


def _unknown_placed_after(h: Harness, calls: list[dict[str, Any]], healed_at: float) -> int:
    """Requests settled ``unknown`` with no call known, whose start the API took after the heal:
    a start given up on that the network delivered later."""
    docs = h.documents()
    unknown = {
        r.request_id
        for r in h.requests
        if (doc := docs.get(r.task_id)) and doc["outcome"] == "unknown" and not doc["callid"]
    }
    return sum(1 for c in calls if c["request_id"] in unknown and c["started_at"] >= healed_at)


def api_cut_short(run_dir: Path, size: Size) -> Row:
    """The API unreachable (packets dropped) for less than the placement deadline."""
    return _api_cut_row(run_dir, size, "workers cut from the API", size.api_cut_short_s)


def api_cut_long(run_dir: Path, size: Size) -> Row:
    """The API unreachable for longer than the placement deadline: requests expire."""
    return _api_cut_row(run_dir, size, "workers cut from the API (long)", size.api_cut_long_s)
