"""Tracing: one trace per request, from the producer's publish through the worker's start, its
polls, its API requests and its webhook deliveries, with no number, pin or token recorded.

The producer is this process, instrumented as the README shows (an in-memory exporter); the
worker is a real worker exporting with OTLP over HTTP to a collector stand-in on loopback:
under the threads pool (the default) everything runs in one process; under prefork, starts
and deliveries run in its children, polls in its main process.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import redis
from celery import Celery
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

from callpass_producer import enqueue_call
from chaos.receiver import Receiver
from tests.conftest import WEBHOOK_SECRETS, start_worker
from tests.helpers import settle, unique_dn
from worker.dev.stack import Stack, wait_until
from worker.ops import tracing
from worker.ops.tracing import TRACEPARENT, OtelTracing, request_tracing, scrubbed, start_tracing
from worker.pipeline.ports import NoTracing
from worker.pipeline.store import RequestStore
from worker.settings import load_settings
from worker.settings.model import SIMULATOR_DEV_TOKEN
from worker.webhooks.events import event_id_for


@dataclass(frozen=True)
class Span:
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]


class Collector:
    """An OTLP/HTTP traces endpoint on loopback: keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _collector_handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def add(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        spans = [
            Span(
                span.name,
                span.trace_id.hex(),
                span.span_id.hex(),
                span.parent_span_id.hex(),
                {kv.key: _value(kv.value) for kv in span.attributes},
            )
            for resource in request.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]
        with self._lock:
            self.spans.extend(spans)

    def named(self, name: str) -> list[Span]:
        with self._lock:
            return [s for s in self.spans if s.name == name]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


def _collector_handler(collector: Collector) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            collector.add(body)
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    yield c
    c.stop()


@pytest.fixture
def producer_spans() -> Iterator[InMemorySpanExporter]:
    """This process as an instrumented producer (the README's lines), its spans in memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = CeleryInstrumentor()  # type: ignore[no-untyped-call]
    instrumentor.instrument(tracer_provider=provider)
    yield exporter
    instrumentor.uninstrument()
    provider.shutdown()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(WEBHOOK_SECRETS)
    yield r
    r.stop()


def _http_spans(spans: list[Span]) -> list[Span]:
    return [
        s for s in spans if "http.method" in s.attributes or "http.request.method" in s.attributes
    ]


def _method_and_status(span: Span) -> tuple[Any, Any]:
    a = span.attributes
    return (
        a.get("http.request.method", a.get("http.method")),
        a.get("http.response.status_code", a.get("http.status_code")),
    )


def _leaks(spans: list[Span], secrets: dict[str, str]) -> list[str]:
    """Span names and attribute values holding any of ``secrets`` (a pin as a whole word)."""
    found = []
    for span in spans:
        for text in [span.name, *map(str, span.attributes.values())]:
            for what, secret in secrets.items():
                if re.search(rf"(?<![0-9A-Za-z]){re.escape(secret)}(?![0-9A-Za-z])", text):
                    found.append(f"{what} in {span.name}: {text}")
    return found


@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_a_request_is_one_trace_from_the_producer_to_its_webhooks_with_nothing_secret(
    pool: str,
    stack: Stack,
    app: Celery,
    worker_env: dict[str, str],
    records: redis.Redis,
    collector: Collector,
    producer_spans: InMemorySpanExporter,
    receiver: Receiver,
) -> None:
    queue = f"traced-{uuid.uuid4().hex[:8]}"
    env = {
        **worker_env,
        "CALLPASS_QUEUE": queue,
        "CALLPASS_TRACING": "otlp",
        "CALLPASS_WORKER_POOL": pool,
        "CALLPASS_METRICS_PORT": "0",
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    proc = start_worker(stack, app, env, queue, "--concurrency", "1")
    try:
        request_id = f"traced-{uuid.uuid4()}"
        dn = unique_dn("3")  # not answered: polls until the end of its 3 s
        result = enqueue_call(
            app,
            dn,
            3,
            request_id=request_id,
            webhook_url=receiver.url + "/ok/traced-secret-path",
            queue=queue,
        )
        doc = settle(result)
        event_ids = {
            event_id_for(t, request_id, result.id) for t in ("call.placed", "call.completed")
        }

        def delivered() -> list[Span] | None:
            spans = [
                s
                for s in collector.named("callpass.webhook")
                if s.attributes.get("callpass.webhook.event_id") in event_ids
            ]
            done = [s for s in spans if s.attributes.get("callpass.webhook.result") == "delivered"]
            return spans if len(done) == 2 else None

        webhook_spans = wait_until(delivered, 30, "both webhook deliveries' spans")
    finally:
        proc.stop()

    published = [s for s in producer_spans.get_finished_spans() if s.name.startswith("apply_async")]
    assert len(published) == 1
    context = published[0].get_span_context()
    assert context is not None
    trace_id = f"{context.trace_id:032x}"
    in_trace = [s for s in collector.spans if s.trace_id == trace_id]

    # The start: a child of the producer's publish.
    starts = [s for s in in_trace if s.name == "run/callpass.start_call"]
    assert [s.parent_id for s in starts] == [f"{context.span_id:016x}"]
    # Every poll of the call, in the trace; the last one read the outcome.
    polls = [
        s
        for s in collector.named("callpass.poll")
        if s.attributes["callpass.request_id"] == request_id
    ]
    assert len(polls) >= 2 and {s.trace_id for s in polls} == {trace_id}
    assert doc["outcome"] in {s.attributes["callpass.poll.result"] for s in polls}
    assert all(s.attributes["callpass.dn"] != dn for s in polls)
    # Each API request: a child of the start or of a poll, with its method and status.
    steps = {s.span_id: s for s in [*starts, *polls]}
    api = [s for s in _http_spans(in_trace) if s.parent_id in steps]
    assert {steps[s.parent_id].name for s in api} == {"run/callpass.start_call", "callpass.poll"}
    status_requests = records.hget(RequestStore.key(request_id), "status_requests")
    assert sum(steps[s.parent_id].name == "callpass.poll" for s in api) == int(status_requests or 0)
    assert all(_method_and_status(s) in {("POST", 200), ("GET", 200)} for s in api), api
    # Both deliveries in the trace, their POST with the receiver's host only.
    assert {s.trace_id for s in webhook_spans} == {trace_id}
    deliveries = {s.span_id for s in webhook_spans}
    posts = [s for s in _http_spans(in_trace) if s.parent_id in deliveries]
    assert len(posts) >= 2 and all(_method_and_status(s)[1] == 200 for s in posts)
    urls = {s.attributes.get("http.url", s.attributes.get("url.full")) for s in posts}
    assert urls == {receiver.url + "/…"}

    secrets = {"number": dn, "pin": str(doc["pin"]), "token": SIMULATOR_DEV_TOKEN}
    secrets["webhook path"] = "traced-secret-path"
    assert doc["pin"]
    everything = collector.spans + [
        Span(s.name, "", "", "", dict(s.attributes or {}))
        for s in producer_spans.get_finished_spans()
    ]
    assert _leaks(everything, secrets) == []


@pytest.fixture
def local_spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    """A provider of this test's own (never the process' global one)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def test_a_poll_joins_the_trace_its_record_keeps_and_links_the_running_one(
    local_spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = local_spans
    tracer = provider.get_tracer("test")
    port = OtelTracing(provider)
    with tracer.start_as_current_span("start") as start:
        record = port.carrier()
    assert record[TRACEPARENT].split("-")[1] == f"{start.get_span_context().trace_id:032x}"

    with port.span("callpass.poll", record, {"callpass.request_id": "r"}) as note:
        note("callpass.poll.result", "polling")  # no running span: a child of the kept one
    mover = tracer.start_as_current_span("mover's message")
    with mover as other, port.span("callpass.webhook", record, {}):
        pass
    message = tracer.start_as_current_span("delivery message", context=_context_of(record))
    with message as same, port.span("callpass.webhook", record, {}):
        pass
    with port.span("callpass.poll", {}, {}):  # nothing kept: a trace of its own
        pass

    poll, first_webhook, own, last_webhook = [
        s for s in exporter.get_finished_spans() if s.name.startswith("callpass.")
    ]
    start_ctx = start.get_span_context()
    assert poll.parent is not None and poll.parent.span_id == start_ctx.span_id
    assert poll.attributes == {"callpass.request_id": "r", "callpass.poll.result": "polling"}
    # Sent by the mover, in another trace: the kept trace's, linked to the message's span.
    assert first_webhook.parent is not None and first_webhook.parent.span_id == start_ctx.span_id
    assert [link.context.span_id for link in first_webhook.links] == [
        other.get_span_context().span_id
    ]
    # Sent from the request's own trace: a child of the running span, no link.
    assert own.parent is not None and own.parent.span_id == same.get_span_context().span_id
    assert not own.links
    assert last_webhook.parent is None and last_webhook.context.trace_id != start_ctx.trace_id


def _context_of(carrier: dict[str, str]) -> Any:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract(carrier)


def test_tracing_off_keeps_nothing_and_a_missing_extra_stops_the_worker(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    assert isinstance(request_tracing(load_settings({})), NoTracing)
    assert NoTracing().carrier() == {}
    start_tracing(load_settings({}))  # off: nothing set up
    assert tracing._provider is None

    def missing() -> None:
        raise ImportError("No module named 'opentelemetry.exporter'")

    monkeypatch.setattr(tracing, "_otlp_provider", missing)
    with pytest.raises(SystemExit):
        start_tracing(load_settings({"CALLPASS_TRACING": "otlp"}))
    assert "needs the tracing extra" in caplog.text
    assert tracing._provider is None


def test_exported_exceptions_show_their_type_only() -> None:
    # The requests instrumentation records a failed request's exception, whose message names
    # the URL's path (a webhook receiver's secret may be there).
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(scrubbed(exporter)))
    with (
        pytest.raises(ConnectionError),
        provider.get_tracer("test").start_as_current_span(
            "POST", attributes={"http.method": "POST"}
        ),
    ):
        raise ConnectionError("Max retries exceeded with url: /hooks/s3cr3t-path")
    provider.shutdown()
    [span] = exporter.get_finished_spans()
    assert [(e.name, dict(e.attributes or {})) for e in span.events] == [
        ("exception", {"exception.type": "ConnectionError", "exception.escaped": "False"})
    ]
    assert span.status.status_code.name == "ERROR" and not span.status.description
    assert dict(span.attributes or {}) == {"http.method": "POST"}


def test_exported_text_attributes_show_numbers_masked() -> None:
    # A request id is the producer's own text: "signup-79161234567" holds a number.
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(scrubbed(exporter)))
    attributes = {"callpass.request_id": "signup-79161234567", "ids": ("a", "79161234567")}
    with provider.get_tracer("test").start_as_current_span("run", attributes=attributes) as span:
        span.add_event("note", {"why": "for 79161234567"})
    provider.shutdown()
    [exported] = exporter.get_finished_spans()
    shown = repr((exported.attributes, [e.attributes for e in exported.events]))
    assert "79161234567" not in shown and "7916*****67" in shown


def test_tracing_that_fails_never_stops_the_work(
    local_spans: tuple[TracerProvider, InMemorySpanExporter],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    provider, _ = local_spans
    port = OtelTracing(provider)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("tracing is broken")

    monkeypatch.setattr(TraceContextTextMapPropagator, "inject", broken)
    assert port.carrier() == {}  # the start goes on, with no trace context kept
    monkeypatch.setattr(tracing, "_parent", broken)
    ran = []
    with port.span(
        "callpass.poll", {TRACEPARENT: "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}, {}
    ) as note:
        note("callpass.poll.result", "polling")
        ran.append(True)
    assert ran == [True]
    monkeypatch.undo()
    with pytest.raises(KeyError), port.span("callpass.poll", {}, {}):
        raise KeyError("the block's own error passes unchanged")
    assert caplog.text.count("the work goes on untraced") == 2
