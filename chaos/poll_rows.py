"""The poll runner's row: every worker SIGKILLed while it runs polls; the polls it held, leased
in Redis' due set, run again when their leases end, and every request settles."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from chaos.harness import Harness, Row
from chaos.sizes import SETTLE_S, Size
from worker.dev.stack import wait_until

__all__ = ["poll_runners_killed"]

#: Times every worker is killed with polls running.
KILLS = 3
#: Short API time-outs, so a poll's lease (Settings.poll_lease_s: the longest status exchange
#: + 10 s) is 14 s instead of the default minute.
SHORT_LEASE_ENV = {
    "CALLPASS_HTTP_ATTEMPTS": "1",
    "CALLPASS_CONNECT_TIMEOUT_S": "1",
    "CALLPASS_READ_TIMEOUT_S": "2",
}
LEASE_WAIT_S = 20.0


def poll_runners_killed(run_dir: Path, size: Size) -> Row:
    began = time.monotonic()
    # Slow status answers (400 ms): each runner holds several polls at any moment.
    h = Harness(run_dir, workers=2, sim_args=("--latency-ms", "400"), worker_env=SHORT_LEASE_ENV)
    try:
        h.enqueue(size.shutdown_requests, timeout=20)
        orphaned: set[str] = set()
        for _ in range(KILLS):
            wait_until(lambda: h.polls_running() >= 2, 60, "polls running")
            for name in sorted(h.workers):
                h.kill_worker(name, signal.SIGKILL)
            orphaned |= set(h.leased_polls())  # held by runners that are gone
            for name in sorted(h.workers):
                h.start_worker(name)
        row = h.verdict("poll runners killed", SETTLE_S + LEASE_WAIT_S, "", began)
        # A runner killed after a request's last poll settled it, before the poll left the
        # set: that member runs again (and drops itself) once its lease ends.
        deadline = time.monotonic() + h.poll_lease_s + 5.0
        while (left := h.polls_waiting()) and time.monotonic() < deadline:
            time.sleep(0.2)  # polling a condition, with a deadline
        if left:
            row.problems.append(f"{left} polls left in the due set after every request settled")
        row.notes = (
            f"every worker SIGKILLed {KILLS}x with polls running; {len(orphaned)} polls held by "
            f"the killed runners, run again after their lease; due set empty at the end: "
            f"{'yes' if not left else 'no'}{row.notes}"
        )
        return row
    finally:
        h.close()
