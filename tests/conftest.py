"""Real parts for the suite: a redis-server and the simulator on free loopback ports, and
real Celery worker processes. Nothing here touches a Redis or an API the user runs."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pytest
import redis
import requests
from celery import Celery

from simulator.faults import FaultConfig
from worker.celery_app import celery_config
from worker.dev.stack import Proc, Stack, child_env, wait_for_worker
from worker.settings import load_settings

#: Two signing secrets, as during a rotation: every delivery carries both signatures.
WEBHOOK_SECRETS = [
    "whsec_dGVzdC1zZWNyZXQtb25lLTAxMjM0NTY3ODlhYmNkZWY=",
    "whsec_dGVzdC1zZWNyZXQtdHdvLTAxMjM0NTY3ODlhYmNkZWY=",
]

#: Short schedules so "no final status" cases settle, and webhooks die, within seconds.
TEST_WORKER_ENV = {
    "CALLPASS_POLL_INTERVAL_S": "1",
    "CALLPASS_POLL_GRACE_S": "3",
    "CALLPASS_LOG_LEVEL": "DEBUG",
    "CALLPASS_WEBHOOK_SECRETS": ",".join(WEBHOOK_SECRETS),
    "CALLPASS_WEBHOOK_RETRY_SCHEDULE_S": "0,1,1,1",
    "CALLPASS_WEBHOOK_TIMEOUT_S": "2",
    # The suite's receivers listen on loopback, which deliveries refuse by default.
    "CALLPASS_WEBHOOK_HTTP_HOSTS": "127.0.0.1",
    "CALLPASS_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--contract-real",
        action="store_true",
        help="run the contract suite against CALLPASS_CONTRACT_URL (places real calls)",
    )


#: What the ``own_worker`` fixture is: ``own_worker(queue_name, **env)`` → ``with … as proc``.
OwnWorker = Callable[..., AbstractContextManager[Proc]]


class Simulator:
    """Test-side handle on a running simulator."""

    def __init__(self, url: str) -> None:
        self.url = url

    def stats(self) -> dict[str, Any]:
        return dict(requests.get(self.url + "_sim/stats", timeout=5).json())

    def calls(self) -> list[dict[str, Any]]:
        return list(requests.get(self.url + "_sim/calls", timeout=5).json())

    def arrivals(self, method: str) -> list[float]:
        """When each request of ``method`` reached the simulator (epoch s)."""
        response = requests.get(self.url + "_sim/arrivals", params={"method": method}, timeout=5)
        return list(response.json())

    def faults(self, **values: float) -> None:
        response = requests.post(self.url + "_sim/faults", json=values, timeout=5)
        response.raise_for_status()

    def clear_faults(self) -> None:
        self.faults(**FaultConfig().as_dict())

    def starts_for(self, request_id: str) -> int:
        return int(self.stats()["starts_by_request"].get(request_id, 0))

    def starts_to(self, dn: str) -> int:
        return int(self.stats()["starts_by_dn"].get(dn, 0))


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("stack"))
    yield s
    s.stop_all()


@pytest.fixture(scope="session")
def redis_url(stack: Stack) -> str:
    return stack.start_redis()[1]


@pytest.fixture(scope="session")
def sim(stack: Stack) -> Simulator:
    """The simulator the worker talks to (no faults: tests that inject them use their own)."""
    return Simulator(stack.start_simulator("--seed", "7")[1])


@pytest.fixture(scope="session")
def worker_env(redis_url: str, sim: Simulator) -> dict[str, str]:
    return {"CALLPASS_REDIS_URL": redis_url, "CALLPASS_API_URL": sim.url, **TEST_WORKER_ENV}


@pytest.fixture(scope="session")
def app(worker_env: dict[str, str]) -> Celery:
    """A producer's Celery app pointed at the suite's Redis.

    Built fresh from the suite's settings: ``worker.celery_app`` may already have been imported
    with the defaults (the user's Redis on 6379), which the suite must never touch.
    """
    producer = Celery("callpass-test-producer", set_as_current=False)
    producer.config_from_object(celery_config(load_settings(worker_env)))
    return producer


def start_worker(stack: Stack, app: Celery, env: dict[str, str], name: str, *extra: str) -> Proc:
    proc = stack.start_worker(child_env(env), name, *extra)
    wait_for_worker(app, proc, name)
    return proc


@pytest.fixture
def own_worker(stack: Stack, app: Celery, worker_env: dict[str, str]) -> OwnWorker:
    """A factory: ``with own_worker("name", CALLPASS_X="y") as proc:`` runs a worker of its own
    on queue ``name``, with ``env`` over the suite's settings, and stops it afterwards."""

    @contextmanager
    def make(name: str, **env: str) -> Iterator[Proc]:
        proc = start_worker(stack, app, {**worker_env, **env, "CALLPASS_QUEUE": name}, name)
        try:
            yield proc
        finally:
            proc.stop()

    return make


@pytest.fixture(scope="session")
def worker(stack: Stack, app: Celery, worker_env: dict[str, str]) -> Proc:
    return start_worker(stack, app, worker_env, "worker")


@pytest.fixture(scope="session")
def partitions_allowed() -> None:
    """Skip (fail in CI: .ci/run sets CALLPASS_TEST_REQUIRE_PARTITIONS=1) where this machine
    cannot build network namespaces with veth pairs, naming why."""
    from chaos.netns import partition_support

    reason = partition_support()
    if reason is None:
        return
    if os.environ.get("CALLPASS_TEST_REQUIRE_PARTITIONS") == "1":
        pytest.fail(f"partition tests are required here: {reason}")
    pytest.skip(reason)


@pytest.fixture
def records(redis_url: str) -> Iterator[redis.Redis]:
    """A client of the suite's own Redis (the in-process pipeline tests' records)."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()
