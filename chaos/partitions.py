"""Chaos rows with silent network partitions (chaos/netns.py): Redis runs inside a network
namespace and links to it are cut (every packet dropped, nothing refused), then healed.

Each row also counts calls placed after their placement deadline (from the simulator's own
record of when each call started) and measures, per cut worker, the time from the heal until
it takes a message again (its first "received" log line after the heal)."""

from __future__ import annotations

import datetime
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

from chaos.harness import Harness, Row
from chaos.netns import Partition, partition_support

if TYPE_CHECKING:
    from chaos.sizes import Size

__all__ = ["late_calls", "one_worker_cut_from_redis", "skipped_row", "workers_cut_from_redis"]

#: A worker must take messages again this soon after the link returns (measured: ~1-3 s).
RECOVERY_LIMIT_S = 15.0
#: After the heal, traffic goes on this long so that every worker has something to take.
AFTER_HEAL_S = 20.0
PLACE_DEADLINE_S = 30.0
SETTLE_S = 150.0
RECEIVED_RE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*Task callpass\.\w+\[[^\]]+\] received", re.M
)


def late_calls(h: Harness, deadline_s: float) -> int:
    """Calls the simulator saw start more than ``deadline_s`` (+1 s) after their enqueue."""
    enqueued = {r.request_id: r.enqueued_at for r in h.requests}
    return sum(
        1
        for call in h.calls()
        if call["request_id"] in enqueued
        and call["started_at"] > enqueued[call["request_id"]] + deadline_s + 1.0
    )


def first_received_after(h: Harness, name: str, moment: float) -> float | None:
    """Seconds from ``moment`` (epoch) to worker ``name``'s first message taken after it."""
    text = (h.stack.run_dir / f"{name}.log").read_text(errors="replace")
    for match in RECEIVED_RE.finditer(text):
        stamp = datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if stamp >= moment:
            return stamp - moment
    return None


def skipped_row(scenario: str) -> Row | None:
    reason = partition_support()
    if reason is None:
        return None
    row = Row(scenario, 0, 0, 0, 0, 0, f"skipped: {reason}")
    if os.environ.get("CALLPASS_TEST_REQUIRE_PARTITIONS") == "1":
        row.problems.append(f"partition rows are required here: {reason}")
    return row


def _cut_row(
    run_dir: Path, size: Size, scenario: str, cut_s: float, cut_workers: list[str], spared: int
) -> Row:
    """Two workers and a steady flow of requests; ``cut_workers`` lose Redis for ``cut_s``.

    Link 0 is the harness' own (producer, verdict), never cut; each worker has its own link,
    so a row can cut some workers and spare others."""
    skipped = skipped_row(scenario)
    if skipped is not None:
        return skipped
    began = time.monotonic()
    names = [f"w{i}" for i in range(len(cut_workers) + spared)]
    env = {"CALLPASS_PLACE_DEADLINE_S": str(PLACE_DEADLINE_S)}
    with Partition(links=1 + len(names)) as partition:
        h = Harness(run_dir, workers=0, redis_netns=partition, worker_env=env)
        try:
            for link, name in enumerate(names, start=1):
                h.start_worker(name, {"CALLPASS_REDIS_URL": h.redis_url_on(link)})
            links = [1 + names.index(name) for name in cut_workers]
            h.enqueue(size.partition_requests // 4)  # placed and polled across the cut
            rate = size.partition_requests / (cut_s + AFTER_HEAL_S)
            partition.cut(*links)
            h.enqueue_over(int(rate * cut_s), cut_s)
            partition.heal(*links)
            healed_at = time.time()
            h.enqueue_over(int(rate * AFTER_HEAL_S), AFTER_HEAL_S)
            row = h.verdict(scenario, SETTLE_S, f"cut {cut_s:g} s", began)
            _judge(h, row, cut_workers, healed_at)
            return row
        finally:
            h.close()


def _judge(h: Harness, row: Row, cut_workers: list[str], healed_at: float) -> None:
    late = late_calls(h, PLACE_DEADLINE_S)
    if late:
        row.problems.append(f"{late} calls placed after their {PLACE_DEADLINE_S:g} s deadline")
    waits = []
    for name in cut_workers:
        wait = first_received_after(h, name, healed_at)
        waits.append(f"{name} {wait:.1f} s" if wait is not None else f"{name} never")
        if wait is None or wait > RECOVERY_LIMIT_S:
            row.problems.append(
                f"{name} took no message within {RECOVERY_LIMIT_S:g} s of the heal "
                f"({'never' if wait is None else f'{wait:.1f} s'})"
            )
    row.notes += f"; late {late}; consuming again after the heal: {', '.join(waits)}"


def workers_cut_from_redis(run_dir: Path, size: Size) -> Row:
    """Both workers lose Redis silently (packets dropped, not refused), then get it back."""
    return _cut_row(
        run_dir, size, "workers cut from Redis", size.redis_cut_s, ["w0", "w1"], spared=0
    )


def one_worker_cut_from_redis(run_dir: Path, size: Size) -> Row:
    """One of two workers loses Redis silently; the other carries on through the cut."""
    return _cut_row(
        run_dir, size, "one worker cut from Redis", size.one_worker_cut_s, ["w0"], spared=1
    )
