"""The tracing setting: :class:`~worker.settings.model.Settings` inherits it (a row in the
README's table like every other). The exporter itself is configured by OpenTelemetry's own
``OTEL_*`` variables (see :mod:`worker.ops.tracing`)."""

from __future__ import annotations

from typing import Annotated

from pydantic_settings import BaseSettings

from worker.settings.rules import choice

__all__ = ["TracingSettings"]


class TracingSettings(BaseSettings):
    """Fields only: the sources, rules between settings and the display are Settings'."""

    #: ``otlp``: a trace per request, exported with OTLP over HTTP to the collector the
    #: ``OTEL_EXPORTER_OTLP_*`` variables name (needs the ``tracing`` extra); ``off``: none.
    tracing: Annotated[str, choice("off", "otlp")] = "off"
