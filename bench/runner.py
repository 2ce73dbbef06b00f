"""One benchmark run: its own Redis and simulators, one worker per variant, side by side.

Every variant gets the same simulator (same latency and outcome mix), the same Redis and the
same arrivals; only the worker differs. See ``bench/__main__.py`` for what is run and
``bench/report.py`` for what is written.
"""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import redis
import requests
from celery import Celery

from bench.burst import CodeCheckProbe, floor_run
from bench.measure import BackendWatcher, cpu_seconds, percentile, rss_bytes
from bench.profile import Profiler
from callpass_producer import enqueue_call
from worker.celery_app import celery_config
from worker.dev.stack import Proc, Stack, child_env, delete_queues, wait_for_worker, wait_until
from worker.pipeline.due_polls import due_polls_key
from worker.pipeline.schedule import PollSchedule
from worker.settings import SIMULATOR_DEV_TOKEN, load_settings

__all__ = ["MIXES", "Bench", "Variant"]

#: The outcome mixes (simulator --mix syntax). Standard: most calls end at timeout.
MIXES = {
    "standard": "NO_ANSWER@timeout:70,USER_BUSY@1-3:20,NORMAL_CLEARING@2-8:10",
    "concentrated": "NO_ANSWER@timeout:80,USER_BUSY@1-2:15,NORMAL_CLEARING@3-6:5",
}

#: Ours, with the defaults the README recommends, except the limits a benchmark must lift.
OURS_ENV = {
    "CALLPASS_API_RATE_LIMIT_PER_S": "0",
    "CALLPASS_DN_LIMITS": "",
    "CALLPASS_LOG_LEVEL": "WARNING",
}


@dataclass(frozen=True)
class Variant:
    name: str
    kind: str  # ours | fixed | sync
    interval_s: float = 0.0
    pool: str = "threads"
    concurrency: int = 32
    env: tuple[tuple[str, str], ...] = ()
    #: Worker processes on the same queue (the scale-out rows).
    workers: int = 1


