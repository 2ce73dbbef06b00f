"""TLS verification is on: the client talks to an https simulator only with its CA."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from tests.conftest import Simulator
from worker.api.client import CallPassClient
from worker.api.errors import ConnectError
from worker.dev.stack import Stack
from worker.settings import SIMULATOR_DEV_TOKEN, SecretStr, load_settings

TOKEN = SecretStr(SIMULATOR_DEV_TOKEN)


@pytest.fixture(scope="module")
def https_sim(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> tuple[Simulator, Path]:
    """An https simulator with a self-signed certificate for 127.0.0.1."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    _, url = stack.start_simulator("--tls-cert", str(cert), "--tls-key", str(key))
    assert url.startswith("https://")
    return Simulator(url), cert


def test_a_certificate_the_client_does_not_trust_is_refused_before_sending(
    https_sim: tuple[Simulator, Path],
) -> None:
    sim, _ = https_sim
    client = CallPassClient(sim.url, TOKEN, attempts=1)
    request_id = f"tls-{uuid.uuid4()}"
    with pytest.raises(ConnectError, match="certificate") as info:
        client.start_call_async("79990008001", 5, request_id=request_id)
    assert info.value.never_reached_server  # so a start may be retried: nothing was sent
    assert SIMULATOR_DEV_TOKEN not in str(info.value)


def test_with_its_ca_bundle_the_client_places_calls_over_https(
    https_sim: tuple[Simulator, Path],
) -> None:
    sim, cert = https_sim
    settings = load_settings({"CALLPASS_API_URL": sim.url, "CALLPASS_CA_BUNDLE": str(cert)})
    client = CallPassClient.from_settings(settings)
    started = client.start_call_async("79990008001", 5)
    assert client.get_status(started.callid).callid == started.callid
