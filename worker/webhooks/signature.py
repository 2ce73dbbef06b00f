"""Standard Webhooks signatures: sign a delivery, and verify one on the receiving side.

The scheme (https://www.standardwebhooks.com): three headers, ``webhook-id``,
``webhook-timestamp`` (Unix seconds) and ``webhook-signature``, a space-separated list of
``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``, one per secret, so a receiver keeps
verifying while secrets rotate. Secrets are written ``whsec_<base64 key>``.

This module needs nothing beyond the standard library: a Python receiver can install
callpass-worker and call :func:`verify_delivery`, or copy this one file.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "SECRET_PREFIX",
    "WebhookVerificationError",
    "generate_secret",
    "parse_secret",
    "sign",
    "signature_headers",
    "verify_delivery",
]

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
#: How far a delivery's timestamp may be from the receiver's clock (replay window), seconds.
DEFAULT_TOLERANCE_S = 300
#: Shortest key accepted, in bytes (the spec asks for 24 to 64).
MIN_KEY_BYTES = 24


class WebhookVerificationError(Exception):
    """A delivery that must not be trusted: the message says why, without secrets."""


def parse_secret(secret: str) -> bytes:
    """The key bytes of a ``whsec_…`` secret; ``ValueError`` names the rule broken."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"must start with {SECRET_PREFIX!r}")
    encoded = secret[len(SECRET_PREFIX) :]
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"must be {SECRET_PREFIX} followed by base64") from None
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"key must be at least {MIN_KEY_BYTES} bytes (got {len(key)})")
    return key


def generate_secret(n_bytes: int = 32) -> str:
    """A new random secret in the ``whsec_`` form."""
    import secrets

    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(n_bytes)).decode()


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64>`` signature of ``msg_id.timestamp.body``."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signature_headers(
    keys: Sequence[bytes], msg_id: str, body: bytes, timestamp: int | None = None
) -> dict[str, str]:
    """The three headers of a delivery, signed with every key (rotation)."""
    if not keys:
        raise ValueError("at least one signing key is needed")
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": " ".join(sign(key, msg_id, ts, body) for key in keys),
    }


def verify_delivery(
    headers: Mapping[str, str],
    body: bytes,
    secrets: str | Iterable[str],
    *,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> dict[str, Any]:
    """Check a delivery's signature and age; return its parsed JSON body.

    ``secrets``: the receiver's ``whsec_…`` secret, or several while rotating. Raises
    :class:`WebhookVerificationError` when a header is missing, the timestamp is outside
    ``tolerance_s`` of ``now``, or no signature matches any secret. De-duplicate on the
    ``webhook-id`` header: retries of one event carry the same id.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id = lowered.get("webhook-id", "")
    raw_ts = lowered.get("webhook-timestamp", "")
    signatures = lowered.get("webhook-signature", "")
    if not (msg_id and raw_ts and signatures):
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or signature")
    if not raw_ts.isascii() or not raw_ts.isdigit():
        raise WebhookVerificationError("webhook-timestamp is not whole Unix seconds")
    timestamp = int(raw_ts)
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        raise WebhookVerificationError("webhook-timestamp is outside the tolerance")
    keys = [parse_secret(s) for s in ([secrets] if isinstance(secrets, str) else secrets)]
    offered = [s.partition(",")[2] for s in signatures.split(" ") if s.startswith("v1,")]
    for key in keys:
        expected = sign(key, msg_id, timestamp, body).partition(",")[2]
        # compare_digest on every candidate: timing reveals nothing about a near-miss.
        if any(hmac.compare_digest(expected.encode(), o.encode()) for o in offered):
            parsed = json.loads(body)
            if not isinstance(parsed, dict):
                raise WebhookVerificationError("body is not a JSON object")
            return parsed
    raise WebhookVerificationError("no signature matches")
