"""Silent network partitions (chaos/netns.py): a cut drops packets both ways without refusing
anything, on one link only, and a heal lets the same connection carry on."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from chaos.netns import Partition
from worker.dev.stack import wait_until

ECHO_PORT = 7007
ECHO_SERVER = f"""
import socketserver
class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while data := self.request.recv(1024):
            self.request.sendall(data)
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer(("0.0.0.0", {ECHO_PORT}), Echo).serve_forever()
"""


def _can_connect(address: tuple[str, int]) -> bool:
    with socket.create_connection(address, timeout=1):
        return True


@pytest.fixture
def echo(partitions_allowed: None) -> Iterator[Partition]:
    with Partition(links=2) as partition:
        server = subprocess.Popen(partition.command([sys.executable, "-c", ECHO_SERVER]))
        try:
            address = (partition.address(0), ECHO_PORT)
            wait_until(lambda: _can_connect(address), 20, "echo server inside the namespace")
            yield partition
        finally:
            server.kill()
            server.wait(10)


def _echo(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    return sock.recv(len(data))


def test_a_cut_drops_silently_on_its_link_only_and_heal_resumes(echo: Partition) -> None:
    held = socket.create_connection((echo.address(0), ECHO_PORT), timeout=5)
    assert _echo(held, b"before") == b"before"
    echo.cut(0)
    held.settimeout(1.5)
    with pytest.raises(TimeoutError):  # no reset, no refusal: silence
        _echo(held, b"during")
    with pytest.raises(TimeoutError):
        socket.create_connection((echo.address(0), ECHO_PORT), timeout=1.5)
    other = socket.create_connection((echo.address(1), ECHO_PORT), timeout=5)
    assert _echo(other, b"other link") == b"other link"
    echo.heal(0)
    held.settimeout(30)  # the kernel retransmits "during" on its own schedule
    assert held.recv(6) == b"during"
    assert _echo(held, b"after") == b"after"
    held.close()
    other.close()


def test_closing_removes_the_namespace_and_its_links(partitions_allowed: None) -> None:
    with Partition(links=1) as partition:
        name = partition.name
        assert (
            name in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        )
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert (
        name not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    )
    assert f"{name}r0" not in links


def _break_inside(partition: Partition) -> None:
    with partition:
        partition.cut(1)
        raise RuntimeError("the row broke")


def test_a_failing_run_still_removes_the_namespace(partitions_allowed: None) -> None:
    partition = Partition(links=2)
    with pytest.raises(RuntimeError, match="the row broke"):
        _break_inside(partition)
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert partition.name not in namespaces
    assert f"{partition.name}r0" not in links and f"{partition.name}r1" not in links
