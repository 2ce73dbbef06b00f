"""Tracing with OpenTelemetry: a trace per request, from the producer's ``send_task`` through
``start_call``, each poll of its chain, each API request and each webhook delivery.

Off unless ``CALLPASS_TRACING=otlp`` (and the ``tracing`` extra installed): then
:func:`start_tracing`, at ``worker_init``, sets up the process' tracer provider with an OTLP
exporter (over HTTP; OpenTelemetry's own ``OTEL_*`` variables name the collector, sampling and
batching) and the maintained instrumentations of Celery and requests. Prefork children inherit
all of it; each exports on a connection of its own (:func:`_fork_safe_session`) and flushes as
it exits.

Polls and webhook deliveries run apart from the request's message (the due set, the mover), so
Celery's header propagation alone cannot join them: the start's ``traceparent`` is kept in the
request's record, an event's in the event, and :class:`OtelTracing` starts each poll and
delivery span in that trace (see :class:`~worker.pipeline.ports.Tracing`).

What is never recorded: request bodies (the number travels in the API's form body), headers
(the token is the API's ``Authorization``), pins, webhook URLs' paths and queries (a
receiver's secret may be there: every HTTP span's URL is redacted with
:func:`~worker.masking.redact_url`), and exceptions' messages and tracebacks (:func:`scrubbed`
keeps their type). The number appears only masked.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

from worker.masking import redact_url, url_origin
from worker.ops.span_scrubbing import scrubbed
from worker.pipeline.ports import NoTracing, SpanNote, Tracing

if TYPE_CHECKING:
    import requests
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Link, Span

    from worker.settings import Settings

__all__ = ["TRACEPARENT", "OtelTracing", "request_tracing", "scrubbed", "start_tracing"]

log = logging.getLogger(__name__)

#: The W3C trace context field kept in request records and webhook events.
TRACEPARENT = "traceparent"
#: Request headers OpenTelemetry must never record, even where an operator asks it to capture
#: headers (``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_REQUEST``): the API's token and
#: the webhooks' signatures.
SECRET_HEADERS = ("authorization", "webhook-signature", "cookie", "set-cookie")
_SANITIZE_VARIABLE = "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS"
#: Attributes where the requests instrumentation puts the URL (old and new conventions).
_URL_ATTRIBUTES = ("http.url", "url.full")

_provider: TracerProvider | None = None


def request_tracing(settings: Settings) -> Tracing:
    """What the pipeline and the webhooks trace with (nothing with ``CALLPASS_TRACING=off``)."""
    return NoTracing() if settings.tracing == "off" else OtelTracing()


class OtelTracing:
    """The pipeline's :class:`~worker.pipeline.ports.Tracing` port on OpenTelemetry's API
    (the process' tracer provider, unless given one)."""

    def __init__(self, provider: TracerProvider | None = None) -> None:
        self._provider = provider

    def carrier(self) -> dict[str, str]:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        carrier: dict[str, str] = {}
        try:
            TraceContextTextMapPropagator().inject(carrier)
        except Exception as exc:  # tracing fails open: a start never waits on it
            _tracing_failed("keep the trace context", exc)
        return {TRACEPARENT: carrier[TRACEPARENT]} if TRACEPARENT in carrier else {}

    def span(
        self, name: str, carrier: Mapping[str, str], attributes: Mapping[str, str]
    ) -> AbstractContextManager[SpanNote]:
        return _span(self._provider, name, carrier.get(TRACEPARENT, ""), attributes)


@contextmanager
def _span(
    provider: TracerProvider | None, name: str, traceparent: str, attributes: Mapping[str, str]
) -> Iterator[SpanNote]:
    """A span around the block; a span that cannot be begun or ended is left out, never the
    block's work (a poll, a delivery), and the block's own exceptions pass unchanged."""
    from opentelemetry import trace

    try:
        parent, links = _parent(traceparent)
        tracer = trace.get_tracer("callpass-worker", tracer_provider=provider)
        opened = tracer.start_as_current_span(
            name, context=parent, links=links, attributes=dict(attributes)
        )
        span = opened.__enter__()
    except Exception as exc:
        _tracing_failed(f"begin a {name} span", exc)
        yield _no_note
        return
    try:
        yield span.set_attribute
    except BaseException as raised:
        _end_quietly(opened, raised)
        raise
    _end_quietly(opened, None)


def _end_quietly(opened: AbstractContextManager[Any], raised: BaseException | None) -> None:
    try:
        if raised is None:
            opened.__exit__(None, None, None)
        else:
            opened.__exit__(type(raised), raised, raised.__traceback__)
    except BaseException as exc:
        if exc is not raised:  # the span re-raises the block's own exception: expected
            _tracing_failed("end a span", exc)


def _no_note(name: str, value: str) -> None:
    pass


def _tracing_failed(what: str, exc: BaseException) -> None:
    log.warning("tracing: could not %s (%s); the work goes on untraced", what, type(exc).__name__)


def _parent(traceparent: str) -> tuple[Context | None, list[Link]]:
    """The stored trace, unless the running span is in it already (a delivery message sent
    from the poll it belongs to); a running span of another trace (the mover's message) is
    linked."""
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    stored = TraceContextTextMapPropagator().extract({TRACEPARENT: traceparent})
    kept = trace.get_current_span(stored).get_span_context()
    current = trace.get_current_span().get_span_context()
    if not kept.is_valid or (current.is_valid and current.trace_id == kept.trace_id):
        return None, []
    return stored, [trace.Link(current)] if current.is_valid else []


def start_tracing(settings: Settings) -> None:
    """Set tracing up in the worker's process (once), if ``CALLPASS_TRACING`` asks for it;
    exit naming the extra if OpenTelemetry is not installed."""
    global _provider
    if settings.tracing == "off" or _provider is not None:
        return
    try:
        provider = _otlp_provider()
        _instrument(provider, settings.api_url)
    except ImportError as exc:
        log.critical(
            "callpass worker does not start: CALLPASS_TRACING=%s needs the tracing extra "
            "(pip install 'callpass-worker[tracing]'): %s",
            settings.tracing,
            exc,
        )
        raise SystemExit(1) from None
    _provider = provider
    log.info("tracing: spans exported with OTLP over HTTP")


def _otlp_provider() -> TracerProvider:
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    service = os.environ.get("OTEL_SERVICE_NAME") or "callpass-worker"
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    # Endpoint, headers, time-outs: OTEL_EXPORTER_OTLP_*; batching: OTEL_BSP_*.
    exporter = OTLPSpanExporter(session=_fork_safe_session())
    provider.add_span_processor(BatchSpanProcessor(scrubbed(exporter)))
    trace.set_tracer_provider(provider)
    return provider


def _fork_safe_session() -> requests.Session:
    """The exporter's HTTP session; a forked child drops the parent's pooled connections, or
    both processes would write to one socket."""
    import requests

    session = requests.Session()
    os.register_at_fork(after_in_child=session.close)
    return session


def _instrument(provider: TracerProvider, api_url: str) -> None:
    from celery import signals
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    _never_capture_secret_headers()
    CeleryInstrumentor().instrument(tracer_provider=provider)  # type: ignore[no-untyped-call]
    RequestsInstrumentor().instrument(tracer_provider=provider, request_hook=_url_redactor(api_url))
    # A prefork child ends without the atexit hooks that would export its last spans.
    signals.worker_process_shutdown.connect(_flush, weak=False)


def _never_capture_secret_headers() -> None:
    # Read by the requests instrumentation as it instruments; only consulted for headers an
    # operator asked to capture.
    listed = [name for name in os.environ.get(_SANITIZE_VARIABLE, "").split(",") if name]
    os.environ[_SANITIZE_VARIABLE] = ",".join([*listed, *SECRET_HEADERS])


def _url_redactor(api_url: str) -> Callable[[Span, Any], None]:
    """A request hook: the span's URL keeps its path only for the API (whose paths carry no
    number); a webhook receiver's shows scheme, host and port."""
    api_origin = url_origin(api_url)

    def redact(span: Span, request: Any) -> None:
        url = str(getattr(request, "url", "") or "")
        shown = redact_url(url, keep_path=url_origin(url) == api_origin)
        recorded = getattr(span, "attributes", None) or {}
        for name in _URL_ATTRIBUTES:
            if name in recorded:
                span.set_attribute(name, shown)

    return redact


def _flush(**_: Any) -> None:
    if _provider is not None:
        _provider.force_flush(timeout_millis=5000)
