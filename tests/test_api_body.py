"""Answers larger than CALLPASS_API_MAX_BODY_BYTES are malformed: transient for a status,
``unknown`` for a start; the client never reads them whole. A tiny local server over real
HTTP sends them (valid envelopes, padded: read whole, they would parse)."""

from __future__ import annotations

import contextlib
import io
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from worker.api.client import CallPassClient
from worker.api.errors import DeadlinePassedError, MalformedResponseError, OutcomeUnknownError
from worker.api.http import read_capped
from worker.settings import SIMULATOR_DEV_TOKEN, SecretStr, SettingsError, load_settings

TOKEN = SecretStr(SIMULATOR_DEV_TOKEN)
CAP = 65_536  # the default CALLPASS_API_MAX_BODY_BYTES
HUGE = 4 * 1024 * 1024


class PaddedApi(ThreadingHTTPServer):
    """Answers every POST with a success envelope padded to ``size`` bytes, declared
    (Content-Length) or chunked; ``size`` 0 answers a normal small envelope."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.size = 0
        self.chunked = False
        self.posts: Counter[str] = Counter()

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client resetting its connections (as ours does on close) is no error here

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"


class _Handler(BaseHTTPRequestHandler):
    server: PaddedApi
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.posts[self.path] += 1
        data = {"callid": str(uuid.uuid4()), "pin": "1234", "result": "NORMAL_CLEARING"}
        small = json.dumps({"status": "success", "data": data}).encode()
        if not self.server.size:
            self._send(small, chunked=False)
            return
        pad = "x" * (self.server.size - len(small))
        body = json.dumps({"status": "success", "data": {**data, "pad": pad}}).encode()
        with contextlib.suppress(OSError):  # the client hung up part-way: as it should
            self._send(body, chunked=self.server.chunked)

    def _send(self, body: bytes, chunked: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if not chunked:
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for start in range(0, len(body), 16384):
            piece = body[start : start + 16384]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        self.wfile.write(b"0\r\n\r\n")


@pytest.fixture
def padded() -> Iterator[PaddedApi]:
    server = PaddedApi()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("chunked", [False, True], ids=["declared", "chunked"])
def test_an_oversized_status_answer_is_transient_and_retried(
    padded: PaddedApi, chunked: bool
) -> None:
    padded.size, padded.chunked = HUGE, chunked
    client = CallPassClient(padded.url, TOKEN, attempts=3)
    try:
        with pytest.raises(MalformedResponseError, match="larger than"):
            client.get_status(str(uuid.uuid4()))
        assert padded.posts["/api/v2.0/get-call-password-status/"] == 3  # retried: transient
        padded.size = 0  # the connections read part-way were not reused: the next one parses
        assert client.get_status(str(uuid.uuid4())).raw_result == "NORMAL_CLEARING"
    finally:
        client.close()


@pytest.mark.parametrize("chunked", [False, True], ids=["declared", "chunked"])
def test_an_oversized_start_answer_is_an_unknown_outcome_sent_once(
    padded: PaddedApi, chunked: bool
) -> None:
    padded.size, padded.chunked = HUGE, chunked
    client = CallPassClient(padded.url, TOKEN, attempts=3)
    try:
        with pytest.raises(OutcomeUnknownError, match="may have reached"):
            client.start_call_async("79990003001", 5, request_id=f"t-{uuid.uuid4()}")
        assert padded.posts["/api/v2.0/start-call-password/"] == 1
    finally:
        client.close()


def test_an_answer_within_the_cap_is_read_whole(padded: PaddedApi) -> None:
    padded.size, padded.chunked = CAP - 100, True
    client = CallPassClient(padded.url, TOKEN, attempts=1)
    try:
        assert client.start_call_async("79990003001", 5).pin == "1234"
    finally:
        client.close()


def test_the_cap_is_a_setting_with_a_floor() -> None:
    assert load_settings({"CALLPASS_API_MAX_BODY_BYTES": "2048"}).api_max_body_bytes == 2048
    with pytest.raises(SettingsError, match="CALLPASS_API_MAX_BODY_BYTES"):
        load_settings({"CALLPASS_API_MAX_BODY_BYTES": "10"})


def test_no_start_is_written_after_its_send_by(padded: PaddedApi) -> None:
    client = CallPassClient(padded.url, TOKEN, attempts=3)
    try:
        with pytest.raises(DeadlinePassedError) as info:
            client.start_call_async("79990003001", 5, send_by=time.time() - 0.1)
        assert info.value.never_reached_server
        assert client.start_call_async("79990003001", 5, send_by=time.time() + 30).pin == "1234"
        assert padded.posts["/api/v2.0/start-call-password/"] == 1  # the late one never left
    finally:
        client.close()


def test_a_content_length_of_non_ascii_digits_is_not_trusted_nor_fatal() -> None:
    """'²' is a digit to str.isdigit() but not to int(): the length is ignored, the body read."""
    response = requests.Response()
    response.status_code = 200
    response.headers["Content-Length"] = "\xb2"
    response.raw = io.BytesIO(b'{"ok": true}')
    assert read_capped(response, 1024) == b'{"ok": true}'
