"""``python -m bench`` (``make bench``): ours against the naive alternatives, side by side.

Starts its own Redis and simulators (API latency 50 ms, the standard outcome mix), then runs
each variant's worker in turn against the same arrivals and writes ``results.json``,
``results.md`` and ``chart.png`` under ``--out``. ``--size quick`` is a smoke run (< 60 s) that
only shows the pieces work; its numbers mean little.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.report import write_report
from bench.runner import MIXES, Bench, Variant
from worker.dev.stack import answers
from worker.masking import redact_url

AMQP_PORT = 5672


@dataclass(frozen=True)
class Size:
    timeout_s: int
    frontier_calls: int
    frontier_rate: float
    intervals: tuple[float, ...]
    mixes: tuple[str, ...]
    burst_calls: int
    #: Ours on Celery's other pools: prefork (one process per core) and gevent.
    prefork_calls: int
    gevent_calls: int
    sync_threads_calls: int
    sync_prefork_calls: int
    noop_tasks: int
    replay_calls: int
    memory_calls: int
    #: One burst of this many calls on 1, 2 and 4 worker processes, per broker.
    scale_calls: int = 0


SIZES = {
    # 20 arrivals/s keeps the frontier runs below saturation on 2 cores (ours spends about
    # 40 CPU ms per call there): a saturated run measures queueing, not the poll schedule.
    # Sized to finish in about 9 minutes on 2 cores: sync-v1 runs two rounds of its pool.
    "full": Size(10, 120, 20.0, (0.5, 1.0, 2.0, 3.0), ("standard", "concentrated"),
                 800, 150, 300, 64, 4, 2000, 200, 4000, 800),
    "quick": Size(3, 20, 20.0, (1.0,), ("standard",), 40, 0, 0, 8, 0, 200, 20, 200, 0),
}  # fmt: skip

OURS = Variant("ours", "ours")


def fixed(interval: float) -> Variant:
    return Variant(f"fixed-{interval:g}s", "fixed", interval_s=interval)


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores {model}".strip()


def log(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", flush=True)


def frontier_lag_at(runs: list[dict[str, Any]], requests: float) -> float | None:
    """The fixed-interval frontier's p99 lag at ``requests`` per call (linear between points)."""
    points = sorted((r["api_requests_per_call"], r["lag_ms"]["p99"]) for r in runs)
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if x0 <= requests <= x1:
            return float(y0 + (y1 - y0) * (requests - x0) / (x1 - x0)) if x1 > x0 else float(y0)
    return None


