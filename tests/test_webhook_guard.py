"""The SSRF guard for webhook deliveries (worker/webhooks/destinations.py and guard.py).

Static URL rules and address rules are pure functions; the session is exercised against real
HTTP and HTTPS servers on 127.0.0.1, and "refused" means the server saw no request at all.
"""

from __future__ import annotations

import ipaddress
import ssl
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from worker.webhooks.destinations import DestinationPolicy, DestinationRefused
from worker.webhooks.guard import guarded_session, refusal_of

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
TIMEOUT = 5


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1 that counts the requests it got, by path."""

    port: int
    hits: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.hits.values())


def _serve(ssl_context: ssl.SSLContext | None = None) -> Iterator[Receiver]:
    receiver = Receiver(port=0)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            with lock:
                receiver.hits[self.path] += 1
            if self.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", "/ok")
            else:
                self.send_response(200 if self.path == "/ok" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if ssl_context is not None:
        server.socket = ssl_context.wrap_socket(server.socket, server_side=True)
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from _serve()


def post(policy: DestinationPolicy, url: str) -> requests.Response:
    with guarded_session(policy) as session:
        response = session.post(url, json={"ok": True}, timeout=TIMEOUT, allow_redirects=False)
        response.close()
        return response


def refused_delivery(policy: DestinationPolicy, url: str) -> DestinationRefused:
    """Deliver to ``url`` expecting a refusal; return it (the documented shape)."""
    with pytest.raises(requests.exceptions.ConnectionError) as info:
        post(policy, url)
    refusal = refusal_of(info.value)
    assert refusal is not None, f"not a refusal: {info.value!r}"
    return refusal


def refused_url(policy: DestinationPolicy, url: str) -> str:
    with pytest.raises(DestinationRefused) as info:
        policy.check_url(url)
    return str(info.value)


# --- deliveries to a real server ---------------------------------------------------------------


def test_default_policy_refuses_plain_http_to_loopback(receiver: Receiver) -> None:
    url = f"http://127.0.0.1:{receiver.port}/ok"
    assert "https" in refused_url(DestinationPolicy(), url)
    assert "https" in str(refused_delivery(DestinationPolicy(), url))
    assert receiver.total == 0


def test_http_host_allows_the_scheme_not_the_loopback_address(receiver: Receiver) -> None:
    policy = DestinationPolicy(http_hosts=("127.0.0.1",))
    url = f"http://127.0.0.1:{receiver.port}/ok"
    # http is allowed now; the IP literal itself is what check_url refuses (statically).
    assert "loopback" in refused_url(policy, url)
    assert "loopback" in str(refused_delivery(policy, url))
    assert receiver.total == 0


def test_localhost_is_refused_at_connect_time(receiver: Receiver) -> None:
    policy = DestinationPolicy(http_hosts=("localhost",))
    url = f"http://localhost:{receiver.port}/ok"
    policy.check_url(url)  # a name: nothing to refuse without DNS
    refusal = refused_delivery(policy, url)
    assert "loopback" in str(refusal)
    assert receiver.total == 0


def test_allowed_network_lets_the_delivery_through(receiver: Receiver) -> None:
    policy = DestinationPolicy(http_hosts=("127.0.0.1", "localhost"), allowed_networks=LOOPBACK)
    assert post(policy, f"http://127.0.0.1:{receiver.port}/ok").status_code == 200
    assert receiver.hits == Counter({"/ok": 1})
    assert post(policy, f"http://localhost:{receiver.port}/ok").status_code == 200
    assert receiver.hits == Counter({"/ok": 2})


def test_redirects_are_not_followed(receiver: Receiver) -> None:
    policy = DestinationPolicy(http_hosts=("127.0.0.1",), allowed_networks=LOOPBACK)
    url = f"http://127.0.0.1:{receiver.port}/redirect"
    response = post(policy, url)
    assert response.status_code == 302
    assert response.headers["Location"] == "/ok"
    # Not even for a caller who forgets allow_redirects=False.
    with guarded_session(policy) as session:
        response = session.post(url, timeout=TIMEOUT)
        response.close()
    assert response.status_code == 302
    assert response.history == []
    assert receiver.hits == Counter({"/redirect": 2})


def test_session_applies_check_url_to_every_request(receiver: Receiver) -> None:
    policy = DestinationPolicy(
        http_hosts=("127.0.0.1",), allowed_networks=LOOPBACK, allowed_hosts=("hooks.example.com",)
    )
    assert "allow-list" in str(refused_delivery(policy, f"http://127.0.0.1:{receiver.port}/ok"))
    assert "https" in str(refused_delivery(policy, "ftp://hooks.example.com/x"))
    assert receiver.total == 0


def test_explicit_proxy_is_refused(receiver: Receiver) -> None:
    policy = DestinationPolicy(http_hosts=("127.0.0.1",), allowed_networks=LOOPBACK)
    proxy = f"http://127.0.0.1:{receiver.port}"
    with guarded_session(policy) as session:
        assert not session.trust_env
        with pytest.raises(requests.exceptions.ConnectionError) as info:
            session.post("http://127.0.0.1:1/ok", proxies={"http": proxy}, timeout=TIMEOUT)
    assert "prox" in str(refusal_of(info.value))
    assert receiver.total == 0


def test_unresolvable_name_is_a_connection_error_not_a_refusal() -> None:
    with pytest.raises(requests.exceptions.ConnectionError) as info:
        post(DestinationPolicy(), "https://nonexistent.invalid/x")
    assert refusal_of(info.value) is None


def test_refusal_never_quotes_query_or_password(receiver: Receiver) -> None:
    secret, token = "hunter2secret", "tok3nvalue"
    policy = DestinationPolicy(http_hosts=("localhost",))
    urls = [
        f"https://user:{secret}@hooks.example.com/x?token={token}",
        f"http://evil.com/x?token={token}",
        f"https://169.254.169.254/latest?token={token}",
        f"ftp://user:{secret}@example.com/?token={token}",
    ]
    messages = [refused_url(policy, url) for url in urls]
    messages += [str(refused_delivery(policy, url)) for url in urls]
    connect_time = refused_delivery(policy, f"http://localhost:{receiver.port}/x?token={token}")
    messages.append(str(connect_time))
    for message in messages:
        assert secret not in message
        assert token not in message
        assert "?" not in message
    assert receiver.total == 0


# --- static URL rules --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://hooks.example.com/x", True),
        ("https://HOOKS.Example.COM/x", True),
        ("https://hooks.example.com./x", True),
        ("https://a.example.org/x", True),
        ("https://b.a.example.org/x", True),
        ("https://example.org/x", False),
        ("https://evil.com/x", False),
        ("https://hooks.example.com.evil.com/x", False),
        ("https://evilhooks.example.com/x", False),
        ("https://notexample.org/x", False),
    ],
)
def test_allow_list(url: str, allowed: bool) -> None:
    policy = DestinationPolicy(allowed_hosts=("hooks.example.com", "*.example.org"))
    if allowed:
        policy.check_url(url)
    else:
        assert "allow-list" in refused_url(policy, url)


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("ftp://example.com/x", "https"),
        ("file:///etc/passwd", "https"),
        ("https:///x", "no host"),
        ("https://", "no host"),
        ("https://user:pass@example.com/x", "credentials"),
        ("https://user@example.com/x", "credentials"),
        ("http://example.com/x", "https"),
        ("https://example.com:99999/x", "cannot be parsed"),
        ("https://[::1/x", "cannot be parsed"),
        ("https://169.254.169.254/latest/meta-data/", "link-local"),
        ("https://[::1]/x", "loopback"),
        ("https://[::ffff:127.0.0.1]/x", "loopback"),
        ("https://0.0.0.0/x", "unspecified"),
        ("https://10.1.2.3/x", "private"),
        ("https://100.64.0.1/x", "not public"),
        ("https://[fe80::1]/x", "link-local"),
        ("https://127.1/x", "loopback"),
        ("https://2130706433/x", "loopback"),
        ("https://0x7f000001/x", "loopback"),
    ],
)
def test_check_url_refuses(url: str, rule: str) -> None:
    assert rule in refused_url(DestinationPolicy(http_hosts=("localhost",)), url)


@pytest.mark.parametrize(
    "url",
    [
        "https://93.184.215.14/x",
        "https://[2606:4700::1]/x",
        "https://hooks.example.com:8443/x?a=1",
        "http://localhost/x",
        "http://LOCALHOST:8080/x",
    ],
)
def test_check_url_accepts(url: str) -> None:
    DestinationPolicy(http_hosts=("localhost",)).check_url(url)


def test_http_hosts_relax_only_the_scheme() -> None:
    policy = DestinationPolicy(allowed_hosts=("hooks.example.com",), http_hosts=("*.example.org",))
    policy.check_url("https://hooks.example.com/x")
    assert "https" in refused_url(policy, "http://hooks.example.com/x")
    assert "allow-list" in refused_url(policy, "http://a.example.org/x")


# --- address rules -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "private"),
        ("100.64.0.1", "not public"),
        ("100.127.255.255", "not public"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("240.0.0.1", "private"),
        ("255.255.255.255", "private"),
        ("192.0.0.1", "private"),
        ("198.18.0.1", "private"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("fe80::1", "link-local"),
        ("fe80::1%1", "link-local"),
        ("fec0::1", "site-local"),
        ("ff02::1", "multicast"),
        ("ff0e::1", "multicast"),
        ("2001:db8::1", "private"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "link-local"),
        ("::ffff:10.0.0.1", "private"),
        ("::127.0.0.1", "reserved"),  # IPv4-compatible
        ("::8.8.8.8", "reserved"),  # deprecated form: refused whole
        ("64:ff9b::7f00:1", "loopback"),  # NAT64 to 127.0.0.1
        ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 to 169.254.169.254
        ("64:ff9b:1::a00:1", "reserved"),  # local-use NAT64
        ("2002:7f00:1::1", "loopback"),  # 6to4 of 127.0.0.1
        ("2002:a00:1::1", "private"),  # 6to4 of 10.0.0.1
        ("2001::1", "private"),  # Teredo
        ("not-an-ip", "not an IP address"),
    ],
)
def test_check_address_refuses(address: str, kind: str) -> None:
    with pytest.raises(DestinationRefused) as info:
        DestinationPolicy().check_address(address)
    assert kind in str(info.value)


@pytest.mark.parametrize(
    "address",
    [
        "93.184.215.14",
        "8.8.8.8",
        "1.1.1.1",
        "2606:4700::1111",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",
        "2002:808:808::1",
    ],
)
def test_check_address_allows_public(address: str) -> None:
    DestinationPolicy().check_address(address)


@pytest.mark.parametrize(
    ("networks", "address", "allowed"),
    [
        (("10.0.0.0/8",), "10.1.2.3", True),
        (("10.0.0.0/8",), "11.1.2.3", True),  # public anyway
        (("10.0.0.0/8",), "172.16.0.1", False),
        (("10.0.0.0/8",), "::ffff:10.1.2.3", True),  # the same IPv4 address, mapped
        (("127.0.0.0/8",), "127.0.0.1", True),
        (("127.0.0.0/8",), "::1", False),
        (("::1/128",), "::1", True),
        (("fd00::/8",), "fd00::5", True),
        (("fd00::/8",), "10.1.2.3", False),
    ],
)
def test_allowed_networks(networks: tuple[str, ...], address: str, allowed: bool) -> None:
    policy = DestinationPolicy(allowed_networks=tuple(ipaddress.ip_network(n) for n in networks))
    if allowed:
        policy.check_address(address)
    else:
        with pytest.raises(DestinationRefused):
            policy.check_address(address)


def test_allowed_networks_accept_strings() -> None:
    policy = DestinationPolicy(allowed_networks=("10.0.0.0/8",))  # type: ignore[arg-type]
    assert policy.allowed_networks == (ipaddress.ip_network("10.0.0.0/8"),)
    policy.check_address("10.1.2.3")
    with pytest.raises(ValueError, match="does not appear to be"):
        DestinationPolicy(allowed_networks=("10.0.0.0/33",))  # type: ignore[arg-type]


def test_refusal_of() -> None:
    refused = DestinationRefused("the rule")
    assert str(refused) == "the rule" == refused.rule
    assert refusal_of(refused) is refused
    assert refusal_of(ValueError("x")) is None
    wrapped = OSError("wrapped")
    wrapped.__cause__ = refused
    assert refusal_of(requests.exceptions.ConnectionError(wrapped)) is refused


# --- TLS ---------------------------------------------------------------------------------------


@pytest.fixture
def tls_receiver(tmp_path: Path) -> Iterator[tuple[Receiver, Path]]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    try:
        subprocess.run(
            [
                *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
                *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"),
                *("-addext", "subjectAltName=DNS:localhost"),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"cannot make a self-signed certificate with openssl: {e}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    for receiver in _serve(context):
        yield receiver, cert


def test_tls_verifies_the_url_host_name(tls_receiver: tuple[Receiver, Path]) -> None:
    receiver, cert = tls_receiver
    policy = DestinationPolicy(allowed_networks=LOOPBACK)
    with guarded_session(policy) as session:
        session.verify = str(cert)
        # The socket goes to the checked 127.0.0.1; SNI and the certificate check use "localhost".
        response = session.get(f"https://localhost:{receiver.port}/ok", timeout=TIMEOUT)
        response.close()
        assert response.status_code == 200
        # The same server by IP: the certificate does not name 127.0.0.1, so TLS refuses.
        with pytest.raises(requests.exceptions.SSLError):
            session.get(f"https://127.0.0.1:{receiver.port}/ok", timeout=TIMEOUT)
    assert receiver.hits == Counter({"/ok": 1})
    # Verification is on by default: without the test certificate the delivery fails.
    with pytest.raises(requests.exceptions.SSLError):
        post(policy, f"https://localhost:{receiver.port}/ok")
    assert receiver.hits == Counter({"/ok": 1})
