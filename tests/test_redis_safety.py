"""Redis passwords stay out of what the worker prints and logs, and the worker refuses a Redis
that may evict request records (an evicted record lets a redelivered request dial twice)."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis
import requests
from celery import Celery

from tests.conftest import Simulator
from worker.celery_app import celery_config
from worker.dev.stack import Proc, Stack, child_env, free_port, wait_for_worker, wait_until
from worker.masking import MaskingFilter, hide_url_credentials, redact_url
from worker.settings import SettingsError, load_settings

#: Fixed, not random: it appears in test ids, which both pytest-xdist processes must agree on.
PASSWORD = "Redis-pw-5e3d1c0a9b8f7e6d"


def callpass_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", "config"],
        env=child_env(env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# --- what is printed -------------------------------------------------------------------------


def test_callpass_config_prints_no_password_of_any_url() -> None:
    env = {
        "CALLPASS_REDIS_URL": f"redis://:{PASSWORD}@127.0.0.1:6390/0",
        "CALLPASS_BROKER_URL": f"amqp://callpass:{PASSWORD}-amqp@127.0.0.1:5672/vhost",
        "CALLPASS_RESULT_BACKEND": f"rediss://default:{PASSWORD}-results@127.0.0.1:6391/2",
    }
    out = callpass_config(env)
    assert out.returncode == 0, out.stderr
    assert PASSWORD not in out.stdout + out.stderr
    assert "CALLPASS_REDIS_URL=redis://***@127.0.0.1:6390/0" in out.stdout.splitlines()
    assert "CALLPASS_BROKER_URL=amqp://***@127.0.0.1:5672/vhost" in out.stdout.splitlines()
    assert "CALLPASS_RESULT_BACKEND=rediss://***@127.0.0.1:6391/2" in out.stdout.splitlines()


def test_settings_show_no_url_password_in_their_repr() -> None:
    # Tracebacks and debug lines may show a Settings object.
    settings = load_settings({"CALLPASS_REDIS_URL": f"redis://u:{PASSWORD}@127.0.0.1:6390/0"})
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings)
    assert "redis_url='redis://***@127.0.0.1:6390/0'" in repr(settings)


def test_a_password_in_a_redis_query_string_is_refused_by_name_not_echoed() -> None:
    # kombu cannot read ?password= (the worker would die in a traceback) and Celery's own
    # masking only knows user:password@: such a URL is refused, the value never shown.
    out = callpass_config({"CALLPASS_REDIS_URL": f"redis://127.0.0.1:6390/0?password={PASSWORD}"})
    assert out.returncode == 2
    assert "CALLPASS_REDIS_URL" in out.stderr and "password=…" in out.stderr
    assert PASSWORD not in out.stdout + out.stderr
    with pytest.raises(SettingsError, match="CALLPASS_RESULT_BACKEND: must not carry credentials"):
        load_settings({"CALLPASS_RESULT_BACKEND": "redis://h:6379/0?db=1&token=x"})
    # TLS options in the query are not credentials.
    load_settings({"CALLPASS_REDIS_URL": "rediss://h:6380/0?ssl_keyfile=/k&ssl_cert_reqs=none"})


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"redis://:{PASSWORD}@10.0.0.5:6379/0", "redis://***@10.0.0.5:6379/0"),
        (f"rediss://default:{PASSWORD}@r.example:6380/1", "rediss://***@r.example:6380/1"),
        (f"amqp://u:{PASSWORD}@[::1]:5672//", "amqp://***@[::1]:5672//"),
        (
            f"unix:///run/redis.sock?db=2&password={PASSWORD}",
            "unix:///run/redis.sock?db=2&password=***",
        ),
        (
            f"https://api.example/v2/?access_key={PASSWORD}&x=1",
            "https://api.example/v2/?access_key=***&x=1",
        ),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ],
)
def test_a_service_url_is_shown_without_its_credentials(url: str, shown: str) -> None:
    assert redact_url(url, keep_path=True) == shown
    # Webhook receivers: the host only (their path may be the secret), as before.
    assert PASSWORD not in redact_url(url)


def test_log_lines_lose_url_credentials_wherever_they_are() -> None:
    text = (
        f"Cannot connect to redis://user:{PASSWORD}@h:6379/0: refused; "
        f"retrying amqp://guest:{PASSWORD}@h// and redis://h/0?password={PASSWORD}&db=1"
    )
    hidden = hide_url_credentials(text)
    assert PASSWORD not in hidden
    assert "redis://***@h:6379/0" in hidden and "?password=***&db=1" in hidden
    record = logging.LogRecord("kombu", logging.ERROR, __file__, 1, "%s", (text,), None)
    MaskingFilter().filter(record)
    assert PASSWORD not in record.getMessage()
    # Nothing else is touched: a URL without credentials, an e-mail-like path.
    plain = "GET https://api.example/v2/calls/a@b?state=1 from redis://127.0.0.1:6379/0"
    assert hide_url_credentials(plain) == plain


def test_the_eviction_check_setting_names_its_choices() -> None:
    assert load_settings({}).redis_eviction_policy_check == "refuse"
    with pytest.raises(
        SettingsError, match="CALLPASS_REDIS_EVICTION_POLICY_CHECK: must be one of refuse, warn"
    ):
        load_settings({"CALLPASS_REDIS_EVICTION_POLICY_CHECK": "ignore"})


def test_every_redis_in_use_is_checked_once_with_what_it_holds() -> None:
    from worker.ops.redis_policy import redis_roles

    same = load_settings({"CALLPASS_REDIS_URL": "redis://r:6379/0"})
    assert redis_roles(same) == {"redis://r:6379/0": ["records", "broker", "results"]}
    split = load_settings(
        {
            "CALLPASS_REDIS_URL": "redis://r:6379/0",
            "CALLPASS_BROKER_URL": "amqp://u:p@mq:5672//",  # RabbitMQ: no maxmemory-policy
            "CALLPASS_RESULT_BACKEND": "redis://r:6379/1",
        }
    )
    assert redis_roles(split) == {"redis://r:6379/0": ["records"], "redis://r:6379/1": ["results"]}


# --- the eviction policy, against real redis-servers ------------------------------------------


def test_the_suites_redis_runs_with_noeviction(redis_url: str) -> None:
    policy = redis.Redis.from_url(redis_url).config_get("maxmemory-policy")
    assert policy == {"maxmemory-policy": "noeviction"}


@contextmanager
def worker_on_own_redis(
    stack: Stack, sim: Simulator, name: str, redis_args: list[str], **env: str
) -> Iterator[tuple[Proc, Celery, dict[str, str]]]:
    """A redis-server with ``redis_args`` and a password, and a worker started against it:
    the worker, a producer app on that Redis, and the worker's environment."""
    redis_proc, plain_url = stack.start_redis(extra_args=[*redis_args, "--requirepass", PASSWORD])
    url = plain_url.replace("redis://", f"redis://:{PASSWORD}@")
    worker_env = {
        "CALLPASS_REDIS_URL": url,
        "CALLPASS_API_URL": sim.url,
        "CALLPASS_METRICS_PORT": "0",
        "CALLPASS_QUEUE": name,
        **env,
    }
    app = Celery(f"{name}-producer", set_as_current=False)
    app.config_from_object(celery_config(load_settings(worker_env)))
    proc = stack.start_worker(child_env(worker_env), name)
    try:
        yield proc, app, worker_env
    finally:
        proc.stop()
        redis_proc.stop()


