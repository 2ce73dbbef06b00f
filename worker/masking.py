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

from celery.utils.saferepr import saferepr
from celery.worker.request import Request

if TYPE_CHECKING:
    from celery.worker.request import _InfoDict

__all__ = [
    "MaskedRequest",
    "MaskingFilter",
    "hide_url_credentials",
    "mask_dn",
    "mask_log_text",
    "mask_text",
    "masked_reprs",
    "redact_setting",
    "redact_url",
    "secret_query_names",
]

# A run of 10+ digits (optionally after "+") not glued to a token before it is taken for a
# phone number: the look-behinds keep hex or base64 tokens and a UUID's last group (task ids,
# callids: "…-89ab-123456789012") intact, but not any group after a hyphen
# ("signup-2024-79161234567" is a number). What follows matters only where the digits start a
# longer hex token ("msg_686827117916a040b84c…", a webhook event id): pickle writes
# "79161234567q\x02", which is still a number.
_DIGITS_RE = re.compile(
    r"(?<![0-9A-Za-z])(?<![0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-)"
    r"\+?\d{10,}(?!\d)(?![A-Fa-f][0-9A-Fa-f]{5})"
)
# An escape in a repr or JSON text (b'\x0b79161234567', '\n7916…', '\u00a07916…', '\\'),
# also escaped again (a repr inside a repr: '\\x0b'): its letters are not part of the digits
# that follow, so it bounds a number like a space. (A backslash before a digit is no escape
# here: octal would eat the number's first digits.)
_ESCAPE_RE = re.compile(
    r"(\\+(?:x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|N\{[^}]*\}|[^0-9\\]))"
)
# urllib3's DEBUG line for a request ('"POST /cb/T0/B0/secret HTTP/1.1" 200'): a webhook
# receiver's path or query may hold its secret. The API's own paths (/api/...) stay readable.
_REQUEST_LINE_PATH_RE = re.compile(r'("[A-Z]+ )(?!/api/)/[^"\s]*( HTTP/)')
# Query parameters whose values may be credentials (redis-py reads ?password=; services put
# tokens and signatures there). Not ``key`` alone: ``ssl_keyfile`` names a path.
_SECRET_QUERY_NAME_RE = re.compile(r"pass|secret|token|auth|sig|cred|api_?key|access_?key", re.I)
# The same two things inside free text (a log line, an exception): ``scheme://user:pw@`` and
# ``?password=…``/``&token=…``.
# The user info runs to the last "@" before the host: a password may hold "@" itself.
_TEXT_USERINFO_RE = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]*://)[^\s/?#'\"]+@")
_TEXT_SECRET_QUERY_RE = re.compile(
    r"([?&][A-Za-z0-9_.\-]*(?:pass|secret|token|auth|sig|cred|api_?key|access_?key)"
    r"[A-Za-z0-9_.\-]*=)[^&\s'\"#]+",
    re.I,
)
_KEEP_HEAD = 4
_KEEP_TAIL = 2


def mask_dn(dn: object) -> str:
    """``79991234567`` → ``7999*****67``; short or non-string values are masked whole."""
    text = str(dn)
    if len(text) < _KEEP_HEAD + _KEEP_TAIL + 3:
        return "*" * min(len(text), 16)
    return text[:_KEEP_HEAD] + "*" * (len(text) - _KEEP_HEAD - _KEEP_TAIL) + text[-_KEEP_TAIL:]


def _mask_digits(text: str) -> str:
    return _DIGITS_RE.sub(lambda m: mask_dn(m.group(0)), text)


def mask_text(text: str) -> str:
    """Mask every stand-alone run of ten or more digits in ``text``, also right after an
    escape sequence of a repr (``\\x0b``, ``\\n``, ``\\u00a0``, ``\\\\``)."""
    if "\\" not in text:
        return _mask_digits(text)
    # Odd pieces are the escapes themselves; each even piece is masked on its own.
    pieces = _ESCAPE_RE.split(text)
    return "".join(p if i % 2 else _mask_digits(p) for i, p in enumerate(pieces))


def redact_url(url: str, *, keep_path: bool = False) -> str:
    """A URL fit to print or log; credentials (``user:password@``) never show.

    By default (webhook receivers) only scheme, host and port remain, since Slack-style URLs
    carry the token in the path: ``https://hooks.example.com/…``. ``keep_path`` is for the
    services we connect to (Redis, broker, API), whose path says which database or vhost:
    ``redis://***@redis.internal:6379/0``, with secret-looking query values as ``***``.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparsable URL>"
    netloc = f"[{host}]{port}" if ":" in host else f"{host}{port}"
    if not keep_path:
        rest = "/…" if parts.path.strip("/") or parts.query else "/"
        return mask_text(f"{parts.scheme}://{netloc}{rest}")
    userinfo = "***@" if "@" in parts.netloc else ""
    query = "&".join(_redacted_query_pair(pair) for pair in parts.query.split("&"))
    shown = f"{parts.scheme}://{userinfo}{netloc}{parts.path}" + (f"?{query}" if query else "")
    return mask_text(shown)


def redact_setting(name: str, value: object) -> object:
    """A setting's value fit to print: every URL without its credentials, and a webhook
    receiver's URL host only."""
    if isinstance(value, str) and "://" in value:
        return redact_url(value, keep_path=name != "webhook_url")
    return value


def _redacted_query_pair(pair: str) -> str:
    name, equals, value = pair.partition("=")
    return f"{name}=***" if equals and value and _SECRET_QUERY_NAME_RE.search(name) else pair


def secret_query_names(url: str) -> list[str]:
    """Names of the query parameters of ``url`` whose values :func:`redact_url` hides."""
    query = urlsplit(url).query
    return [
        n
        for n, _, _ in (p.partition("=") for p in query.split("&"))
        if n and _SECRET_QUERY_NAME_RE.search(n)
    ]


def hide_url_credentials(text: str) -> str:
    """``scheme://user:password@host`` → ``scheme://***@host`` and ``?password=x`` →
    ``?password=***`` wherever they appear in ``text``."""
    return _TEXT_SECRET_QUERY_RE.sub(r"\1***", _TEXT_USERINFO_RE.sub(r"\1***@", text))


def _mask_value(value: Any) -> Any:
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**6:
        return mask_dn(value)
    if isinstance(value, dict):
        return {k: _mask_argument(k, v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_mask_value(v) for v in value)
    return value


def _mask_argument(name: object, value: Any) -> Any:
    if name == "webhook_url" and isinstance(value, str):
        return redact_url(value)
    if name == "limit_keys":  # a client's IP or account: the names only
        return {k: "<hidden>" for k in value} if isinstance(value, dict) else "<hidden>"
    return _mask_value(value)


def masked_reprs(args: Any, kwargs: Any) -> tuple[str, str]:
    """``argsrepr`` and ``kwargsrepr`` with every phone-number-like value masked."""
    return saferepr(_mask_value(args)), saferepr(_mask_value(kwargs))


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
    """:func:`mask_text`, a webhook receiver's request path and URL credentials hidden."""
    return hide_url_credentials(_REQUEST_LINE_PATH_RE.sub(r"\1/…\2", mask_text(text)))
