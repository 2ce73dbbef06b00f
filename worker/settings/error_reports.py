"""The settings of error reports (Sentry): where they go and which environment they name.
:class:`~worker.settings.model.Settings` inherits them (one ``CALLPASS_*`` variable each, in
the README's table like every other).

No sample rate: the worker sends errors only, never performance traces (their spans would
carry every Redis command and HTTP request of a call).
"""

from __future__ import annotations

import re
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BeforeValidator, SecretStr
from pydantic_settings import BaseSettings

__all__ = ["ErrorReportSettings", "SentryDsn", "SentryEnvironment"]

# Sentry's own rule for an environment's name: no whitespace or "/", at most 64 characters.
_ENVIRONMENT_RE = re.compile(r"[^\s/]{1,64}")


def _read_dsn(value: Any) -> Any:
    raw = value.get_secret_value() if isinstance(value, SecretStr) else value
    if not isinstance(raw, str) or not raw:
        return raw
    try:
        parts = urlsplit(raw)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        raise ValueError("must be a Sentry DSN: https://KEY@HOST/PROJECT_ID") from None
    project = parts.path.rstrip("/").rpartition("/")[2] if port_ok else ""
    if parts.scheme not in ("https", "http") or not parts.username or not parts.hostname:
        # Never echo the value: its key lets anyone send events to the project.
        raise ValueError("must be a Sentry DSN: https://KEY@HOST/PROJECT_ID")
    if not project.isdigit():
        raise ValueError("must end with the project's number: https://KEY@HOST/PROJECT_ID")
    return raw


def _read_environment(value: Any) -> Any:
    if isinstance(value, str) and value and not _ENVIRONMENT_RE.fullmatch(value):
        raise ValueError(f"must be 1-64 characters without spaces or '/', got {value!r}")
    return value


SentryDsn = Annotated[SecretStr, BeforeValidator(_read_dsn)]
SentryEnvironment = Annotated[str, BeforeValidator(_read_environment)]


class ErrorReportSettings(BaseSettings):
    """Fields only: the sources, rules between settings and the display are Settings'."""

    #: Sentry project the worker reports errors to (empty: no reports). Secret: its key lets
    #: anyone send events there.
    sentry_dsn: SentryDsn = SecretStr("")
    #: Environment reports name (empty: ``SENTRY_ENVIRONMENT``, else ``production``).
    sentry_environment: SentryEnvironment = ""
