"""Real processes for one scenario: a Redis with append-only persistence, the simulator and
several workers, each a separate OS process on loopback; then the bookkeeping of the row."""

from __future__ import annotations

import json
import random
import signal
import socket
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import redis
import requests
from celery import Celery

from callpass_producer import enqueue_call
from worker.celery_app import celery_config
from worker.dev.stack import Proc, Stack, child_env, free_port, wait_for_worker, wait_until
from worker.pipeline.due_polls import due_polls_key
from worker.pipeline.outbox import Outbox, lost_after_s
from worker.settings import load_settings
from worker.webhooks.events import event_id_for

if TYPE_CHECKING:
    from chaos.netns import Partition

__all__ = ["Harness", "Request", "Row"]

#: Short calls keep a scenario bounded: most end at their 3 s timeout.
CALL_TIMEOUT_S = 3
CHAOS_MIX = "NO_ANSWER@timeout:60,USER_BUSY@0.5-2:20,NORMAL_CLEARING@1-3:20"

#: Worker settings chosen for fast recovery: a killed worker's messages come back after the
#: visibility time-out (30 s), which must still exceed the longest countdown plus a run.
CHAOS_WORKER_ENV = {
    "CALLPASS_CONNECT_TIMEOUT_S": "1",
    "CALLPASS_READ_TIMEOUT_S": "2",
    "CALLPASS_HTTP_ATTEMPTS": "2",
    "CALLPASS_VISIBILITY_TIMEOUT_S": "30",
    "CALLPASS_POLL_INTERVAL_S": "1",
    "CALLPASS_POLL_GRACE_S": "3",
    "CALLPASS_DN_LIMITS": "",
    "CALLPASS_API_RATE_LIMIT_PER_S": "0",
    "CALLPASS_LOG_LEVEL": "INFO",
}


@dataclass
class Request:
    task_id: str
    request_id: str
    dn: str
    enqueued_at: float


@dataclass
class Row:
    scenario: str
    requests: int
    settled: int
    lost: int
    double_dials: int
    unknown: int
    notes: str
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.double_dials == 0 and not self.problems

    def render(self) -> str:
        return (
            f"| {self.scenario} | {self.requests} | {self.settled} | {self.lost} | "
            f"{self.double_dials} | {self.unknown} | {self.notes} |"
        )


HEADER = (
    "| scenario | requests | settled | lost | double dials | unknown | notes |\n"
    "|---|---|---|---|---|---|---|"
)