@dataclass
class Bench:
    run_dir: Path
    latency_ms: int = 50
    seed: int = 1
    stack: Stack = field(init=False)
    redis_url: str = field(init=False)
    redis_proc: Proc = field(init=False)
    sims: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.stack = Stack(self.run_dir)
        self.redis_proc, self.redis_url = self.stack.start_redis()
        self.redis = redis.Redis.from_url(self.redis_url)
        self.rng = random.Random(self.seed)

    def close(self) -> None:
        self.stack.stop_all()

    # -- processes -----------------------------------------------------------------------

    def sim(self, mix: str, latency_ms: int | None = None) -> str:
        latency = self.latency_ms if latency_ms is None else latency_ms
        key = f"{mix}/{latency}"
        if key not in self.sims:
            _, url = self.stack.start_simulator(
                "--latency-ms", str(latency), "--mix", MIXES[mix], "--seed", str(self.seed)
            )
            self.sims[key] = url
        return self.sims[key]

    def _ours_env(self, sim_url: str, queue: str, extra: dict[str, str]) -> dict[str, str]:
        return {
            "CALLPASS_REDIS_URL": self.redis_url,
            "CALLPASS_API_URL": sim_url,
            "CALLPASS_QUEUE": queue,
            **OURS_ENV,
            **extra,
        }

    def start_worker(self, variant: Variant, sim_url: str, queue: str) -> tuple[Proc, Celery]:
        name = f"{variant.kind}-{uuid.uuid4().hex[:6]}"
        pool = ["--pool", variant.pool, "--concurrency", str(variant.concurrency)]
        if variant.kind == "ours":
            env = self._ours_env(sim_url, queue, dict(variant.env))
            env["CALLPASS_WORKER_POOL"] = variant.pool  # `--pool prefork` alone would not do
            app = Celery("bench-producer", set_as_current=False)
            app.config_from_object(celery_config(load_settings(env)))
            proc = self.stack.start_worker(child_env(env), name, *pool)
        else:
            env = {"BENCH_REDIS_URL": self.redis_url, "CALLPASS_API_URL": sim_url}
            app = Celery("naive-producer", broker=self.redis_url, backend=self.redis_url)
            app.conf.update(task_serializer="json", accept_content=["json"])
            argv = [
                self.stack.python, "-m", "celery", "-A", "bench.naive", "worker",
                "--hostname", f"{name}@%h", "--loglevel", "WARNING", "-Q", queue,
                "--without-mingle", "--without-gossip", *pool,
            ]  # fmt: skip
            proc = self.stack.spawn(name, argv, child_env(env))
        wait_for_worker(app, proc, name)
        return proc, app

    # -- one measured run ------------------------------------------------------------------

    def run(
        self,
        variant: Variant,
        mix: str,
        calls: int,
        rate_per_s: float,
        timeout: int,
        deadline_s: float,
        profile_to: Path | None = None,
    ) -> dict[str, Any]:
        """``calls`` calls at ``rate_per_s`` (0: all at once); the run's metrics. With
        ``profile_to``, the worker is sampled with py-spy and a summary is returned too."""
        sim_url = self.sim(mix)
        requests.post(sim_url + "_sim/reset", timeout=10).raise_for_status()
        queue = f"bench-{uuid.uuid4().hex[:8]}"
        proc, app = self.start_worker(variant, sim_url, queue)
        others = [self.start_worker(variant, sim_url, queue)[0] for _ in range(variant.workers - 1)]
        watcher = BackendWatcher(self.redis)
        watcher.start()
        enqueued: dict[str, float] = {}
        probe_counts: dict[str, Any] = {}
        probe_latencies: list[float] = []
        profiler = Profiler(proc.popen.pid, profile_to) if profile_to else None
        # A person checking a code while ours places a burst.
        probe = CodeCheckProbe(app) if variant.kind == "ours" and not rate_per_s else None
        if probe is not None:
            probe.start()
        try:
            pids = [p.popen.pid for p in (proc, *others)]
            cpu0 = sum(map(cpu_seconds, pids)), cpu_seconds(self.redis_proc.popen.pid)
            commands0 = self._redis_commands()
            began = time.time()
            for i in range(calls):
                if rate_per_s:
                    due = began + i / rate_per_s
                    while time.time() < due:
                        time.sleep(max(0.0, min(0.005, due - time.time())))
                dn = f"7916{self.rng.randrange(10**7):07d}"
                task_id = str(uuid.uuid4())
                enqueued[task_id] = time.time()
                watcher.watch(task_id)
                self._send(app, variant, dn, timeout, queue, task_id)
            stop_at = time.monotonic() + deadline_s
            while watcher.pending() and time.monotonic() < stop_at:
                if probe is not None and watcher.answered() >= calls:
                    probe_counts = probe.stop()  # every call placed (or settled)
                    probe_latencies, probe = list(probe.latencies), None
                time.sleep(0.05)
            cpu1 = sum(map(cpu_seconds, pids)), cpu_seconds(self.redis_proc.popen.pid)
            commands = self._redis_commands()
            commands.subtract(commands0)
        finally:
            if probe is not None:
                probe_counts, probe_latencies = probe.stop(), list(probe.latencies)
            watcher.stop()
            profile = profiler.stop() if profiler else None
            for worker in (proc, *others):
                worker.stop()
            if variant_broker(variant).startswith("amqp"):
                # A RabbitMQ keeps the quorum queues a run declared; Redis' lists go with the
                # benchmark's own Redis.
                delete_queues(app)
        stats = requests.get(sim_url + "_sim/stats", timeout=30).json()
        sim_calls = {
            c["callid"]: c for c in requests.get(sim_url + "_sim/calls", timeout=60).json()
        }
        metrics = self._metrics(
            variant, mix, calls, timeout, enqueued, watcher, stats, sim_calls, cpu0, cpu1
        )
        # Includes the benchmark's own reads of the result keys (its watcher: MGET).
        settled = max(metrics["settled"], 1)
        metrics["redis_commands_per_call"] = round(commands.total() / settled, 1)
        metrics["redis_commands_by_name"] = {
            name: round(count / settled, 2) for name, count in commands.most_common() if count
        }
        if profile is not None:
            metrics["profile"] = profile
        if variant.kind == "ours" and not rate_per_s:
            metrics["code_check_ms"] = {**_ms(probe_latencies), **probe_counts}
        return metrics

    def _redis_commands(self) -> Counter[str]:
        """Commands Redis has run so far, by name (``evalsha`` counts a script once)."""
        stats = self.redis.info("commandstats")
        return Counter(
            {
                name.removeprefix("cmdstat_"): int(v["calls"])
                for name, v in stats.items()
                if isinstance(v, dict)
            }
        )

    def _send(
        self, app: Celery, variant: Variant, dn: str, timeout: int, queue: str, task_id: str
    ) -> None:
        if variant.kind == "ours":
            enqueue_call(app, dn, timeout, queue=queue, task_id=task_id)
        elif variant.kind == "fixed":
            app.send_task(
                "naive.start",
                (dn, timeout, variant.interval_s, queue),
                queue=queue,
                task_id=task_id,
            )
        else:
            app.send_task("naive.sync_v1", (dn, timeout), queue=queue, task_id=task_id)

    def _metrics(
        self,
        variant: Variant,
        mix: str,
        calls: int,
        timeout: int,
        enqueued: dict[str, float],
        watcher: BackendWatcher,
        stats: dict[str, Any],
        sim_calls: dict[str, dict[str, Any]],
        cpu0: tuple[float, float],
        cpu1: tuple[float, float],
    ) -> dict[str, Any]:
        settled = watcher.outcomes
        schedule = PollSchedule()
        lags, shares, pins = [], [], []
        for doc in settled.values():
            call = sim_calls.get(str(doc.get("callid")))
            completed = _epoch(doc.get("completed_at"))
            if call is None or completed is None:
                continue
            lags.append(completed - call["ends_at"])
            placed = _epoch(doc.get("placed_at"))
            if variant.kind == "ours" and placed is not None:
                # The poll that could first see the end (the API answers after its latency).
                offsets = schedule.offsets(int(doc.get("timeout") or timeout))
                reach = call["ends_at"] - placed - self.latency_ms / 1000
                due = next((o for o in offsets if o >= reach), None)
                if due is not None:
                    shares.append(completed - (placed + due))
        for task_id, seen in watcher.pin_at.items():
            pins.append(seen - enqueued[task_id])
        outcome_times = sorted(watcher.outcome_at.values())
        api_requests = sum(stats["requests_by_method"].values())
        done = len(settled)
        span = (outcome_times[-1] - min(enqueued.values())) if outcome_times else 0.0
        return {
            "variant": variant.name,
            "kind": variant.kind,
            "pool": f"{variant.pool} x{variant.concurrency}",
            "workers": variant.workers,
            "broker": "rabbitmq" if variant_broker(variant).startswith("amqp") else "redis",
            "mix": mix,
            "calls": calls,
            "settled": done,
            "lost": calls - done,
            "outcomes": dict(
                Counter(str(d.get("outcome") or d.get("result")) for d in settled.values())
            ),
            "seconds": round(span, 2),
            "settled_per_s": round(done / span, 2) if span else None,
            "api_requests_per_call": round(api_requests / max(done, 1), 3),
            "status_requests_per_call": round(
                stats["requests_by_method"].get("status", 0) / max(done, 1), 3
            ),
            "time_to_pin_ms": _ms(pins),
            "lag_ms": _ms(lags),
            "pipeline_share_ms": _ms(shares) if shares else None,
            "cpu_s_per_call_worker": round((cpu1[0] - cpu0[0]) / max(done, 1), 5),
            "cpu_s_per_call_redis": round((cpu1[1] - cpu0[1]) / max(done, 1), 5),
        }

    # -- floors and memory -------------------------------------------------------------------

    def noop_rate(self, tasks: int) -> dict[str, Any]:
        """Raw Celery no-op task rate on the same broker, pool and concurrency as ours."""
        queue = f"bench-noop-{uuid.uuid4().hex[:6]}"
        proc, app = self.start_worker(Variant("noop", "noop"), self.sim("standard"), queue)
        counter = f"bench:noop:{queue}"
        try:
            began = time.monotonic()
            for _ in range(tasks):
                app.send_task("naive.noop", (counter,), queue=queue)
            wait_until(lambda: int(self.redis.get(counter) or 0) >= tasks, 120, "no-op tasks")
            elapsed = time.monotonic() - began
        finally:
            proc.stop()
        return {"tasks": tasks, "seconds": round(elapsed, 2), "tasks_per_s": round(tasks / elapsed)}

    def burst_floor(self, calls: int) -> dict[str, Any]:
        """The burst floor: ``calls`` tasks of one API request and one result write each, at
        once, on the same broker, pool and concurrency as ours; plus one API round trip."""
        queue = f"bench-floor-{uuid.uuid4().hex[:6]}"
        proc, app = self.start_worker(Variant("floor", "noop"), self.sim("standard"), queue)
        watcher = BackendWatcher(self.redis)
        watcher.start()
        try:
            seconds = floor_run(watcher, app, queue, calls)
        finally:
            watcher.stop()
            proc.stop()
        return {
            "calls": calls,
            "tasks_per_s": round(calls / seconds),
            "floor_ms": round(seconds * 1000 + self.latency_ms, 1),
        }

    def bare_replay(self, calls: int, requests_per_call: float) -> dict[str, Any]:
        """The same HTTP requests, one thread, same client library: the cost of the requests."""
        sim_url = self.sim("standard", latency_ms=0)
        session = requests.Session()
        headers = {"Authorization": f"Bearer {SIMULATOR_DEV_TOKEN}"}
        status_per_call = max(0, round(requests_per_call) - 1)
        cpu0, began = time.process_time(), time.monotonic()
        for _ in range(calls):
            dn = f"7916{self.rng.randrange(10**7):07d}"
            data = {"dn": dn, "timeout": 10, "async": 1}
            response = session.post(
                sim_url + "api/v2.0/start-call-password/", data=data, headers=headers, timeout=10
            )
            callid = response.json()["data"]["callid"]
            for _ in range(status_per_call):
                session.post(
                    sim_url + "api/v2.0/get-call-password-status/",
                    data={"callid": callid},
                    headers=headers,
                    timeout=10,
                ).json()
        cpu = time.process_time() - cpu0
        session.close()
        return {
            "calls": calls,
            "requests_per_call": status_per_call + 1,
            "cpu_s_per_call": round(cpu / calls, 5),
            "seconds": round(time.monotonic() - began, 2),
        }

    def memory_in_flight(self, calls: int) -> dict[str, Any]:
        """RSS growth of one worker holding ``calls`` placed calls, each waiting for its poll."""
        # Calls that never end (the simulator's magic numbers ending in 5) of 99 s, with no
        # ringing poll and the first poll at timeout + 10 s: every call stays in flight while
        # it is measured, and what each leaves is one poll waiting in Redis' due set, nothing
        # in the worker (the earliest calls get their first poll if placing takes over 109 s).
        variant = Variant(
            "ours",
            "ours",
            env=(
                ("CALLPASS_POLL_FIRST_S", "600"),
                ("CALLPASS_POLL_END_SLACK_S", "10"),
                ("CALLPASS_POLL_INTERVAL_S", "60"),
                ("CALLPASS_POLL_GRACE_S", "600"),
                ("CALLPASS_VISIBILITY_TIMEOUT_S", "1800"),
                ("CALLPASS_ETA_TASK_LIMIT", str(max(20_000, calls + 1000))),
                # Thousands of starts queue up at once: none may expire waiting its turn.
                ("CALLPASS_PLACE_DEADLINE_S", "3600"),
            ),
        )

        def never_ending() -> str:
            return f"7999000{self.rng.randrange(1000):03d}5"

        queue = f"bench-mem-{uuid.uuid4().hex[:6]}"
        proc, app = self.start_worker(variant, self.sim("standard"), queue)
        # These calls never settle: reading 10,000 results every 0.1 s would only take CPU
        # from the worker being measured.
        watcher = BackendWatcher(self.redis, pin_tick_s=0.05, outcome_tick_s=5.0)
        watcher.start()
        try:
            for _ in range(200):  # warm up threads, connections and caches first
                task_id = str(uuid.uuid4())
                watcher.watch(task_id)
                self._send(app, variant, never_ending(), 99, queue, task_id)
            wait_until(lambda: len(watcher.pin_at) >= 200, 120, "warm-up calls placed")
            time.sleep(1.0)
            base = rss_bytes(proc.popen.pid)
            began = time.monotonic()
            for _ in range(calls):
                task_id = str(uuid.uuid4())
                watcher.watch(task_id)
                self._send(app, variant, never_ending(), 99, queue, task_id)
            wait_until(lambda: len(watcher.pin_at) >= calls + 200, 300, "calls placed", 0.2)
            placed_s = time.monotonic() - began
            time.sleep(1.0)
            grown = rss_bytes(proc.popen.pid) - base
            in_flight = int(self.redis.zcard("callpass:inflight"))
            held = int(self.redis.hlen("unacked"))
            polls_waiting = int(self.redis.zcard(due_polls_key(queue)))
            settled = len(watcher.outcome_at)
        finally:
            watcher.stop()
            proc.stop()
        return {
            "calls": calls,
            "placed_in_s": round(placed_s, 1),
            "rss_growth_bytes": grown,
            "bytes_per_call": round(grown / calls),
            "in_flight_records": in_flight,
            "countdown_messages_held": held,
            "polls_waiting_in_redis": polls_waiting,
            "settled_meanwhile": settled,
        }


def variant_broker(variant: Variant) -> str:
    return dict(variant.env).get("CALLPASS_BROKER_URL", "")


def _epoch(value: Any) -> float | None:
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return None


def _ms(values: list[float]) -> dict[str, float | None]:
    def r(q: float) -> float | None:
        v = percentile(values, q)
        return None if v is None else round(v * 1000, 1)

    return {"p50": r(0.5), "p99": r(0.99), "max": round(max(values) * 1000, 1) if values else None}
