"""Error reports (Sentry): a real worker sends its events to a capture endpoint on loopback,
and nothing in them is a phone number, a pin, the token, a password or a webhook URL's path;
the scrubber, in process, over an event with every kind of field."""

from __future__ import annotations

import gzip
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from callpass_producer import enqueue_call
from tests.conftest import start_worker
from tests.helpers import unique_dn
from worker.dev.stack import Stack, wait_until
from worker.masking import mask_dn
from worker.ops.error_reports import FILTERED, ReportScrubber, init_error_reports
from worker.settings import SIMULATOR_DEV_TOKEN, SettingsError, load_settings

QUEUE = "errreports"
PIN = "0827"  # a leading zero: never a JSON number, so any standalone "0827" is the pin
HOOK_SECRET = "T0SECRET/B0HOOKPATH"
HOOK_TOKEN = "hooktoken-5f3a9c"
PASSWORD = "redis-pw-83hd72"

#: A test-only task the worker imports (``-I``): it logs, calls a "webhook" with the token and
#: raises with everything in its message, as a bug in a task would.
PROBE = f"""
import logging

import requests

from worker.celery_app import app

log = logging.getLogger("probe")


@app.task(name="sentry_probe.leak", shared=False)
def leak(dn, pin, token, hook):
    log.info("probing %s (+%s) with pin=%s", dn, dn, pin)
    try:
        requests.post(
            hook, data={{"dn": dn, "pin": pin}}, headers={{"Authorization": "Bearer " + token}},
            timeout=2,
        )
    except requests.RequestException:
        pass
    document = {{"dn": dn, "pin": pin, "webhook_url": hook}}
    raise RuntimeError(
        f"probe failed for +{{dn}} with Bearer {{token}} at {{hook}} via "
        f"redis://:{PASSWORD}@127.0.0.1:1/0: {{document!r}}"
    )
"""


class Capture:
    """A Sentry ingest on loopback: envelopes POSTed to ``/api/<project>/envelope/`` are kept
    (decompressed); any other path is a webhook receiver that answers 500."""

    def __init__(self) -> None:
        self.envelopes: list[bytes] = []
        self.hooks: list[str] = []
        self.hook_headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.port = self.server.server_address[1]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        capture = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "br":
                    body = pytest.importorskip("brotli").decompress(body)
                is_envelope = re.fullmatch(r"/api/\d+/envelope/", self.path) is not None
                with capture._lock:
                    (
                        capture.envelopes.append(body)
                        if is_envelope
                        else capture.hooks.append(self.path)
                    )
                    if not is_envelope:
                        capture.hook_headers.append({k.lower(): v for k, v in self.headers.items()})
                self.send_response(200 if is_envelope else 500)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def raw(self) -> bytes:
        with self._lock:
            return b"\n".join(self.envelopes)

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            envelopes = list(self.envelopes)
        return [p for e in envelopes for t, p in parse_envelope(e) if t == "event"]


def parse_envelope(raw: bytes) -> Iterator[tuple[str, dict[str, Any]]]:
    """(item type, JSON payload) of each item: a header line, then per item a header line
    and a payload of ``length`` bytes (or up to the next newline)."""
    _, _, rest = raw.partition(b"\n")
    while rest.strip():
        header_line, _, rest = rest.partition(b"\n")
        header = json.loads(header_line)
        if "length" in header:
            payload, rest = rest[: header["length"]], rest[header["length"] + 1 :]
        else:
            payload, _, rest = rest.partition(b"\n")
        if header.get("type") in ("event", "transaction"):
            yield header["type"], json.loads(payload)


@contextmanager
def capture_server() -> Iterator[Capture]:
    capture = Capture()
    thread = threading.Thread(target=capture.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield capture
    finally:
        capture.server.shutdown()
        capture.server.server_close()
        thread.join(5)


def _exception_event(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((e for e in events if "exception" in e), None)


def _log_event(events: list[dict[str, Any]], words: str) -> dict[str, Any] | None:
    return next((e for e in events if words in json.dumps(e.get("logentry", {}))), None)


def test_a_real_workers_reports_arrive_with_nothing_secret_in_them(
    stack: Stack, app: Celery, worker_env: dict[str, str], tmp_path: Path
) -> None:
    pytest.importorskip("sentry_sdk")
    (tmp_path / "sentry_probe.py").write_text(PROBE)
    dn, hook_dn = unique_dn("1"), unique_dn("1")
    with capture_server() as capture:
        hook = f"http://127.0.0.1:{capture.port}/{HOOK_SECRET}?token={HOOK_TOKEN}"
        env = {
            **worker_env,
            "CALLPASS_QUEUE": QUEUE,
            "PYTHONPATH": str(tmp_path),
            "CALLPASS_SENTRY_DSN": f"http://public@127.0.0.1:{capture.port}/1",
            "CALLPASS_SENTRY_ENVIRONMENT": "suite",
            "CALLPASS_WEBHOOK_RETRY_SCHEDULE_S": "0",  # one attempt: the 500 dead-letters it
        }
        proc = start_worker(stack, app, env, QUEUE, "-I", "sentry_probe")
        try:
            app.send_task(
                "sentry_probe.leak",
                kwargs={"dn": dn, "pin": PIN, "token": SIMULATOR_DEV_TOKEN, "hook": hook},
                queue=QUEUE,
                task_id=f"probe-{dn}",  # a foreign producer's id may hold the number
            )
            enqueue_call(app, hook_dn, 5, queue=QUEUE, webhook_url=hook, request_id=hook_dn)
            crash = wait_until(lambda: _exception_event(capture.events()), 15, "the task's report")
            dead = wait_until(
                lambda: _log_event(capture.events(), "dead-lettered"), 15, "the webhook's report"
            )
        finally:
            proc.stop()
        raw = capture.raw().decode()
    started = f"error reports: Sentry at http://127.0.0.1:{capture.port}/…, environment suite"
    assert started in proc.log_path.read_text()
    # The reports are the worker's, about what happened.
    assert crash["exception"]["values"][-1]["type"] == "RuntimeError"
    assert crash["exception"]["values"][-1]["mechanism"]["type"] == "celery"
    assert crash["release"].startswith("callpass-worker@")
    assert crash["environment"] == "suite"
    assert crash["tags"]["celery_task_id"] == f"probe-{mask_dn(dn)}"
    assert mask_dn(dn) in crash["exception"]["values"][-1]["value"]
    assert dead["level"] == "error"
    # The number reached the reports (masked); the pin and the webhook URL did too (filtered).
    shown = json.dumps(capture.events(), ensure_ascii=False)
    assert mask_dn(dn) in shown and mask_dn(hook_dn) in shown and FILTERED in shown
    assert f"http://127.0.0.1:{capture.port}/…" in shown  # the webhook's host, not its path
    assert any(HOOK_SECRET in path for path in capture.hooks)  # the receiver was called
    # No trace headers leave with our requests: Sentry's baggage would carry the DSN's key.
    assert capture.hook_headers
    assert not [h for h in capture.hook_headers if {"sentry-trace", "baggage"} & set(h)]
    for secret in (dn, hook_dn, SIMULATOR_DEV_TOKEN, HOOK_SECRET, "B0HOOKPATH", HOOK_TOKEN):
        assert secret not in raw, secret
    assert PASSWORD not in raw
    assert not re.search(rf"(?<![\w.]){PIN}(?![\w.])", raw), "the pin"


# --- the scrubber, in process -----------------------------------------------------------------

DN = "79161234567"
TOKEN = "d" * 64
HOOK_URL = "https://hooks.example.com/services/T0/B0/XsecretX?sig=abc123def"
WEBHOOK_SECRET = "whsec_" + "c2VjcmV0LXNpZ25pbmcta2V5LWJ5dGVzLTEyMzQ1Njc4"
SETTINGS_ENV = {
    "CALLPASS_API_URL": "https://api.example.com/",
    "CALLPASS_API_TOKEN": TOKEN,
    "CALLPASS_REDIS_URL": f"redis://:{PASSWORD}@redis.internal:6379/0",
    "CALLPASS_WEBHOOK_URL": HOOK_URL,
    "CALLPASS_WEBHOOK_SECRETS": WEBHOOK_SECRET,
    "CALLPASS_FLOWER_BASIC_AUTH": "admin:flower-password-1",
    "CALLPASS_PIN_HASH_KEY": "pin-hash-key-0123456789",
}
SECRETS = (
    DN,
    TOKEN,
    PASSWORD,
    "XsecretX",
    "abc123def",
    WEBHOOK_SECRET,
    "flower-password-1",
    "pin-hash-key-0123456789",
    "4821",
)


def _event() -> dict[str, Any]:
    """An event as ``before_send`` gets it (serialized), with the data in every kind of field."""
    document = {"dn": DN, "pin": "4821", "callid": "c-1", "webhook_url": HOOK_URL}
    return {
        "message": f"call to {DN} failed",
        "logentry": {"message": "call to %s failed", "params": [DN, f"+{DN}"]},
        "exception": {
            "values": [
                {
                    "type": "ConnectionError",
                    "value": f"Max retries exceeded with url: /services/T0/B0/XsecretX?sig=x "
                    f"for redis://:{PASSWORD}@redis.internal:6379/0 and {document!r}",
                    "stacktrace": {
                        "frames": [
                            {
                                "filename": "worker/api/client.py",
                                "lineno": 115,
                                "vars": {"token": TOKEN, "pin": "4821", "body": f"dn={DN}"},
                            }
                        ]
                    },
                }
            ]
        },
        "breadcrumbs": {
            "values": [
                {"type": "log", "message": f"placed {DN} pin=4821", "data": {}},
                {
                    "type": "http",
                    "category": "httplib",
                    "data": {"url": HOOK_URL, "http.query": "sig=abc123def", "status_code": 500},
                },
                {"type": "http", "data": {"url": f"https://api.example.com/api/status?dn={DN}"}},
            ]
        },
        "request": {
            "url": HOOK_URL,
            "data": f"dn={DN}&pin=4821",
            "headers": {"Authorization": f"Bearer {TOKEN}", "X-Hook": WEBHOOK_SECRET},
        },
        "tags": {"celery_task_id": f"signup-{DN}", "queue": "callpass"},
        "extra": {
            "celery-job": {"task_name": "callpass.start_call", "kwargs": document},
            "settings": f"api_token={TOKEN} flower=admin:flower-password-1",
            "dn_as_int": int(DN),
        },
        "contexts": {"callpass": {"number": int(DN), "placed": json.dumps(document)}},
        "user": {"id": DN},
        "threads": {"values": [{"id": 140234234234234, "name": "MainThread"}]},
        "spans": [{"data": {"url": HOOK_URL, "db.statement": f"GET callpass:rid:{DN}"}}],
    }


def test_the_scrubber_leaves_no_secret_in_any_field() -> None:
    scrubber = ReportScrubber(load_settings(SETTINGS_ENV))
    scrubbed = scrubber.event(_event(), {})
    text = json.dumps(scrubbed)
    for secret in SECRETS:
        assert secret not in text, secret
    # What a bug needs stays readable.
    assert scrubbed["exception"]["values"][0]["type"] == "ConnectionError"
    assert scrubbed["exception"]["values"][0]["stacktrace"]["frames"][0]["lineno"] == 115
    assert scrubbed["threads"]["values"][0]["id"] == 140234234234234
    assert scrubbed["tags"] == {"celery_task_id": f"signup-{mask_dn(DN)}", "queue": "callpass"}
    assert scrubbed["breadcrumbs"]["values"][1]["data"]["url"] == "https://hooks.example.com/…"
    assert scrubbed["breadcrumbs"]["values"][2]["data"]["url"] == (
        f"https://api.example.com/api/status?dn={mask_dn(DN)}"
    )
    # A task's arguments are never sent, whatever the SDK's defaults: only its name is.
    assert scrubbed["extra"]["celery-job"] == {
        "task_name": "callpass.start_call",
        "kwargs": FILTERED,
    }
    assert scrubbed["contexts"]["callpass"]["number"] == mask_dn(DN)
    assert scrubbed["request"]["headers"]["Authorization"] == FILTERED
    assert "redis://***@redis.internal:6379/0" in scrubbed["exception"]["values"][0]["value"]


def test_a_breadcrumb_is_scrubbed_as_it_is_recorded() -> None:
    scrubber = ReportScrubber(load_settings(SETTINGS_ENV))
    crumb = scrubber.breadcrumb({"message": f"Bearer {TOKEN} for {DN}", "data": {"pin": 1}}, {})
    assert crumb == {"message": f"Bearer {FILTERED} for {mask_dn(DN)}", "data": {"pin": FILTERED}}


def test_an_event_that_cannot_be_scrubbed_is_dropped() -> None:
    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no")

    scrubber = ReportScrubber(load_settings({}))
    assert scrubber.event({"extra": {Unprintable(): DN}}, {}) is None


def test_without_a_dsn_nothing_starts() -> None:
    assert init_error_reports(load_settings({})) is False


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CALLPASS_SENTRY_DSN", "https://sentry.example.com/1"),  # no key
        ("CALLPASS_SENTRY_DSN", "https://key-77@sentry.example.com/project"),
        ("CALLPASS_SENTRY_DSN", "ftp://key-77@sentry.example.com/1"),
        ("CALLPASS_SENTRY_DSN", "https://key-77@[::1/5"),  # no URL at all
        ("CALLPASS_SENTRY_ENVIRONMENT", "prod/eu"),
    ],
)
def test_a_malformed_value_names_the_variable_and_not_the_key(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({variable: value})
    assert caught.value.variable == variable
    assert "key-77" not in str(caught.value)
