"""The API client across a silent cut (chaos/netns.py): a start the client gave up on, or
whose process died, is given up on the wire too, so it never reaches the API once the link
returns."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from chaos.netns import Partition
from tests.conftest import Simulator
from worker.api.client import CallPassClient
from worker.api.errors import OutcomeUnknownError
from worker.dev.stack import Stack, child_env, wait_until
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


class Control:
    """A raw status request written during the cut on a connection opened before it and left
    open: once it arrives, retransmitted data gets through again (it cannot place a call)."""

    def __init__(self, partition: Partition, sim: Simulator) -> None:
        self.host, self.sim = partition.address(0), sim
        self.callid = f"c-{uuid.uuid4()}"
        self.sock = socket.create_connection((self.host, SIM_PORT), timeout=5)

    def send(self) -> None:
        body = urlencode({"callid": self.callid}).encode()
        head = (
            f"POST /api/v2.0/get-call-password-status/ HTTP/1.1\r\nHost: {self.host}\r\n"
            f"Authorization: Bearer {SIMULATOR_DEV_TOKEN}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.sock.sendall(head + body)

    def wait_arrived(self) -> None:
        stats = self.sim.stats
        wait_until(lambda: stats()["status_by_callid"].get(self.callid), 60, "the control")
        self.sock.close()


def _never_arrives(sim: Simulator, request_id: str, cut_for: float) -> None:
    """A retransmission of the start would come within its retransmission timer, which at
    most doubled since it was sent: watch that long, and more."""
    with pytest.raises(TimeoutError):
        wait_until(lambda: sim.starts_for(request_id), 2 * cut_for + 5, "the abandoned start")


def _client(sim: Simulator, sync_read_margin_s: float = 15.0) -> CallPassClient:
    return CallPassClient(
        sim.url,
        TOKEN,
        connect_timeout_s=1.0,
        read_timeout_s=1.0,
        attempts=1,
        sync_read_margin_s=sync_read_margin_s,
    )


def test_a_start_given_up_on_during_a_cut_never_reaches_the_api_later(
    cut_sim: tuple[Partition, Simulator],
) -> None:
    partition, sim = cut_sim
    client, request_id = _client(sim), f"t-{uuid.uuid4()}"
    try:
        client.start_call_async("79990003001", 5)  # a pooled keep-alive connection now
        control = Control(partition, sim)
        partition.cut()
        sent = time.monotonic()
        control.send()
        with pytest.raises(OutcomeUnknownError):  # the read time-out
            client.start_call_async("79990003001", 5, request_id=request_id)
        partition.heal()
        cut_for = time.monotonic() - sent
        control.wait_arrived()
        _never_arrives(sim, request_id, cut_for)
        # The next start goes out on a fresh connection and is answered.
        assert client.start_call_async("79990003001", 5).callid
    finally:
        client.close()


def test_the_kernel_drops_a_start_unacknowledged_for_one_exchange_time(
    cut_sim: tuple[Partition, Simulator],
) -> None:
    """A synchronous start reads for the call's timeout + margin (42 s here); the kernel's
    TCP_USER_TIMEOUT (connect + read time-out: 2 s) ends it long before."""
    partition, sim = cut_sim
    client, request_id = _client(sim, sync_read_margin_s=40.0), f"t-{uuid.uuid4()}"
    try:
        client.start_call_async("79990003001", 5)
        control = Control(partition, sim)
        partition.cut()
        sent = time.monotonic()
        control.send()
        with pytest.raises(OutcomeUnknownError):
            client.start_call_sync("79990003001", 2, request_id=request_id)
        gave_up_after = time.monotonic() - sent
        partition.heal()
        assert gave_up_after < 20, f"the start was held {gave_up_after:.0f} s"
        control.wait_arrived()
        _never_arrives(sim, request_id, gave_up_after)
    finally:
        client.close()


DYING_CLIENT = """
import sys
from worker.api.client import CallPassClient
from worker.settings import SIMULATOR_DEV_TOKEN, SecretStr
client = CallPassClient(sys.argv[1], SecretStr(SIMULATOR_DEV_TOKEN), read_timeout_s=60)
client.start_call_async("79990003001", 5)
print("ready", flush=True)
sys.stdin.readline()
client.start_call_async("79990003001", 5, request_id=sys.argv[2])
"""


def _connections_holding_data(host: str, port: int) -> int:
    """Connections to ``host:port`` with bytes sent and not yet acknowledged (/proc/net/tcp)."""
    remote = f"{socket.inet_aton(host)[::-1].hex().upper()}:{port:04X}"  # the kernel's hex
    rows = (line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:])
    return sum(1 for f in rows if f[2] == remote and int(f[4].split(":")[0], 16) > 0)


def test_a_start_whose_worker_died_during_a_cut_never_reaches_the_api_later(
    cut_sim: tuple[Partition, Simulator],
) -> None:
    """SIGKILL while the start waits behind the cut: the process' sockets close as it dies,
    abortively, so the kernel does not go on sending the start."""
    partition, sim = cut_sim
    request_id = f"t-{uuid.uuid4()}"
    with subprocess.Popen(
        [sys.executable, "-c", DYING_CLIENT, sim.url, request_id],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=child_env({}),
        text=True,
    ) as proc:
        _kill_while_sending(proc, partition, sim, request_id)


def _kill_while_sending(
    proc: subprocess.Popen[str], partition: Partition, sim: Simulator, request_id: str
) -> None:
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "ready"
        control = Control(partition, sim)
        partition.cut()
        sent = time.monotonic()
        control.send()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        host = partition.address(0)
        # The control's bytes and the start's wait unacknowledged in the kernel.
        wait_until(lambda: _connections_holding_data(host, SIM_PORT) >= 2, 10, "the start sent")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        partition.heal()
        cut_for = time.monotonic() - sent
        control.wait_arrived()
        _never_arrives(sim, request_id, cut_for)
    finally:
        proc.kill()
        proc.wait(10)
