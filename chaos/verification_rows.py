"""The verification row: a burst of verifications with resends, code guesses and fallback
tasks while workers are SIGKILLed. Beyond the table's promises (lost 0, double dials 0), it
checks that no verification had more calls than its cap, that no verification compared more
codes than its attempts, and that each call needing another channel ran the product's
fallback task exactly once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celery.result import AsyncResult

from callpass_producer import enqueue_call
from callpass_producer.contracts.names import CODE_QUEUE_SUFFIX, VERIFY_TASK
from chaos.harness import Harness, Request, Row
from chaos.product_app import RUNS_KEY, TASK_NAME
from chaos.sizes import SETTLE_S, Size
from worker.dev.stack import child_env
from worker.pipeline.fallback import fallback_task_id

__all__ = ["verifications_with_kills"]

MAX_CALLS = 3
ATTEMPTS = 3
#: Resends are asked for at these moments after the first calls (seconds): the first falls
#: within the 1 s cooldown for most, the last is past the cap for a verification admitted
#: three times.
RESEND_AT_S = (0.3, 2.5, 6.0, 10.0)
FLOW_ENV = {
    "CALLPASS_RESEND_COOLDOWNS_S": "1,2",
    "CALLPASS_RESEND_MAX_CALLS": str(MAX_CALLS),
    "CALLPASS_CODE_ATTEMPTS": str(ATTEMPTS),
}
PRODUCT_QUEUE = "chaos-product-sms"
#: Wrong codes tried per verification: more than its attempts.
GUESSES = 5


@dataclass
class Flow:
    verification_id: str
    dn: str
    requests: list[Request]


def verifications_with_kills(run_dir: Path, size: Size) -> Row:
    began = time.monotonic()
    h = Harness(run_dir, workers=3, sim_args=("--latency-ms", "100"), worker_env=FLOW_ENV)
    product = _start_product_worker(h, run_dir)
    try:
        flows = [_flow(h) for _ in range(size.verifications)]
        kills = _resends_with_kills(h, flows, size.kills)
        compared = _guesses(h, flows)
        row = h.verdict("verifications with resends, workers killed", SETTLE_S, "", began)
        _check_flows(h, row, flows, compared, kills)
        return row
    finally:
        product.terminate()
        product.wait(timeout=30)
        h.close()


def _start_product_worker(h: Harness, run_dir: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "celery", "-A", "chaos.product_app", "worker"]
    argv += ["-Q", PRODUCT_QUEUE, "-P", "threads", "-c", "4", "--without-mingle"]
    env = child_env({"PRODUCT_REDIS_URL": h.redis_url})
    with open(run_dir / "product.log", "ab") as log:  # the child keeps its own copy
        return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)


def _flow(h: Harness) -> Flow:
    flow = Flow(f"ver-{uuid.uuid4().hex[:12]}", f"7916{h.rng.randrange(10**7):07d}", [])
    _enqueue(h, flow, resend=False)
    return flow


def _enqueue(h: Harness, flow: Flow, resend: bool) -> None:
    request = Request(str(uuid.uuid4()), f"chaos-{uuid.uuid4().hex[:12]}", flow.dn, time.time())
    enqueue_call(
        h.app,
        flow.dn,
        5,
        request_id=request.request_id,
        task_id=request.task_id,
        outbox=h.outbox,
        verification_id=flow.verification_id,
        resend=resend or None,
        fallback_task=TASK_NAME,
        fallback_queue=PRODUCT_QUEUE,
    )
    flow.requests.append(request)
    h.requests.append(request)


def _resends_with_kills(h: Harness, flows: list[Flow], kills: int) -> int:
    """Every flow's resends at RESEND_AT_S, with ``kills`` SIGKILLs spread over them."""
    started = time.monotonic()
    end = RESEND_AT_S[-1] + 1.0
    moments = sorted(h.rng.uniform(0.2, end) for _ in range(kills))
    killed = 0
    for at in RESEND_AT_S:
        while (wait := started + at - time.monotonic()) > 0:
            if moments and time.monotonic() - started >= moments[0]:
                moments.pop(0)
                name = h.rng.choice(sorted(h.workers))
                h.kill_worker(name, signal.SIGKILL)
                h.start_worker(name)
                killed += 1
            time.sleep(min(wait, 0.05))
        for flow in flows:
            _enqueue(h, flow, resend=True)
    for _ in moments:  # kills left: during the last calls' polls
        h.kill_worker(name := h.rng.choice(sorted(h.workers)), signal.SIGKILL)
        h.start_worker(name)
        killed += 1
    return killed