def test_a_worker_refuses_a_redis_that_may_evict_records(stack: Stack, sim: Simulator) -> None:
    lru = ["--maxmemory-policy", "allkeys-lru"]
    with worker_on_own_redis(stack, sim, "evict-refuse", lru) as (proc, _, _):
        wait_until(lambda: not proc.alive(), 60, "the worker refusing to start")
        log = proc.log_path.read_text(errors="replace")
    assert proc.popen.returncode != 0
    assert "maxmemory-policy allkeys-lru: it must be noeviction" in log
    assert "CALLPASS_REDIS_EVICTION_POLICY_CHECK=warn" in log
    assert "(records, broker, results)" in log
    assert " ready." not in log  # it never took a message
    assert PASSWORD not in log


def test_warn_mode_starts_and_says_so_loudly(stack: Stack, sim: Simulator) -> None:
    name = "evict-warn"
    with worker_on_own_redis(
        stack,
        sim,
        name,
        ["--maxmemory-policy", "volatile-ttl"],
        CALLPASS_REDIS_EVICTION_POLICY_CHECK="warn",
    ) as (proc, app, _):
        wait_for_worker(app, proc, name)
        log = proc.log_path.read_text(errors="replace")
    warnings = [line for line in log.splitlines() if "WARNING" in line and "!!!" in line]
    assert len(warnings) == 1, log[-3000:]
    assert "maxmemory-policy volatile-ttl: it must be noeviction" in warnings[0]
    assert "CALLPASS_REDIS_EVICTION_POLICY_CHECK=warn" in warnings[0]
    assert PASSWORD not in log


def test_a_redis_that_refuses_config_is_warned_about_not_refused(
    stack: Stack, sim: Simulator
) -> None:
    # Managed Redis often renames or forbids CONFIG: the policy cannot be read, only warned of.
    name = "evict-unknown"
    no_config = ["--rename-command", "CONFIG", '""']
    with worker_on_own_redis(stack, sim, name, no_config) as (proc, app, _):
        wait_for_worker(app, proc, name)
        log = proc.log_path.read_text(errors="replace")
    assert "maxmemory-policy could not be checked (ResponseError: unknown command" in log
    assert PASSWORD not in log


def test_banner_flower_and_inspect_show_no_redis_password(stack: Stack, sim: Simulator) -> None:
    name = "pw-shown"
    with worker_on_own_redis(stack, sim, name, []) as (proc, app, env):
        wait_for_worker(app, proc, name)
        node = f"{name}@{socket.gethostname()}"
        conf = app.control.inspect(destination=[node], timeout=5).conf() or {}
        assert conf, "the worker did not answer inspect conf"
        port = free_port()
        flower_env = {k: v for k, v in child_env(env).items() if not k.startswith("FLOWER_")}
        flower = stack.start_flower(flower_env, port)
        try:
            base = f"http://127.0.0.1:{port}"
            pages = {
                path: requests.get(base + path, timeout=10).text
                for path in (
                    "/",
                    "/broker",
                    "/workers",
                    "/api/workers?refresh=1",
                    f"/worker/{node}",
                )
            }
        finally:
            flower.stop()
        texts = {
            "worker log": proc.log_path.read_text(errors="replace"),
            "flower log": flower.log_path.read_text(errors="replace"),
            "inspect conf": json.dumps(conf),
            **pages,
        }
    assert "callpass worker: API" in texts["worker log"]  # the start-up line is logged
    assert [where for where, text in texts.items() if PASSWORD in text] == []


def test_a_password_holding_an_at_sign_is_hidden_whole() -> None:
    text = hide_url_credentials("connecting to redis://:p@ssw0rd@redis:6379/0")
    assert "ssw0rd" not in text and "redis:6379/0" in text
