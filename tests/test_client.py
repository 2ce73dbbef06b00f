"""The API client against a simulator over real HTTP, with faults injected on purpose."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from callpass_producer.contracts.outcome import Outcome
from tests.conftest import Simulator
from worker.api.client import CallPassClient
from worker.api.errors import (
    ApiRejectedError,
    AuthError,
    ConnectError,
    InvalidRequestError,
    MalformedResponseError,
    OutcomeUnknownError,
    RateLimitedError,
    ServerError,
    TransientError,
)
from worker.dev.stack import Stack, free_port
from worker.settings import SIMULATOR_DEV_TOKEN, SecretStr

TOKEN = SecretStr(SIMULATOR_DEV_TOKEN)


@pytest.fixture(scope="module")
def fsim(stack: Stack) -> Simulator:
    """A simulator of this module's own, whose faults the tests change."""
    return Simulator(stack.start_simulator("--seed", "11")[1])


@pytest.fixture
def client(fsim: Simulator) -> Iterator[CallPassClient]:
    fsim.clear_faults()
    c = CallPassClient(fsim.url, TOKEN, read_timeout_s=2.0, attempts=3)
    yield c
    c.close()
    fsim.clear_faults()


def rid() -> str:
    return f"t-{uuid.uuid4()}"


def test_async_start_answers_at_once_and_status_follows_the_call(client: CallPassClient) -> None:
    started = client.start_call_async("79990003001", 5)
    assert started.raw_result == "null" and len(started.pin) == 4
    assert 130 <= int(started.pin) <= 982  # from the caller pool 2210130-2210982
    first = client.get_status(started.callid)
    assert first.outcome is None and not first.final
    deadline = time.monotonic() + 10
    status = first
    while not status.final and time.monotonic() < deadline:
        time.sleep(0.2)
        status = client.get_status(started.callid)
    assert status.outcome is Outcome.ANSWERED and status.raw_result == "NORMAL_CLEARING"


@pytest.mark.parametrize("version", ["v1.0", "v2.0"])
def test_sync_starts_answer_with_the_outcome(client: CallPassClient, version: str) -> None:
    status = client.start_call_sync("79990003002", 2, version=version)
    assert status.outcome is Outcome.BUSY and status.pin


def test_invalid_parameters_are_refused_before_any_request(
    client: CallPassClient, fsim: Simulator
) -> None:
    before = fsim.stats()["requests_by_method"]
    with pytest.raises(InvalidRequestError, match="dn"):
        client.start_call_async("+79990003001", 5)
    with pytest.raises(InvalidRequestError, match="timeout"):
        client.start_call_async("79990003001", 120)
    with pytest.raises(InvalidRequestError, match="callid"):
        client.get_status("not a callid!")
    assert fsim.stats()["requests_by_method"] == before


def test_method_level_errors_keep_the_api_message(client: CallPassClient) -> None:
    with pytest.raises(ApiRejectedError, match="destination not allowed"):
        client.start_call_async("79990003006", 5)
    with pytest.raises(ApiRejectedError, match="can't find callid"):
        client.get_status(str(uuid.uuid4()))


def test_an_unknown_token_is_an_auth_error_without_the_token(fsim: Simulator) -> None:
    secret = "d" * 64
    bad = CallPassClient(fsim.url, SecretStr(secret))
    with pytest.raises(AuthError) as info:
        bad.get_status(str(uuid.uuid4()))
    assert info.value.http_status == 403
    assert secret not in repr(info.value) and secret not in str(info.value)


def test_a_start_answered_503_is_retried_because_it_was_not_processed(
    client: CallPassClient, fsim: Simulator
) -> None:
    fsim.faults(unavailable_rate=1.0)
    before = fsim.stats()["requests_by_method"].get("start_v2", 0)
    with pytest.raises(ServerError) as info:
        client.start_call_async("79990003001", 5, request_id=rid())
    assert info.value.never_reached_server
    assert fsim.stats()["requests_by_method"]["start_v2"] - before == 3  # every attempt used