class Harness:
    """One scenario's processes and producer."""

    def __init__(
        self,
        run_dir: Path,
        workers: int = 3,
        redis_fsync: str = "everysec",
        sim_args: tuple[str, ...] = (),
        worker_env: dict[str, str] | None = None,
        seed: int = 1,
        redis_netns: Partition | None = None,
        sim_netns: Partition | None = None,
    ) -> None:
        self.stack = Stack(run_dir)
        self.rng = random.Random(seed)
        self.redis_port = free_port()
        self.redis_fsync = redis_fsync
        # Inside a partition Redis listens on every link; the harness itself uses link 0.
        self.redis_netns = redis_netns
        self.redis_host = redis_netns.address(0) if redis_netns else "127.0.0.1"
        self.redis_proc = self._start_redis()
        self.redis_url = self.redis_url_on(0)
        self.sim_port = free_port()
        self.sim_args = ("--seed", str(seed), "--mix", CHAOS_MIX, *sim_args)
        # Inside a partition the simulator listens on the namespace's end of link 0 only.
        at = ("--host", sim_netns.address(0)) if sim_netns else ()
        self.sim_proc, self.sim_url = self.stack.start_simulator(
            *self.sim_args,
            *at,
            port=self.sim_port,
            prefix=sim_netns.command([]) if sim_netns else (),
        )
        self.env = {
            "CALLPASS_REDIS_URL": self.redis_url,
            "CALLPASS_API_URL": self.sim_url,
            # Plain http to an address of the test's own namespace (not loopback).
            **({"CALLPASS_INSECURE_ALLOW_HTTP": "true"} if sim_netns else {}),
            **CHAOS_WORKER_ENV,
            **(worker_env or {}),
        }
        self.app = Celery("chaos-producer", set_as_current=False)
        self.app.config_from_object(celery_config(load_settings(self.env)))
        self.redis = redis.Redis.from_url(self.redis_url, socket_timeout=5)
        settings = load_settings(self.env)
        self.due_polls_key = due_polls_key(settings.queue)
        self.poll_lease_s = settings.poll_lease_s
        visibility = float(self.env["CALLPASS_VISIBILITY_TIMEOUT_S"])
        self.outbox = Outbox(self.redis, grace_s=lost_after_s(visibility))
        self.workers: dict[str, Proc] = {}
        for i in range(workers):
            self.start_worker(f"w{i}")
        self.requests: list[Request] = []

    # -- processes -----------------------------------------------------------------------

    def redis_url_on(self, link: int) -> str:
        """Redis' URL over the partition's ``link`` (loopback without a partition)."""
        host = self.redis_netns.address(link) if self.redis_netns else "127.0.0.1"
        return f"redis://{host}:{self.redis_port}/0"

    def _start_redis(self) -> Proc:
        data = self.stack.run_dir / "redis-data"
        data.mkdir(exist_ok=True)
        netns = self.redis_netns
        binds = [link.server for link in netns.links] if netns else ["127.0.0.1"]
        argv = [
            "redis-server", "--bind", *binds, "--port", str(self.redis_port),
            "--dir", str(data), "--save", "", "--appendonly", "yes",
            "--appendfsync", self.redis_fsync, "--maxmemory-policy", "noeviction",
        ]  # fmt: skip
        if netns:  # reachable only over the partition's own links: no password needed
            argv = netns.command([*argv, "--protected-mode", "no"])
        proc = self.stack.spawn(f"redis-{len(self.stack.procs)}", argv)

        def up() -> bool:
            if not proc.alive():
                raise RuntimeError(f"redis-server exited:\n{proc.log_tail()}")
            with socket.socket() as s:
                s.settimeout(1.0)
                return s.connect_ex((self.redis_host, self.redis_port)) == 0

        wait_until(up, 20, "redis-server")
        return proc

    def restart_redis(self, sig: int) -> None:
        """Stop Redis with ``sig`` (SIGTERM: clean; SIGKILL: crash) and start it again."""
        self.redis_proc.stop(sig)
        self.redis_proc = self._start_redis()

    def start_worker(self, name: str, env: dict[str, str] | None = None) -> Proc:
        proc = self.stack.start_worker(child_env({**self.env, **(env or {})}), name)
        self.workers[name] = proc
        wait_for_worker(self.app, proc, name)
        return proc

    def kill_worker(self, name: str, sig: int = signal.SIGKILL) -> None:
        self.workers[name].stop(sig, timeout_s=60)

    def stop_simulator_for(self, seconds: float) -> None:
        requests.post(self.sim_url + "_sim/outage", json={"seconds": seconds}, timeout=5)

    def set_faults(self, **values: float) -> None:
        requests.post(self.sim_url + "_sim/faults", json=values, timeout=5).raise_for_status()

    def close(self) -> None:
        self.stack.stop_all()

    # -- traffic ---------------------------------------------------------------------------

    def enqueue(
        self, count: int = 1, timeout: int = CALL_TIMEOUT_S, webhook_url: str | None = None
    ) -> list[Request]:
        batch = []
        for _ in range(count):
            dn = f"7916{self.rng.randrange(10**7):07d}"
            request = Request(str(uuid.uuid4()), f"chaos-{uuid.uuid4().hex[:12]}", dn, time.time())
            enqueue_call(
                self.app,
                dn,
                timeout,
                request_id=request.request_id,
                task_id=request.task_id,
                webhook_url=webhook_url,
                outbox=self.outbox,
            )
            batch.append(request)
        self.requests.extend(batch)
        return batch

    def enqueue_over(
        self, count: int, seconds: float, during: Any = None, webhook_url: str | None = None
    ) -> None:
        """Enqueue ``count`` requests evenly over ``seconds``, calling ``during(elapsed)``."""
        started = time.monotonic()
        for i in range(count):
            due = started + seconds * i / max(count, 1)
            while time.monotonic() < due:
                if during is not None:
                    during(time.monotonic() - started)
                time.sleep(min(0.02, max(0.0, due - time.monotonic())))
            self.enqueue(webhook_url=webhook_url)

    # -- verdict ---------------------------------------------------------------------------

    def documents(self) -> dict[str, dict[str, Any]]:
        keys = [f"celery-task-meta-{r.task_id}" for r in self.requests]
        docs: dict[str, dict[str, Any]] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            for key, raw in zip(chunk, self.redis.mget(chunk), strict=True):
                if raw:
                    meta = json.loads(raw)
                    if meta.get("status") == "SUCCESS" and isinstance(meta.get("result"), dict):
                        docs[key.removeprefix("celery-task-meta-")] = meta["result"]
        return docs

    def wait_settled(self, timeout_s: float) -> dict[str, dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        docs: dict[str, dict[str, Any]] = {}
        while time.monotonic() < deadline:
            try:
                docs = self.documents()
            except redis.RedisError:
                docs = {}
            if len(docs) == len(self.requests):
                break
            time.sleep(0.5)
        return docs

    def calls(self) -> list[dict[str, Any]]:
        return list(requests.get(self.sim_url + "_sim/calls", timeout=30).json())

    def simulator_stats(self) -> dict[str, Any]:
        return dict(requests.get(self.sim_url + "_sim/stats", timeout=10).json())

    def arrivals(self) -> list[float]:
        return list(requests.get(self.sim_url + "_sim/arrivals", timeout=30).json())

    def leased_polls(self) -> list[str]:
        """Polls a runner took in the last second or so and has not finished (or never will:
        its worker died): their score is the take's time plus the lease. A poll scheduled that
        far ahead would count too; with calls shorter than the lease there is none."""
        end = time.time() + self.poll_lease_s
        members = self.redis.zrangebyscore(self.due_polls_key, end - 1.5, end + 0.5)
        return [bytes(m).decode() for m in cast(list[bytes], members)]

    def polls_running(self) -> int:
        return len(self.leased_polls())

    def polls_waiting(self) -> int:
        return int(self.redis.zcard(self.due_polls_key))

    def verdict(self, scenario: str, settle_timeout_s: float, notes: str, began: float) -> Row:
        docs = self.wait_settled(settle_timeout_s)
        sim = self.simulator_stats()
        calls = {c["callid"]: c for c in self.calls()}
        calls_by_request = Counter(c["request_id"] for c in calls.values())
        starts = sim["starts_by_request"]
        problems: list[str] = []
        lost_starts = 0
        for r in self.requests:
            doc = docs.get(r.task_id)
            if doc is None:
                continue
            placed = calls_by_request.get(r.request_id, 0)
            if doc["callid"]:
                call = calls.get(doc["callid"])
                if call is None:
                    problems.append(f"{r.request_id}: callid unknown to the simulator")
                elif doc["raw_result"] is not None and doc["raw_result"] != call["result"]:
                    problems.append(
                        f"{r.request_id}: {doc['raw_result']} but the call ended {call['result']}"
                    )
                elif doc["outcome"] == "unknown" and call["result"] is not None:
                    problems.append(f"{r.request_id}: unknown though the call ended")
            elif placed:
                if doc["outcome"] == "unknown" and doc["call_placed"] is None:
                    lost_starts += 1  # killed between the API's answer and the record
                else:
                    problems.append(f"{r.request_id}: {doc['outcome']} but a call was placed")
        lost = [r for r in self.requests if r.task_id not in docs]
        problems += [f"lost: request {r.request_id} (task {r.task_id})" for r in lost[:5]]
        double = sum(1 for r in self.requests if starts.get(r.request_id, 0) > 1)
        unknown = sum(1 for d in docs.values() if d["outcome"] == "unknown")
        outcomes = Counter(d["outcome"] for d in docs.values())
        summary = ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))
        extra = f"; unknown from lost starts: {lost_starts}" if lost_starts else ""
        return Row(
            scenario=scenario,
            requests=len(self.requests),
            settled=len(docs),
            lost=len(self.requests) - len(docs),
            double_dials=double,
            unknown=unknown,
            notes=f"{notes}{extra}; {summary}; {time.monotonic() - began:.0f} s",
            seconds=time.monotonic() - began,
            problems=problems[:10],
        )

    def expected_events(self, docs: dict[str, dict[str, Any]]) -> set[str]:
        """The webhook-ids the requests must produce: call.completed for every claimed
        request, call.placed for every placed one (invalid requests are never claimed)."""
        expected = set()
        for r in self.requests:
            doc = docs.get(r.task_id)
            if doc is None or doc["outcome"] == "invalid":
                continue
            expected.add(event_id_for("call.completed", r.request_id, r.task_id))
            if doc["callid"]:
                expected.add(event_id_for("call.placed", r.request_id, r.task_id))
        return expected

    def log_count(self, text: str) -> int:
        total = 0
        for path in self.stack.run_dir.glob("w*.log"):
            total += path.read_text(errors="replace").count(text)
        return total
