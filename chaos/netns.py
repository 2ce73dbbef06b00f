"""Silent network partitions on this machine: a network namespace of the test's own, reached
from the root namespace over veth pairs, whose links can be cut (every packet dropped, nothing
refused) and healed.

A server runs inside the namespace (``Partition.command``) bound to the namespace's end of one
or more links; clients in the root namespace reach it at ``Partition.address(link)``. Each link
is its own veth pair and /30 (under 10.231.0.0/16, used only inside these pairs), so one client
can be cut while another, on another link, is not.

A cut gives each end of the link a permanent neighbour entry with a wrong MAC: every frame
still leaves its sender (no local error, so TCP retransmits and keep-alive probes count as
sent) and is dropped by the receiving end as addressed to another host. That needs only
iproute2 and a kernel with network namespaces and veth, no netem, nftables or iptables.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import ipaddress
import itertools
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from worker.dev.stack import ensure_debian_program

__all__ = ["Partition", "partition_support"]

#: Only addresses in this block are ever given to a link, on both of its ends.
LINK_BLOCK = ipaddress.IPv4Network("10.231.0.0/16")
#: A MAC no interface has: frames sent to it are dropped by the receiving veth.
NOWHERE_MAC = "02:00:00:00:00:01"
LOCK_PATH = Path("/run/callpass-netns.lock")
NAME_RE = re.compile(r"^cp([0-9a-f]+)-(\d+)$")
MAX_LINKS = 8

_sequence = itertools.count()


def _ip(*args: str, check: bool = True) -> str:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale() -> None:
    """Remove namespaces (and their root-side links) left by runs whose process is gone."""
    for line in _ip("netns", "list").splitlines():
        name = line.split()[0] if line.strip() else ""
        match = NAME_RE.match(name)
        if match and not _pid_alive(int(match.group(1), 16)):
            _ip("netns", "del", name, check=False)
            for link in range(MAX_LINKS):
                _ip("link", "del", f"{name}r{link}", check=False)


def _used_networks() -> list[ipaddress.IPv4Network]:
    used = []
    for entry in json.loads(_ip("-j", "-4", "addr", "show") or "[]"):
        for info in entry.get("addr_info", []):
            cidr = f"{info['local']}/{info['prefixlen']}"
            used.append(ipaddress.IPv4Network(cidr, strict=False))
    return used


def _free_subnets(count: int, seed: int) -> list[ipaddress.IPv4Network]:
    """``count`` /30s of ``LINK_BLOCK`` that no root-namespace address overlaps."""
    subnets = list(LINK_BLOCK.subnets(new_prefix=30))
    used = _used_networks()
    chosen: list[ipaddress.IPv4Network] = []
    for offset in range(len(subnets)):
        net = subnets[(seed + offset) % len(subnets)]
        if not any(net.overlaps(u) for u in used):
            chosen.append(net)
            if len(chosen) == count:
                return chosen
    raise RuntimeError(f"no free /30 left in {LINK_BLOCK} for a partition link")


@contextlib.contextmanager
def _machine_lock() -> Iterator[None]:
    """Serialise link creation between processes (subnet choice, then the addresses)."""
    with open(LOCK_PATH, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass(frozen=True)
class Link:
    """One veth pair: ``root_dev`` (``host``) in the root namespace, ``ns_dev`` (``server``)
    inside the partition's namespace."""

    root_dev: str
    ns_dev: str
    host: str
    server: str
    root_mac: str
    ns_mac: str


