"""Phone numbers and URL secrets kept out of what people see: reprs, logs, events.

The producer masks the ``argsrepr``/``kwargsrepr`` it sends (a broker UI, its own events);
the worker uses the same functions for its logs, Flower and telemetry.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from celery.utils.saferepr import saferepr

__all__ = ["SECRET_QUERY_NAME_RE", "mask_dn", "mask_text", "masked_reprs", "redact_url"]

# A run of 10+ digits (optionally after "+") not glued to a token before it is taken for a
# phone number: the look-behinds keep hex or base64 tokens and a UUID's last group (task ids,
# callids: "…-89ab-123456789012") intact, but not any group after a hyphen
# ("signup-2024-79161234567" is a number). What follows matters only where the digits start a
# longer hex token ("msg_686827117916a040b84c…", a webhook event id): pickle writes
# "79161234567q\x02", which is still a number.
# Digits after "<digit>." are a decimal fraction ("succeeded in 0.052612345678948s"), not a number.
_DIGITS_RE = re.compile(
    r"(?<![0-9A-Za-z])(?<!\d\.)(?<![0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-)"
    r"\+?\d{10,}(?!\d)(?![A-Fa-f][0-9A-Fa-f]{5})"
)
# An escape in a repr or JSON text (b'\x0b79161234567', '\n7916…', '\u00a07916…', '\\'),
# also escaped again (a repr inside a repr: '\\x0b'): its letters are not part of the digits
# that follow, so it bounds a number like a space. (A backslash before a digit is no escape
# here: octal would eat the number's first digits.)
_ESCAPE_RE = re.compile(
    r"(\\+(?:x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|N\{[^}]*\}|[^0-9\\]))"
)
# Query parameters whose values may be credentials (redis-py reads ?password=; services put
# tokens and signatures there). Not ``key`` alone: ``ssl_keyfile`` names a path.
SECRET_QUERY_NAME_RE = re.compile(r"pass|secret|token|auth|sig|cred|api_?key|access_?key", re.I)
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


def _redacted_query_pair(pair: str) -> str:
    name, equals, value = pair.partition("=")
    return f"{name}=***" if equals and value and SECRET_QUERY_NAME_RE.search(name) else pair


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
