"""A webhook receiver on loopback for tests and chaos: verifies, records, misbehaves on request.

What it answers depends on the path, so one receiver serves many cases at once:

* ``/ok/...``: 200.
* ``/status/<code>``: that status, every time.
* ``/flaky/<n>/<code>``: ``<code>`` to the first ``n`` attempts of each ``webhook-id``, then 200;
  a query ``?retry_after=<s>`` adds that ``Retry-After`` header to the failures.
* ``/redirect``: 302 to ``/ok/redirected``.
* ``/switch/<name>``: 503 while the switch is off, 200 once :meth:`Receiver.switch_on` is called.
* ``/trickle/<n>``: to the first ``n`` attempts of each ``webhook-id``, a 200 whose status line
  and headers come one byte every ``TRICKLE_EVERY_S`` (a receiver no per-read time-out cuts
  off; it gives up after ``TRICKLE_MAX_S``), then a prompt 200. The attempt is recorded when
  the sender hangs up, with ``ended_at`` and status 0 if the answer was not finished.

Every request is recorded with its verification result (:func:`verify_delivery`).
"""

from __future__ import annotations

import select
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from worker.webhooks.signature import WebhookVerificationError, verify_delivery

__all__ = ["TRICKLE_EVERY_S", "Delivery", "Receiver"]

#: A trickling answer's pace, and how long it goes on at most if the sender never hangs up.
TRICKLE_EVERY_S = 0.6
TRICKLE_MAX_S = 90.0


@dataclass(frozen=True)
class Delivery:
    path: str
    webhook_id: str
    headers: dict[str, str]
    body: bytes
    received_at: float
    status: int
    #: The parsed body when the signature verified, else None.
    event: dict[str, Any] | None
    error: str
    #: When the exchange ended (the answer sent, or the sender gone); 0 if not recorded.
    ended_at: float = 0.0


class Receiver:
    def __init__(self, secrets: list[str], port: int = 0) -> None:
        self.secrets = secrets
        self._lock = threading.Lock()
        self.deliveries: list[Delivery] = []
        self._attempts: Counter[tuple[str, str]] = Counter()
        self._switches: set[str] = set()
        self._server: ThreadingHTTPServer | None = None
        #: When each trickling answer under way began (by a token), and the most at once.
        self._trickles: dict[object, float] = {}
        self.most_trickling = 0
        self._thread: threading.Thread | None = None
        self.port = port
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Listen (again, on the same port after :meth:`stop`)."""
        server = _Server(("127.0.0.1", self.port), _handler(self))
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop listening: deliveries get "connection refused" until :meth:`start`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def switch_on(self, name: str) -> None:
        with self._lock:
            self._switches.add(name)

    def received(self, path_prefix: str = "") -> list[Delivery]:
        with self._lock:
            return [d for d in self.deliveries if d.path.startswith(path_prefix)]

    def accepted(self, path_prefix: str = "") -> dict[str, Delivery]:
        """The first verified 2xx delivery of each webhook-id."""
        firsts: dict[str, Delivery] = {}
        for d in self.received(path_prefix):
            if 200 <= d.status < 300 and d.event is not None:
                firsts.setdefault(d.webhook_id, d)
        return firsts

    def answer(self, path: str, webhook_id: str) -> tuple[int, dict[str, str]]:
        parts = urlsplit(path)
        segments = [s for s in parts.path.split("/") if s]
        query = parse_qs(parts.query)
        with self._lock:
            self._attempts[(parts.path, webhook_id)] += 1
            attempt = self._attempts[(parts.path, webhook_id)]
            switched_on = len(segments) > 1 and segments[1] in self._switches
        kind = segments[0] if segments else ""
        if kind == "status" and len(segments) > 1:
            return int(segments[1]), {}
        if kind == "flaky" and len(segments) > 2 and attempt <= int(segments[1]):
            headers = {"Retry-After": query["retry_after"][0]} if "retry_after" in query else {}
            return int(segments[2]), headers
        if kind == "redirect":
            return 302, {"Location": "/ok/redirected"}
        if kind == "switch" and not switched_on:
            return 503, {}
        if kind == "trickle" and len(segments) > 1 and attempt <= int(segments[1]):
            return 200, {TRICKLE: "1"}
        return 200, {}

    @property
    def trickling(self) -> int:
        """Trickling answers under way now."""
        with self._lock:
            return len(self._trickles)

    def trickling_since(self) -> list[float]:
        """When each trickling answer still under way began (not yet in :meth:`received`)."""
        with self._lock:
            return list(self._trickles.values())

    def trickle_began(self, token: object, at: float) -> None:
        with self._lock:
            self._trickles[token] = at
            self.most_trickling = max(self.most_trickling, len(self._trickles))

    def trickle_ended(self, token: object) -> None:
        with self._lock:
            self._trickles.pop(token, None)

    def record(self, delivery: Delivery) -> None:
        with self._lock:
            self.deliveries.append(delivery)


#: Marks an answer to be trickled (never sent as a header itself).
TRICKLE = "x-callpass-trickle"


class _Server(ThreadingHTTPServer):
    allow_reuse_address = True  # listen on the same port again right after stop()
    daemon_threads = True


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            webhook_id = headers.get("webhook-id", "")
            status, extra = receiver.answer(self.path, webhook_id)
            try:
                event: dict[str, Any] | None = verify_delivery(headers, body, receiver.secrets)
                error = ""
            except (WebhookVerificationError, ValueError) as exc:
                event, error = None, str(exc)
            received_at = time.time()
            trickle = bool(extra.pop(TRICKLE, None))
            if trickle:  # recorded once the sender hangs up or the answer is out
                status = self._trickle(status, received_at)
            receiver.record(
                Delivery(
                    self.path, webhook_id, headers, body, received_at, status, event, error,
                    ended_at=time.time(),
                )
            )  # fmt: skip
            if trickle:
                return
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("content-length", "0")
            self.end_headers()

        def _trickle(self, status: int, began: float) -> int:
            """Send the answer a byte at a time; ``status``, or 0 if the sender hung up."""
            pad = "x" * int(TRICKLE_MAX_S / TRICKLE_EVERY_S)
            answer = f"HTTP/1.1 {status} OK\r\nx-pad: {pad}\r\ncontent-length: 0\r\n\r\n"
            receiver.trickle_began(self, began)
            try:
                for byte in answer.encode():
                    self.wfile.write(bytes([byte]))
                    # The sender sends nothing more: readable means it hung up (at once,
                    # rather than at the next write).
                    if select.select([self.connection], [], [], TRICKLE_EVERY_S)[0]:
                        return 0
            except OSError:  # the sender gave up: what it must do at its deadline
                return 0
            finally:
                receiver.trickle_ended(self)
            return status

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler
