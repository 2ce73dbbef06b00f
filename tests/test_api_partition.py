"""The API client across a silent cut (chaos/netns.py): a start the client gave up on is
given up on the wire too, so it never reaches the API once the link returns."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest

from chaos.netns import Partition
from tests.conftest import Simulator
from worker.client import CallPassClient
from worker.devstack import Stack, wait_until
from worker.errors import OutcomeUnknownError
from worker.settings import SIMULATOR_DEV_TOKEN, SecretStr

TOKEN = SecretStr(SIMULATOR_DEV_TOKEN)
SIM_PORT = 18099  # the namespace is ours alone: any port is free in it


@pytest.fixture
def cut_sim(partitions_allowed: None, stack: Stack) -> Iterator[tuple[Partition, Simulator]]:
    """A simulator inside a namespace of its own, reached over one veth link."""
    with Partition(links=1) as partition:
        host = partition.address(0)
        args = ("--host", host, "--seed", "13")
        proc, url = stack.start_simulator(*args, port=SIM_PORT, prefix=partition.command([]))
        try:
            yield partition, Simulator(url)
        finally:
            partition.heal()
            proc.stop()


def _status_request(host: str, callid: str) -> bytes:
    """A raw status request: written during a cut on a connection left open, it shows when
    the kernel's retransmissions get through again (it cannot place a call)."""
    body = urlencode({"callid": callid}).encode()
    head = (
        f"POST /api/v2.0/get-call-password-status/ HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {SIMULATOR_DEV_TOKEN}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


def test_a_start_given_up_on_during_a_cut_never_reaches_the_api_later(
    cut_sim: tuple[Partition, Simulator],
) -> None:
    partition, sim = cut_sim
    client = CallPassClient(sim.url, TOKEN, connect_timeout_s=1.0, read_timeout_s=1.0, attempts=1)
    control_id, request_id = f"c-{uuid.uuid4()}", f"t-{uuid.uuid4()}"
    try:
        client.start_call_async("79990003001", 5)  # a pooled keep-alive connection now
        with socket.create_connection((partition.address(0), SIM_PORT), timeout=5) as control:
            partition.cut()
            sent = time.monotonic()
            control.sendall(_status_request(partition.address(0), control_id))
            with pytest.raises(OutcomeUnknownError):
                client.start_call_async("79990003001", 5, request_id=request_id)
            partition.heal()
            cut_for = time.monotonic() - sent
            # The control request, written during the cut, arrives by retransmission: the
            # path carries retransmitted data again.
            wait_until(
                lambda: sim.stats()["status_by_callid"].get(control_id), 60, "the control request"
            )
        # A retransmission of the start would come within its retransmission timer, which at
        # most doubled since it was sent: watch that long, and more.
        with pytest.raises(TimeoutError):
            wait_until(lambda: sim.starts_for(request_id), 2 * cut_for + 5, "the abandoned start")
        # The next start goes out on a fresh connection and is answered.
        assert client.start_call_async("79990003001", 5).callid
    finally:
        client.close()
