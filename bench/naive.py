"""The alternatives the benchmark measures ours against, written as a user would first write them.

* ``naive.sync_v1``: one task per call that calls v1.0 and blocks until the outcome (the pin
  only arrives with it).
* ``naive.start`` + ``naive.poll``: v2.0 async start, then a status request every ``interval``
  seconds (a countdown task each time) until the outcome is final.
* ``naive.floor``: one start request and one result write, nothing else (the burst floor).

Both write what a producer reads under the task id, like ours: ``PLACED`` with the pin, then
``SUCCESS`` with ``{callid, result, completed_at, status_requests}``. Start a worker with
``celery -A bench.naive worker``; settings come from ``CALLPASS_API_URL`` and
``BENCH_REDIS_URL``.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import requests
from celery import Celery, Task

from worker.settings import SIMULATOR_DEV_TOKEN

__all__ = ["app"]

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
API_URL = os.environ.get("CALLPASS_API_URL", "http://127.0.0.1:8099/")
HEADERS = {"Authorization": f"Bearer {SIMULATOR_DEV_TOKEN}"}

app = Celery("naive", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_acks_late=True,
    broker_transport_options={"visibility_timeout": 300},
    worker_hijack_root_logger=False,
)

_local = threading.local()


def _session() -> requests.Session:
    session: requests.Session | None = getattr(_local, "session", None)
    if session is None:
        session = _local.session = requests.Session()
    return session


def _post(method: str, data: dict[str, Any], timeout: float) -> dict[str, Any]:
    response = _session().post(API_URL + method, data=data, headers=HEADERS, timeout=timeout)
    response.raise_for_status()
    return dict(response.json()["data"])


@app.task(name="naive.sync_v1", bind=True)
def sync_v1(self: Task[Any, Any], dn: str, timeout: int) -> dict[str, Any]:
    data = _post("api/v1.0/start-call-password/", {"dn": dn, "timeout": timeout}, timeout + 15)
    return {
        "callid": data["callid"],
        "pin": data["pin"],
        "result": data["result"],
        "completed_at": time.time(),
        "status_requests": 0,
    }


@app.task(name="naive.start", bind=True, ignore_result=True)
def start(self: Task[Any, Any], dn: str, timeout: int, interval: float, queue: str) -> None:
    data = _post("api/v2.0/start-call-password/", {"dn": dn, "timeout": timeout, "async": 1}, 10)
    task_id = str(self.request.id)
    app.backend.store_result(task_id, {"callid": data["callid"], "pin": data["pin"]}, "PLACED")
    args = (task_id, data["callid"], interval, 1, queue)
    poll.apply_async(args, countdown=interval, queue=queue)  # the polls follow on the same queue


@app.task(name="naive.poll", ignore_result=True)
def poll(task_id: str, callid: str, interval: float, count: int, queue: str) -> None:
    data = _post("api/v2.0/get-call-password-status/", {"callid": callid}, 10)
    if data["result"] in (None, "null", "") and count < 200:
        args = (task_id, callid, interval, count + 1, queue)
        poll.apply_async(args, countdown=interval, queue=queue)
        return
    doc = {
        "callid": callid,
        "result": data["result"],
        "completed_at": time.time(),
        "status_requests": count,
    }
    app.backend.store_result(task_id, doc, "SUCCESS")


@app.task(name="naive.floor", bind=True, ignore_result=True)
def floor(self: Task[Any, Any], dn: str, timeout: int) -> None:
    """The least a start can do: one API request and one result write (the burst floor)."""
    data = _post("api/v2.0/start-call-password/", {"dn": dn, "timeout": timeout, "async": 1}, 10)
    app.backend.store_result(str(self.request.id), {"callid": data["callid"]}, "PLACED")


_counter_client: list[Any] = []


@app.task(name="naive.noop", ignore_result=True)
def noop(counter: str) -> None:
    """Nothing but a count, so the benchmark knows when all have run."""
    import redis

    if not _counter_client:
        _counter_client.append(redis.Redis.from_url(REDIS_URL))
    _counter_client[0].incr(counter)