def goals(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured value and whether it was met."""
    out: list[dict[str, Any]] = []

    def goal(text: str, met: bool, value: str) -> None:
        out.append({"goal": text, "met": met, "value": value})

    latency = report["environment"]["latency_ms"]
    frontier = report["frontier"]
    std = {r["variant"]: r for r in frontier if r["mix"] == "standard"}
    ours, naive = std.get("ours"), std.get("fixed-1s")
    if ours and naive:
        mine, theirs = ours["api_requests_per_call"], naive["api_requests_per_call"]
        ratio = mine / theirs
        text = "API requests per call <= 55% of fixed-1s (standard mix)"
        goal(text, ratio <= 0.55, f"{mine} vs {theirs}: {ratio:.0%}")
    if ours:
        lag = ours["lag_ms"]
        met = (lag["p99"] or 1e9) <= 2000 and (lag["p50"] or 1e9) <= 300
        goal(
            "lag p99 <= 2 s, p50 <= 0.3 s (standard mix)",
            met,
            f"p50 {lag['p50']}, p99 {lag['p99']} ms",
        )
        pin = ours["time_to_pin_ms"]["p99"] or 1e9
        goal(
            f"time to pin p99 <= 3x API latency ({3 * latency} ms)", pin <= 3 * latency, f"{pin} ms"
        )
        share = (ours.get("pipeline_share_ms") or {}).get("p99")
        net = None if share is None else round(share - latency, 1)
        text = "pipeline's own share of the lag p99 <= 50 ms (beyond one API round trip)"
        goal(text, net is not None and net <= 50, f"share p99 {share} ms, {net} ms beyond latency")
    for mix in sorted({r["mix"] for r in frontier}):
        runs = [r for r in frontier if r["mix"] == mix]
        mine_run = next((r for r in runs if r["kind"] == "ours"), None)
        fixed_runs = [r for r in runs if r["kind"] == "fixed"]
        if mine_run and len(fixed_runs) > 1:
            at = frontier_lag_at(fixed_runs, mine_run["api_requests_per_call"])
            below = at is None or (mine_run["lag_ms"]["p99"] or 1e9) <= at
            where = "beyond its range" if at is None else f"{at:.0f} ms"
            value = (
                f"ours p99 {mine_run['lag_ms']['p99']} ms at {mine_run['api_requests_per_call']} "
                f"req/call; frontier there: {where}"
            )
            goal(f"ours not above the fixed-interval frontier ({mix} mix)", below, value)
    out += burst_goals(report)
    memory = report.get("memory")
    if memory:
        kept = memory["in_flight_records"] >= memory["calls"] and not memory["settled_meanwhile"]
        value = f"{memory['bytes_per_call']} B/call, {memory['in_flight_records']} in flight"
        met = memory["bytes_per_call"] <= 16_384 and kept
        goal("RSS growth <= 16 KB per in-flight call, nothing lost", met, value)
    return out


def goal_row(text: str, met: bool, value: str, bound: str = "") -> dict[str, Any]:
    """One judged goal; ``bound``: why no worker could meet it here, when the run shows that."""
    return {"goal": text, "met": met, "value": value, "bound": bound}


def burst_goals(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 13's goals for a burst (threads pool, one worker process each); where the run
    shows that no worker could meet a goal on this pool, its ``bound`` says why."""
    sat = {r["variant"]: r for r in report["saturation"] if r["pool"].startswith("threads")}
    ours, naive = sat.get("ours"), sat.get("fixed-1s")
    if ours is None:
        return []
    out: list[dict[str, Any]] = []

    def goal(text: str, met: bool, value: str) -> None:
        out.append(goal_row(text, met, value))

    pin = ours["time_to_pin_ms"]["p99"] or 1e9
    floor = report["floors"].get("burst", {}).get("floor_ms")
    if floor:
        goal("burst: time to pin p99 <= 1.3x the floor", pin <= 1.3 * floor,
             f"{pin:.0f} vs {floor:.0f} ms: {pin / floor:.2f}x")  # fmt: skip
    checks = ours.get("code_check_ms") or {}
    if checks.get("p99") is not None:
        value = f"p50 {checks['p50']}, p99 {checks['p99']} ms over {checks['checks']} checks"
        goal(
            "burst: verify_code p99 <= 50 ms while the burst is placed", checks["p99"] <= 50, value
        )
    replay = report["floors"]["replay"]["cpu_s_per_call"]
    cpu = ours["cpu_s_per_call_worker"]
    if replay:
        goal("worker CPU per settled call <= 2.5x the bare replay", cpu <= 2.5 * replay,
             f"{cpu * 1000:.2f} vs {replay * 1000:.2f} ms: {cpu / replay:.1f}x")  # fmt: skip
    commands = ours.get("redis_commands_per_call")
    if commands is not None:
        goal("Redis commands per call <= 40 (aim; the benchmark's own reads included)",
             commands <= 40, f"{commands}")  # fmt: skip
    if naive is not None:
        out += _against_fixed(ours, naive, floor, report["environment"]["timeout_s"])
    return out


def _against_fixed(
    ours: dict[str, Any], naive: dict[str, Any], floor_ms: float | None, timeout_s: int
) -> list[dict[str, Any]]:
    """The burst goals measured against fixed-1s, each with its bound where the run shows one."""
    out: list[dict[str, Any]] = []
    pin, theirs = ours["time_to_pin_ms"]["p99"] or 1e9, naive["time_to_pin_ms"]["p99"] or 1e9
    bound = ""
    if floor_ms and 0.8 * theirs < floor_ms:
        # The floor is the least a start can do on this pool: no worker's p99 is below it.
        bound = (
            f"fixed-1s's p99 is {theirs / floor_ms:.2f}x the floor, so 0.8x it is "
            f"{0.8 * theirs / floor_ms:.2f}x the floor: below what any start on this pool can do"
        )
    value = f"{pin:.0f} vs {theirs:.0f} ms: {pin / theirs:.2f}x"
    out.append(
        goal_row("burst: time to pin p99 <= 0.8x fixed-1s's", pin <= 0.8 * theirs, value, bound)
    )
    cpu, their_cpu = ours["cpu_s_per_call_worker"], naive["cpu_s_per_call_worker"]
    value = f"{cpu * 1000:.2f} vs {their_cpu * 1000:.2f} ms: {cpu / their_cpu:.2f}x"
    out.append(
        goal_row("worker CPU per settled call <= 0.5x fixed-1s's", cpu <= 0.5 * their_cpu, value)
    )
    mine_rate, their_rate = ours["settled_per_s"] or 0, naive["settled_per_s"] or 1e9
    bound = ""
    if floor_ms:
        # The last calls are placed no sooner than the floor, and most ring to their timeout.
        best = ours["calls"] / (floor_ms / 1000 + timeout_s)
        if best < 1.5 * their_rate:
            bound = (
                f"a burst settles no faster than about its size / (floor + call timeout) = "
                f"{best:.1f}/s, {best / their_rate:.2f}x fixed-1s's"
            )
    value = f"{mine_rate} vs {their_rate}: {mine_rate / their_rate:.2f}x"
    met = mine_rate >= 1.5 * their_rate
    out.append(goal_row("settled calls/s at saturation >= 1.5x fixed-1s's", met, value, bound))
    return out


def scale_out(bench: Bench, size: Size, amqp_url: str) -> list[dict[str, Any]]:
    """One burst on 1, 2 and 4 worker processes sharing one Redis; with RabbitMQ too when one
    answers at ``amqp_url`` (its queues are deleted after each run)."""
    if not size.scale_calls:
        return []
    brokers: list[tuple[tuple[str, str], ...]] = [()]
    if answers(amqp_url, AMQP_PORT):
        brokers.append((("CALLPASS_BROKER_URL", amqp_url),))
    else:
        log(f"scale-out: no RabbitMQ at {redact_url(amqp_url)}; Redis only")
    rows = []
    for env in brokers:
        for workers in (1, 2, 4):
            variant = Variant("ours", "ours", env=env, workers=workers)
            log(f"scale-out: {workers} worker(s), {'rabbitmq' if env else 'redis'} broker")
            rows.append(bench.run(variant, "standard", size.scale_calls, 0, size.timeout_s, 300))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--amqp-url",
        default=os.environ.get("CALLPASS_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//"),
        help="RabbitMQ for the scale-out rows (skipped when none answers there)",
    )
    parser.add_argument("--rate", type=float, default=None, help="frontier arrivals per second")
    parser.add_argument("--frontier-calls", type=int, default=None, help="calls per frontier run")
    parser.add_argument("--memory-calls", type=int, default=None, help="calls held in flight")
    parser.add_argument(
        "--mix",
        action="append",
        default=[],
        metavar="NAME=SPEC",
        help="replace a named mix (standard, concentrated) with a simulator mix spec, e.g. "
        "standard=NO_ANSWER@timeout:50,USER_BUSY@1-3:50 (see callpass simulator -h)",
    )
    args = parser.parse_args(argv)
    for item in args.mix:
        name, _, spec = item.partition("=")
        if name not in MIXES or not spec:
            parser.error(f"--mix must be NAME=SPEC with NAME one of {', '.join(MIXES)}")
        MIXES[name] = spec
    size = SIZES[args.size]
    size = dataclasses.replace(
        size,
        frontier_rate=args.rate or size.frontier_rate,
        frontier_calls=args.frontier_calls or size.frontier_calls,
        memory_calls=args.memory_calls or size.memory_calls,
    )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or Path("bench-results") / f"{stamp}-{args.size}"
    began = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    bench = Bench(Path(tempfile.mkdtemp(prefix="callpass-bench-")), args.latency_ms, args.seed)
    report: dict[str, Any] = {
        "started_at": stamp,
        "size": args.size,
        "environment": {
            "machine": machine(),
            "python": sys.version.split()[0],
            "latency_ms": args.latency_ms,
            "timeout_s": size.timeout_s,
            "frontier_rate": size.frontier_rate,
            "mixes": {name: MIXES[name] for name in size.mixes},
        },
        "frontier": [],
        "saturation": [],
        "scale_out": [],
    }
    try:
        deadline = size.timeout_s + 60.0
        for mix in size.mixes:
            for variant in (OURS, *(fixed(i) for i in size.intervals)):
                log(f"frontier: {variant.name}, {mix} mix, {size.frontier_calls} calls")
                report["frontier"].append(
                    bench.run(
                        variant,
                        mix,
                        size.frontier_calls,
                        size.frontier_rate,
                        size.timeout_s,
                        deadline,
                    )
                )
        # The floor first, beside the bursts it is the floor of.
        log(f"burst floor: {size.burst_calls} tasks")
        burst_floor = bench.burst_floor(size.burst_calls)
        bursts = [
            (OURS, size.burst_calls),
            (fixed(1.0), size.burst_calls),
            (Variant("sync-v1", "sync"), size.sync_threads_calls),
        ]
        cores = os.cpu_count() or 1
        if size.prefork_calls:
            bursts.append(
                (Variant("ours", "ours", pool="prefork", concurrency=cores), size.prefork_calls)
            )
        if size.gevent_calls:
            bursts.append(
                (Variant("ours", "ours", pool="gevent", concurrency=32), size.gevent_calls)
            )
        if size.sync_prefork_calls:  # Celery's defaults: prefork, one process per core
            prefork = Variant("sync-v1", "sync", pool="prefork", concurrency=os.cpu_count() or 1)
            bursts.append((prefork, size.sync_prefork_calls))
        for variant, calls in bursts:
            pool = f"{variant.pool} x{variant.concurrency}"
            log(f"saturation: {variant.name} ({pool}), {calls} calls")
            run = bench.run(variant, "standard", calls, 0, size.timeout_s, deadline + 240)
            report["saturation"].append(run)
        # A run of its own: py-spy pauses the process 200 times a second, so a profiled run
        # is slower than the one compared with the others.
        log(f"profile: ours, {size.burst_calls} calls")
        profiled = bench.run(
            OURS, "standard", size.burst_calls, 0, size.timeout_s, deadline + 240,
            out / "profile-ours.raw",
        )  # fmt: skip
        report["profile"] = {"calls": profiled["calls"], "summary": profiled.get("profile")}
        report["scale_out"] = scale_out(bench, size, args.amqp_url)
        log("floors")
        ours_std = next(r for r in report["frontier"] if r["variant"] == "ours")
        report["floors"] = {
            "burst": burst_floor,
            "noop": bench.noop_rate(size.noop_tasks),
            "replay": bench.bare_replay(size.replay_calls, ours_std["api_requests_per_call"]),
        }
        log(f"memory: {size.memory_calls} calls in flight")
        report["memory"] = bench.memory_in_flight(size.memory_calls)
    finally:
        bench.close()
    report["seconds"] = time.monotonic() - began
    report["goals"] = goals(report)
    paths = write_report(report, out)
    print(paths["md"].read_text())
    log(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
