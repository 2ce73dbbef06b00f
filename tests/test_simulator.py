"""The simulator's own behaviour: protocol checks, sandbox numbers, counters, the curl examples."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import uuid

import pytest
import requests

from simulator.calls import STANDARD_MIX, parse_mix
from simulator.faults import FaultConfig
from tests.conftest import Simulator
from worker.settings import SIMULATOR_DEV_TOKEN

AUTH = {"Authorization": f"Bearer {SIMULATOR_DEV_TOKEN}"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def post(sim: Simulator, path: str, body: bytes, **headers: str) -> requests.Response:
    return requests.post(sim.url + path, data=body, headers={**AUTH, **FORM, **headers}, timeout=10)


@pytest.mark.parametrize(
    ("headers", "body", "status", "message"),
    [
        ({"Authorization": ""}, b"callid=x", 401, "missing or malformed token"),
        ({"Authorization": "Bearer " + "A" * 32}, b"callid=x", 401, "malformed"),
        ({"Authorization": "Bearer " + "e" * 32}, b"callid=x", 403, "unknown token"),
        ({"Content-Type": "application/json"}, b'{"callid":"x"}', 415, "Content-Type"),
        ({}, b"", 400, "missing parameter: callid"),
        ({}, b"\xff\xfe", 400, "UTF-8"),
    ],
)
def test_requests_breaking_the_protocol_are_refused(
    sim: Simulator, headers: dict[str, str], body: bytes, status: int, message: str
) -> None:
    response = post(sim, "api/v2.0/get-call-password-status/", body, **headers)
    assert response.status_code == status
    doc = response.json()
    assert doc["status"] == "error" and message in doc["data"]["message"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"dn=79991234567&timeout=5", "missing parameter: async"),
        (b"dn=+79991234567&timeout=5&async=1", "invalid parameter: dn"),
        (b"dn=79991234567&timeout=100&async=1", "invalid parameter: timeout"),
        (b"dn=79991234567&timeout=5&async=2", "invalid parameter: async"),
    ],
)
def test_start_parameters_are_validated(sim: Simulator, body: bytes, message: str) -> None:
    response = post(sim, "api/v2.0/start-call-password/", body)
    assert response.status_code == 400 and response.json()["data"]["message"] == message


def test_a_body_without_content_length_is_refused(sim: Simulator) -> None:
    host, port = sim.url.split("//")[1].rstrip("/").split(":")
    request = (
        "POST /api/v2.0/get-call-password-status/ HTTP/1.1\r\n"
        f"Host: {host}\r\nAuthorization: Bearer {SIMULATOR_DEV_TOKEN}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n"
        "Connection: close\r\n\r\n8\r\ncallid=x\r\n0\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(request.encode())
        answer = conn.recv(65536).decode()
    assert answer.startswith("HTTP/1.1 411")


def test_unknown_methods_are_404(sim: Simulator) -> None:
    response = post(sim, "api/v3.0/start-call-password/", b"dn=79991234567")
    assert response.status_code == 404 and response.json()["status"] == "error"


def test_callId_spelling_is_accepted(sim: Simulator) -> None:
    start = post(sim, "api/v2.0/start-call-password/", b"dn=79990005003&timeout=5&async=1").json()
    callid = start["data"]["callid"]
    doc = post(sim, "api/v2.0/get-call-password-status/", f"callId={callid}".encode()).json()
    assert doc["data"] == {"callid": callid, "result": "null"}


def test_starts_are_counted_per_number_and_per_request_id(sim: Simulator) -> None:
    request_id = f"count-{uuid.uuid4()}"
    for _ in range(2):
        post(
            sim,
            "api/v2.0/start-call-password/",
            b"dn=79990005001&timeout=5&async=1",
            **{"X-Request-Id": request_id},
        )
    assert sim.starts_for(request_id) == 2
    assert sim.starts_to("79990005001") >= 2


def test_the_deny_option_refuses_prefixes(stack: object) -> None:
    from worker.dev.stack import Stack

    assert isinstance(stack, Stack)
    proc, url = stack.start_simulator("--deny", "7351")
    try:
        response = requests.post(
            url + "api/v2.0/start-call-password/",
            data="dn=73510000001&timeout=5&async=1",
            headers={**AUTH, **FORM},
            timeout=10,
        )
        assert response.json()["data"] == {"message": "destination not allowed", "result": "error"}
    finally:
        proc.stop()


def test_mix_and_fault_settings_are_validated() -> None:
    assert parse_mix("NO_ANSWER@timeout:70,USER_BUSY@1-3:20,NORMAL_CLEARING@2-8:10") == STANDARD_MIX
    with pytest.raises(ValueError, match="mix entry"):
        parse_mix("NO_ANSWER:70")
    with pytest.raises(ValueError, match="probability"):
        FaultConfig().update({"drop_rate": 2})
    with pytest.raises(ValueError, match="unknown fault"):
        FaultConfig().update({"explode": 1})


def curl(token: str, url: str, body: str) -> dict[str, object]:
    """The original spec's curl line, with our URL, token and body."""
    out = subprocess.run(
        ["curl", "-s", "-H", f"Authorization: Bearer {token}", url, "-d", body, "-X", "POST"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return dict(json.loads(out.stdout))


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_original_curl_examples_run_against_the_simulator(sim: Simulator) -> None:
    """The two curl lines of the original spec, with the simulator's URL, token and a number."""
    base = sim.url.rstrip("/")
    started = curl(
        SIMULATOR_DEV_TOKEN,
        f"{base}/api/v2.0/start-call-password/",
        "dn=73510000001&timeout=5&async=1",
    )
    assert started["status"] == "success"
    data = started["data"]
    assert isinstance(data, dict) and data["result"] == "null"
    callid = data["callid"]
    status_url = f"{base}/api/v2.0/get-call-password-status/"
    # The status example as printed uses the placeholder token "blablabla": refused as malformed.
    assert curl("blablabla", status_url, f"callid={callid}")["status"] == "error"
    status = curl(SIMULATOR_DEV_TOKEN, status_url, f"callid={callid}")
    assert status["data"] == {"callid": callid, "result": "null"}


def test_an_outage_refuses_connections_then_the_calls_are_still_there(stack: object) -> None:
    from worker.dev.stack import Stack, wait_until

    assert isinstance(stack, Stack)
    proc, url = stack.start_simulator()
    try:
        start = requests.post(
            url + "api/v2.0/start-call-password/",
            data="dn=79990005003&timeout=5&async=1",
            headers={**AUTH, **FORM},
            timeout=10,
        ).json()
        assert requests.post(url + "_sim/outage", json={"seconds": 1.5}, timeout=5).ok

        def refused() -> bool:
            try:
                requests.get(url + "_sim/stats", timeout=1)
            except requests.ConnectionError:
                return True
            return False

        wait_until(refused, 5, "the outage")
        wait_until(lambda: requests.get(url + "_sim/stats", timeout=1).ok, 10, "the way back")
        status = requests.post(
            url + "api/v2.0/get-call-password-status/",
            data=f"callid={start['data']['callid']}",
            headers={**AUTH, **FORM},
            timeout=10,
        ).json()
        assert status["status"] == "success" and status["data"]["callid"] == start["data"]["callid"]
        assert Simulator(url).starts_to("79990005003") == 1
    finally:
        proc.stop()