def test_a_start_answered_500_is_never_resent(client: CallPassClient, fsim: Simulator) -> None:
    """The API may have placed the call before failing: resending would call twice."""
    fsim.faults(server_error_rate=1.0)
    request_id = rid()
    with pytest.raises(OutcomeUnknownError):
        client.start_call_async("79990003001", 5, request_id=request_id)
    assert fsim.starts_for(request_id) == 1


@pytest.mark.parametrize("fault", ["malformed_rate", "drop_rate"])
def test_a_start_whose_answer_is_lost_is_never_resent(
    client: CallPassClient, fsim: Simulator, fault: str
) -> None:
    fsim.faults(**{fault: 1.0})
    request_id = rid()
    with pytest.raises((OutcomeUnknownError, ServerError)) as info:
        client.start_call_async("79990003001", 5, request_id=request_id)
    if isinstance(info.value, ServerError):  # a drop before processing looks the same to us
        pytest.fail("a lost answer must be reported as OutcomeUnknownError")
    assert fsim.starts_for(request_id) <= 1


def test_a_start_read_timeout_is_an_unknown_outcome(fsim: Simulator) -> None:
    fsim.faults(latency_ms=1500)
    slow = CallPassClient(fsim.url, TOKEN, read_timeout_s=0.5, attempts=3)
    request_id = rid()
    try:
        with pytest.raises(OutcomeUnknownError, match="may have reached"):
            slow.start_call_async("79990003001", 5, request_id=request_id)
    finally:
        fsim.clear_faults()
    assert fsim.stats()["requests_by_method"]  # the server saw it; we did not resend it
    assert fsim.starts_for(request_id) <= 1


def test_status_requests_retry_transient_faults(client: CallPassClient, fsim: Simulator) -> None:
    callid = client.start_call_async("79990003003", 5).callid
    fsim.faults(server_error_rate=1.0)
    before = fsim.stats()["status_by_callid"].get(callid, 0)
    with pytest.raises(ServerError):
        client.get_status(callid)
    assert fsim.stats()["status_by_callid"][callid] - before == 3
    fsim.faults(server_error_rate=0.0, malformed_rate=1.0)
    with pytest.raises(MalformedResponseError):
        client.get_status(callid)
    assert fsim.stats()["status_by_callid"][callid] - before == 6
    fsim.clear_faults()
    assert client.get_status(callid).callid == callid


def test_retry_after_is_honoured(client: CallPassClient, fsim: Simulator) -> None:
    callid = client.start_call_async("79990003003", 5).callid
    fsim.faults(rate_limit_rate=1.0, retry_after_s=1)
    started = time.monotonic()
    with pytest.raises(RateLimitedError) as info:
        client.get_status(callid)
    assert info.value.retry_after == 1.0
    assert time.monotonic() - started >= 2.0  # two waits of Retry-After between three attempts


def test_a_long_retry_after_goes_back_to_the_caller(
    client: CallPassClient, fsim: Simulator
) -> None:
    callid = client.start_call_async("79990003003", 5).callid
    fsim.faults(rate_limit_rate=1.0, retry_after_s=30)
    before = fsim.stats()["requests_by_method"]["status"]
    with pytest.raises(RateLimitedError):
        client.get_status(callid)
    # One request, no 30 s nap in a worker slot: the task layer decides when to ask again.
    assert fsim.stats()["requests_by_method"]["status"] - before == 1


def test_a_refused_connection_is_a_connect_error_and_a_start_may_be_retried() -> None:
    closed = CallPassClient(f"http://127.0.0.1:{free_port()}/", TOKEN, attempts=2)
    with pytest.raises(ConnectError) as info:
        closed.start_call_async("79990003001", 5)
    assert info.value.never_reached_server
    assert isinstance(info.value, TransientError)
