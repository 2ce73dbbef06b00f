"""The contract (docs/callpass-api.md) written as tests against a base URL and a token.

By default they run against the suite's simulator. ``make contract`` runs them against the
real service with ``--contract-real`` and CALLPASS_CONTRACT_URL, CALLPASS_CONTRACT_TOKEN and
CALLPASS_CONTRACT_DN (a number you own: every start places a real call to it).
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from tests.conftest import Simulator
from worker.settings import SIMULATOR_DEV_TOKEN

pytestmark = pytest.mark.contract

CAUSE = re.compile(r"[A-Z][A-Z0-9_]*")
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@dataclass(frozen=True)
class Target:
    url: str
    token: str
    dn: str  # a number that may be called
    real: bool

    def post(self, path: str, body: str, token: str | None = None, **kw: Any) -> requests.Response:
        headers = {
            **FORM,
            "Authorization": f"Bearer {token or self.token}",
            **kw.pop("headers", {}),
        }
        return requests.post(
            self.url + path, data=body.encode(), headers=headers, timeout=120, **kw
        )


@pytest.fixture(scope="module")
def target(request: pytest.FixtureRequest) -> Target:
    if request.config.getoption("--contract-real"):
        missing = [
            v
            for v in ("CALLPASS_CONTRACT_URL", "CALLPASS_CONTRACT_TOKEN", "CALLPASS_CONTRACT_DN")
            if not os.environ.get(v)
        ]
        if missing:
            pytest.fail(f"--contract-real needs {', '.join(missing)}")
        url = os.environ["CALLPASS_CONTRACT_URL"]
        return Target(
            url if url.endswith("/") else url + "/",
            os.environ["CALLPASS_CONTRACT_TOKEN"],
            os.environ["CALLPASS_CONTRACT_DN"],
            real=True,
        )
    sim: Simulator = request.getfixturevalue("sim")
    return Target(sim.url, SIMULATOR_DEV_TOKEN, "79990004003", real=False)


def envelope(response: requests.Response) -> dict[str, Any]:
    assert "application/json" in response.headers.get("Content-Type", "")
    doc = json.loads(response.content.decode("utf-8"))  # always UTF-8 JSON
    assert doc["status"] in ("success", "error")
    return dict(doc)


@pytest.fixture(scope="module")
def started(target: Target) -> dict[str, Any]:
    """One async start shared by the statements about it (one real call at most)."""
    response = target.post("api/v2.0/start-call-password/", f"dn={target.dn}&timeout=5&async=1")
    doc = envelope(response)
    assert doc["status"] == "success", doc
    return dict(doc["data"])


def test_async_start_answers_at_once_with_callid_pin_and_null(started: dict[str, Any]) -> None:
    assert isinstance(started["callid"], str) and started["callid"]
    assert re.fullmatch(r"[0-9]{4,6}", started["pin"])
    assert started.get("result") in ("null", None)


def test_status_is_null_or_a_cause_and_final_after_timeout(
    target: Target, started: dict[str, Any]
) -> None:
    body = f"callid={started['callid']}"
    deadline = time.monotonic() + 5 + 30  # timeout + a generous grace
    result: object = None
    while time.monotonic() < deadline:
        doc = envelope(target.post("api/v2.0/get-call-password-status/", body))
        assert doc["status"] == "success"
        result = doc["data"].get("result")
        assert result in ("null", None) or CAUSE.fullmatch(str(result))
        if result not in ("null", None):
            break
        time.sleep(1)
    assert result not in ("null", None), "no final status within timeout + 30 s"


def test_status_path_works_without_the_trailing_slash(
    target: Target, started: dict[str, Any]
) -> None:
    doc = envelope(target.post("api/v2.0/get-call-password-status", f"callid={started['callid']}"))
    assert doc["status"] == "success" and doc["data"]["callid"] == started["callid"]


def test_an_unknown_callid_is_a_method_level_error(target: Target) -> None:
    doc = envelope(target.post("api/v2.0/get-call-password-status/", f"callid={uuid.uuid4()}"))
    assert doc == {"data": {"message": "can't find callid", "result": "error"}, "status": "success"}


def test_a_wrong_token_is_refused(target: Target) -> None:
    response = target.post("api/v2.0/get-call-password-status/", "callid=x", token="e" * 32)
    assert envelope(response)["status"] == "error"
    assert response.status_code in (401, 403)


def test_a_missing_parameter_is_refused(target: Target) -> None:
    response = target.post("api/v2.0/start-call-password/", "timeout=5&async=1")
    assert envelope(response)["status"] == "error"
    assert response.status_code == 400


def test_only_post_is_accepted(target: Target) -> None:
    response = requests.get(
        target.url + "api/v2.0/get-call-password-status/",
        headers={"Authorization": f"Bearer {target.token}"},
        timeout=30,
    )
    assert response.status_code == 405
    assert envelope(response)["status"] == "error"


def test_v1_answers_once_the_outcome_is_known(target: Target) -> None:
    if target.real:
        pytest.skip("a second real call; run it by hand if you need it")
    started = time.monotonic()
    doc = envelope(target.post("api/v1.0/start-call-password/", f"dn={target.dn}&timeout=2"))
    assert doc["status"] == "success"
    assert CAUSE.fullmatch(doc["data"]["result"])
    assert time.monotonic() - started >= 1.5  # it waited for the call to end
