"""The readiness probe's checks, in-process against the suite's own Redis."""

from __future__ import annotations

import pytest

from worker.ops import readiness
from worker.settings import load_settings


def test_tracing_asked_for_but_not_installed_is_not_ready(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings({"CALLPASS_REDIS_URL": redis_url, "CALLPASS_TRACING": "otlp"})
    assert readiness.readiness_problems(settings, 60) == []  # the extra is in the suite's venv
    monkeypatch.setattr(readiness, "_installed", lambda module: False)
    (problem,) = readiness.readiness_problems(settings, 60)
    assert problem.startswith("tracing: CALLPASS_TRACING=otlp needs the tracing extra")
