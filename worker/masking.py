"""Keep phone numbers out of logs and Flower, whatever a producer sends.

The worker uses :class:`MaskedRequest` for its tasks, so the ``argsrepr``/``kwargsrepr``
that Celery logs, sends in events (Flower) and answers to ``inspect`` are rebuilt from the
real arguments with numbers masked, even when a foreign producer did not mask them.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from celery.worker.request import Request

from callpass_producer.masking import (
    SECRET_QUERY_NAME_RE,
    mask_dn,
    mask_text,
    masked_reprs,
    redact_url,
)

if TYPE_CHECKING:
    from celery.worker.request import _InfoDict

__all__ = [
    "MaskedRequest",
    "MaskingFilter",
    "error_line",
    "hide_url_credentials",
    "mask_dn",
    "mask_log_text",
    "mask_text",
    "masked_reprs",
    "redact_setting",
    "redact_url",
    "secret_query_names",
    "url_origin",
]

# urllib3's DEBUG line for a request ('"POST /cb/T0/B0/secret HTTP/1.1" 200'): a webhook
# receiver's path or query may hold its secret. The API's own paths (/api/...) stay readable.
_REQUEST_LINE_PATH_RE = re.compile(r'("[A-Z]+ )(?!/api/)/[^"\s]*( HTTP/)')
# "Authorization: Bearer …" in a header dump or an exception's text.
CREDENTIAL_SCHEME_RE = re.compile(r"\b(Bearer|Basic|Token)(\s+)[A-Za-z0-9._~+/=\-:]+", re.I)
# A pin or a typed code inside a repr or a message: "'pin': '0446'", "pin=0446", "code: 0446".
# Four to six digits, as pins are: "status code: 503" is not a pin.
PIN_IN_TEXT_RE = re.compile(r"(\b(?:pin|code)\b\\*['\"]?\s*[:=]\s*b?\\*['\"]?)\d{4,6}\b", re.I)
# urllib3's exceptions: "Max retries exceeded with url: /hook/T0/secret?x=1 (Caused by …)".
URLLIB3_PATH_RE = re.compile(r"(with url: )(?!/api/)/\S*")
# URL credentials inside free text (a log line, an exception): ``scheme://user:pw@`` and
# ``?password=…``/``&token=…``.
# The user info runs to the last "@" before the host: a password may hold "@" itself.
_TEXT_USERINFO_RE = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]*://)[^\s/?#'\"]+@")
_TEXT_SECRET_QUERY_RE = re.compile(
    r"([?&][A-Za-z0-9_.\-]*(?:pass|secret|token|auth|sig|cred|api_?key|access_?key)"
    r"[A-Za-z0-9_.\-]*=)[^&\s'\"#]+",
    re.I,
)


def error_line(exc: BaseException) -> str:
    """An exception in one line, for a person: its text's first line with URL credentials
    hidden, or its type's name when it has no text."""
    lines = str(exc).strip().splitlines()
    return hide_url_credentials(lines[0]) if lines else type(exc).__name__


def url_origin(url: str) -> tuple[str, str, int | None]:
    """``(scheme, host, port)`` of ``url``, lower-cased: whether two URLs are the same service
    (a prefix is not: ``https://api.example.com.evil.net`` starts like the API's)."""
    try:
        parts = urlsplit(url)
        return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port
    except ValueError:
        return "", "", None


def redact_setting(name: str, value: object) -> object:
    """A setting's value fit to print: every URL without its credentials, and a webhook
    receiver's URL host only."""
    if isinstance(value, str) and "://" in value:
        return redact_url(value, keep_path=name != "webhook_url")
    return value


def secret_query_names(url: str) -> list[str]:
    """Names of the query parameters of ``url`` whose values :func:`redact_url` hides."""
    query = urlsplit(url).query
    return [
        n
        for n, _, _ in (p.partition("=") for p in query.split("&"))
        if n and SECRET_QUERY_NAME_RE.search(n)
    ]


def hide_url_credentials(text: str) -> str:
    """``scheme://user:password@host`` → ``scheme://***@host`` and ``?password=x`` →
    ``?password=***`` wherever they appear in ``text``."""
    return _TEXT_SECRET_QUERY_RE.sub(r"\1***", _TEXT_USERINFO_RE.sub(r"\1***@", text))


class MaskedRequest(Request):
    """A Celery request whose reprs never show a full phone number."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        try:
            self._argsrepr, self._kwargsrepr = masked_reprs(self.args, self.kwargs)
        except Exception:  # a repr must never stop a task; show nothing rather than the number
            self._argsrepr, self._kwargsrepr = "(masked)", "(masked)"

    def info(self, safe: bool = False) -> _InfoDict:
        # `celery inspect active/reserved/scheduled` (and Flower's worker pages) ask with
        # safe=False, which would show the raw arguments: always answer with the masked ones.
        return super().info(safe=True)


class MaskingFilter(logging.Filter):
    """Mask phone numbers, webhook request paths and URL credentials in every log record,
    whatever the format: the message with its arguments, the traceback and the stack (a last
    line of defence)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_log_text(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            # What every formatter would print: formatted once here, masked, and kept.
            record.exc_text = _TRACEBACKS.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_log_text(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_log_text(record.stack_info)
        return True


_TRACEBACKS = logging.Formatter()


def mask_log_text(text: str) -> str:
    """:func:`mask_text`, and hidden: a webhook receiver's request path, URL credentials,
    ``Bearer`` tokens and pins written out in a repr or a message."""
    text = _REQUEST_LINE_PATH_RE.sub(r"\1/…\2", mask_text(text))
    text = URLLIB3_PATH_RE.sub(r"\1/…", text)
    text = CREDENTIAL_SCHEME_RE.sub(r"\1\2***", text)
    return hide_url_credentials(PIN_IN_TEXT_RE.sub(r"\1****", text))
