"""Spans as they may leave the worker: exceptions by type only, every text attribute's
numbers masked. Wrapped around the OTLP exporter by :mod:`worker.ops.tracing`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from worker.masking import mask_text

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter

__all__ = ["scrubbed"]


def scrubbed(exporter: SpanExporter) -> SpanExporter:
    """``exporter``, sent spans whose exceptions show their type only: an exception's message
    and traceback (and the error status OpenTelemetry copies it into) may hold a URL's path,
    a receiver's answer, anything."""
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class Scrubbed(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return exporter.export([_scrubbed_span(span) for span in spans])

        def shutdown(self) -> None:
            exporter.shutdown()

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return exporter.force_flush(timeout_millis)

    return Scrubbed()


def _scrubbed_span(span: ReadableSpan) -> ReadableSpan:
    """The span as it may leave: exceptions by type only, every text attribute's numbers
    masked (a request id a producer chose may hold one: ``signup-79161234567``)."""
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.trace import Link, Status

    events = [
        Event(event.name, _exception_type_only(event.attributes), event.timestamp)
        if event.name == "exception"
        else Event(event.name, _masked(event.attributes), event.timestamp)
        for event in span.events
    ]
    links = [Link(link.context, _masked(link.attributes)) for link in span.links]
    return ReadableSpan(
        name=mask_text(span.name),
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=_masked(span.attributes),
        events=events,
        links=links,
        kind=span.kind,
        status=Status(span.status.status_code),
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def _masked(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    def mask(value: Any) -> Any:
        if isinstance(value, str):
            return mask_text(value)
        if isinstance(value, tuple | list):
            return tuple(mask(v) for v in value)
        return value

    return {name: mask(value) for name, value in (attributes or {}).items()}


def _exception_type_only(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    kept = ("exception.type", "exception.escaped")
    return {name: value for name, value in (attributes or {}).items() if name in kept}