class Partition:
    """A network namespace with ``links`` veth links to the root namespace; removed on exit.

    ``with Partition(links=2) as p:`` then start a server with ``p.command(argv)`` bound to
    ``p.address(0)`` (and ``p.address(1)``...), ``p.cut(1)`` drops every packet on link 1 both
    ways, ``p.heal(1)`` lets them through again; ``cut()``/``heal()`` with no link: all links.
    """

    def __init__(self, links: int = 1) -> None:
        if not 1 <= links <= MAX_LINKS:
            raise ValueError(f"links must be 1..{MAX_LINKS}, got {links}")
        self.name = f"cp{os.getpid():x}-{next(_sequence) % 1000}"  # + "r0": 15 characters at most
        self._count = links
        self.links: list[Link] = []
        self._cut: set[int] = set()
        self._created = False

    def __enter__(self) -> Partition:
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _create(self) -> None:
        with _machine_lock():
            _remove_stale()
            _ip("netns", "add", self.name)
            self._created = True
            _ip("-n", self.name, "link", "set", "lo", "up")
            for index, net in enumerate(_free_subnets(self._count, os.getpid())):
                self.links.append(self._add_link(index, net))

    def _add_link(self, index: int, net: ipaddress.IPv4Network) -> Link:
        root_dev, ns_dev = f"{self.name}r{index}", f"{self.name}n{index}"
        host, server = (str(a) for a in net.hosts())
        _ip("link", "add", root_dev, "type", "veth", "peer", "name", ns_dev, "netns", self.name)
        _ip("addr", "add", f"{host}/30", "dev", root_dev)
        _ip("link", "set", root_dev, "up")
        _ip("-n", self.name, "addr", "add", f"{server}/30", "dev", ns_dev)
        _ip("-n", self.name, "link", "set", ns_dev, "up")
        root_mac = json.loads(_ip("-j", "link", "show", root_dev))[0]["address"]
        ns_mac = json.loads(_ip("-n", self.name, "-j", "link", "show", ns_dev))[0]["address"]
        link = Link(root_dev, ns_dev, host, server, root_mac, ns_mac)
        self._set_neighbours(link, root_mac=root_mac, ns_mac=ns_mac)  # no ARP, ever
        return link

    def _set_neighbours(self, link: Link, root_mac: str, ns_mac: str) -> None:
        _ip("neigh", "replace", link.server, "lladdr", ns_mac, "dev", link.root_dev,
            "nud", "permanent")  # fmt: skip
        _ip("-n", self.name, "neigh", "replace", link.host, "lladdr", root_mac,
            "dev", link.ns_dev, "nud", "permanent")  # fmt: skip

    def address(self, link: int = 0) -> str:
        """The server's address on ``link`` (inside the namespace): clients connect here."""
        return self.links[link].server

    def host_address(self, link: int = 0) -> str:
        """The root namespace's address on ``link``: clients' packets come from here."""
        return self.links[link].host

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside the namespace (``ip netns exec`` execs it: same pid)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def _chosen(self, links: tuple[int, ...]) -> tuple[int, ...]:
        return links or tuple(range(len(self.links)))

    def cut(self, *links: int) -> None:
        """Drop every packet on ``links`` (all links when none is named), both ways, silently."""
        for index in self._chosen(links):
            self._set_neighbours(self.links[index], root_mac=NOWHERE_MAC, ns_mac=NOWHERE_MAC)
            self._cut.add(index)

    def heal(self, *links: int) -> None:
        """Let packets through on ``links`` (all links when none is named) again."""
        for index in self._chosen(links):
            link = self.links[index]
            self._set_neighbours(link, root_mac=link.root_mac, ns_mac=link.ns_mac)
            self._cut.discard(index)

    def is_cut(self, link: int = 0) -> bool:
        return link in self._cut

    def close(self) -> None:
        """Kill what still runs inside (only this partition's own processes), then remove the
        namespace and its links. Safe to call twice."""
        if not self._created:
            return
        for pid in _ip("netns", "pids", self.name, check=False).split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), 9)
        _ip("netns", "del", self.name, check=False)
        for index in range(self._count):
            _ip("link", "del", f"{self.name}r{index}", check=False)
        self._created = False


@functools.cache
def partition_support() -> str | None:
    """``None`` where this machine can build partitions; otherwise why not, in one sentence."""
    if os.geteuid() != 0:
        return "network partitions need root (network namespaces and veth pairs)"
    if shutil.which("ip") is None and ensure_debian_program("ip", "iproute2") is None:
        return "network partitions need the ip command (Debian package iproute2)"
    try:
        with Partition(links=1) as probe:
            probe.cut()
            probe.heal()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        return f"this kernel or container does not allow network namespaces with veth: {exc}"
    return None