def _guesses(h: Harness, flows: list[Flow]) -> dict[str, int]:
    """Wrong codes for every verification; how many each compared (mismatch or ok)."""
    queue = str(h.app.conf.task_default_queue) + CODE_QUEUE_SUFFIX
    sent = [
        (flow.verification_id, _check(h, flow.verification_id, queue))
        for flow in flows
        for _ in range(GUESSES)
    ]
    compared: Counter[str] = Counter()
    for verification_id, result in sent:
        answer = _answer(result)
        if answer.get("reason") in ("mismatch", "ok"):
            compared[verification_id] += 1
    return dict(compared)


def _check(h: Harness, verification_id: str, queue: str) -> AsyncResult[Any]:
    # 0129 is outside the caller-ID pool: never a verification's code.
    return h.app.send_task(VERIFY_TASK, args=[verification_id, "0129"], queue=queue)


def _answer(result: AsyncResult[Any]) -> dict[str, Any]:
    # A check whose worker was killed is redelivered after the visibility time-out (30 s).
    try:
        return dict(result.get(timeout=120))
    except Exception:
        return {"reason": "no answer"}


def _check_flows(
    h: Harness, row: Row, flows: list[Flow], compared: dict[str, int], kills: int
) -> None:
    docs = h.documents()
    calls_per_number = Counter(h.simulator_stats()["starts_by_dn"])
    over_cap = [f.verification_id for f in flows if calls_per_number[f.dn] > MAX_CALLS]
    over_attempts = {v: n for v, n in compared.items() if n > ATTEMPTS}
    expected = {
        fallback_task_id(r.request_id, r.task_id): r.request_id
        for f in flows
        for r in f.requests
        if _needs_fallback(docs.get(r.task_id))
    }
    runs = _fallback_runs(h, set(expected), SETTLE_S)
    duplicates = sum(n - 1 for n in runs.values() if n > 1)
    missing = [t for t in expected if t not in runs]
    unexpected = [t for t in runs if t not in expected]
    outcomes = Counter(d["outcome"] for d in docs.values())
    row.problems += [f"verification {v}: more calls than {MAX_CALLS}" for v in over_cap[:5]]
    row.problems += [f"verification {v}: {n} codes compared" for v, n in over_attempts.items()]
    row.problems += [f"fallback {t}: never ran" for t in missing[:5]]
    if duplicates:
        row.problems.append(f"{duplicates} fallback tasks ran twice")
    row.notes = (
        f"{len(flows)} verifications, {len(h.requests) - len(flows)} resends asked for "
        f"({outcomes['rate_limited']} refused by cooldown or cap); {kills} SIGKILLs; "
        f"calls per verification at most {max(calls_per_number.values(), default=0)} "
        f"(cap {MAX_CALLS}); codes compared per verification at most "
        f"{max(compared.values(), default=0)} of {GUESSES} tried (cap {ATTEMPTS}); fallback "
        f"tasks expected {len(expected)}, ran {sum(runs.values())} (unique ids {len(runs)}), "
        f"duplicates {duplicates}, missing {len(missing)}, unexpected {len(unexpected)}"
        f"{row.notes}"
    )


def _needs_fallback(doc: dict[str, Any] | None) -> bool:
    """A call that did not reach the phone (a request refused by a limit sends none)."""
    if doc is None or doc["outcome"] in ("rate_limited", "invalid"):
        return False
    return bool(doc["next_step"] == "other_channel")


def _fallback_runs(h: Harness, expected: set[str], timeout_s: float) -> Counter[str]:
    """The product's runs by task id, once every expected one ran (or the time is up)."""
    deadline = time.monotonic() + timeout_s
    while True:
        runs = Counter(json.loads(raw)["task_id"] for raw in h.redis.lrange(RUNS_KEY, 0, -1))
        if expected <= set(runs) or time.monotonic() > deadline:
            return runs
        time.sleep(0.5)  # polling a condition, with a deadline
