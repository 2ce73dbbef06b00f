"""The rule of each setting, put beside its field in the model as an ``Annotated`` validator.

A value from the environment arrives as text and is read here, in the formats the README
documents; a value given in Python (``Settings(poll_interval_s=2.0)``) meets the same rule. A
rule raises ``ValueError`` with the rule's wording only (never a secret's value): the error
conversion (:mod:`worker.settings.errors`) puts the variable's name in front of it.
"""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, SecretStr

from worker.webhooks.signature import parse_secret

# The contract's reading of a token: lower-case hex, 32 or 64 characters.
_TOKEN_RE = re.compile(r"^(?:[0-9a-f]{32}|[0-9a-f]{64})$")
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _secret_text(value: object) -> object:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def _read_number(value: Any, lo: float, hi: float) -> float:
    try:
        parsed = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"must be a number, got {value!r}") from None
    if not lo <= parsed <= hi:
        raise ValueError(f"must be between {lo:g} and {hi:g}, got {value}")
    return parsed


def number(lo: float, hi: float) -> BeforeValidator:
    """A real number (seconds, mostly) between ``lo`` and ``hi``."""
    return BeforeValidator(lambda value: _read_number(value, lo, hi))


def zero_or_number(lo: float, hi: float) -> BeforeValidator:
    """0 (the derived default) or a number between ``lo`` and ``hi``."""

    def read(value: Any) -> float:
        parsed = _read_number(value, 0, hi)
        if 0 < parsed < lo:
            raise ValueError(f"must be 0 (the default) or between {lo:g} and {hi:g}")
        return parsed

    return BeforeValidator(read)


def whole_number(lo: int, hi: int) -> BeforeValidator:
    """An integer between ``lo`` and ``hi``, written without a fraction or exponent."""

    def read(value: Any) -> int:
        written = value if isinstance(value, str) else None
        is_int = isinstance(value, int) and not isinstance(value, bool)
        if not is_int and not (written and re.fullmatch(r"-?[0-9]+", written.strip())):
            raise ValueError(f"must be a whole number, got {value!r}")
        parsed = int(value)
        if not lo <= parsed <= hi:
            raise ValueError(f"must be between {lo} and {hi}, got {value}")
        return parsed

    return BeforeValidator(read)


def _read_flag(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    lowered = str(value).strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"must be true or false, got {value!r}")


Flag = Annotated[bool, BeforeValidator(_read_flag)]


def url(*schemes: str, optional: bool = False) -> BeforeValidator:
    """A URL with one of ``schemes`` and a host (or empty, if ``optional``)."""
    return BeforeValidator(lambda value: _check_url(value, schemes, optional))


def service_url(*schemes: str, optional: bool = False) -> BeforeValidator:
    """A Redis or broker URL: credentials only before the host, where every log masks them."""

    def read(value: Any) -> Any:
        from worker.masking import secret_query_names

        checked = _check_url(value, schemes, optional)
        names = secret_query_names(checked) if isinstance(checked, str) else []
        if names:  # the names only, never the values
            raise ValueError(
                f"must not carry credentials in its query string ({names[0]}=…): put them "
                "before the host, as in redis://:PASSWORD@host:6379/0 (kombu reads only those)"
            )
        return checked

    return BeforeValidator(read)


def _check_url(value: Any, schemes: tuple[str, ...], optional: bool) -> Any:
    if not isinstance(value, str) or (optional and not value):
        return value
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        parts = urlsplit("")
    if parts.scheme not in schemes or not parts.netloc:
        raise ValueError(f"must be a URL with scheme {' or '.join(schemes)} and a host")
    return value


def _read_token(value: Any) -> Any:
    raw = _secret_text(value)
    if isinstance(raw, str) and not _TOKEN_RE.fullmatch(raw):
        # Never echo the value: it is a secret even when malformed.
        raise ValueError(f"must be 32 or 64 lower-case hex characters (got {len(raw)} characters)")
    return raw


Token = Annotated[SecretStr, BeforeValidator(_read_token)]


def _read_hash_key(value: Any) -> Any:
    raw = _secret_text(value)
    if isinstance(raw, str) and raw and len(raw) < 16:
        raise ValueError(f"must be at least 16 characters (got {len(raw)})")
    return raw


HashKey = Annotated[SecretStr, BeforeValidator(_read_hash_key)]

_TEST_NUMBER_RE = re.compile(r"7[0-9]{10,14}:[0-9]{4,6}", re.ASCII)


def _read_test_numbers(value: Any) -> Any:
    raw = _secret_text(value)
    if not isinstance(raw, str):
        return raw
    for index, part in enumerate(p.strip() for p in raw.split(",") if p.strip()):
        if not _TEST_NUMBER_RE.fullmatch(part):
            # Never echo the entry: its pin lets anyone pass as that number's owner.
            raise ValueError(
                f"entry {index + 1} must be NUMBER:PIN, a number of 11 to 15 digits starting "
                "with 7 and a pin of 4 to 6 digits"
            )
    return raw


#: Test numbers and their fixed pins: ``79990000001:1234,79990000002:5678``.
FixedPinNumbers = Annotated[SecretStr, BeforeValidator(_read_test_numbers)]


def fixed_pins_of(numbers: SecretStr) -> dict[str, str]:
    """The test numbers' fixed pins, by number."""
    pairs = (p.strip().partition(":") for p in numbers.get_secret_value().split(","))
    return {dn: pin for dn, _, pin in pairs if dn}


def _read_webhook_secrets(value: Any) -> Any:
    raw = _secret_text(value)
    if not isinstance(raw, str):
        return raw
    for index, part in enumerate(p.strip() for p in raw.split(",") if p.strip()):
        try:
            parse_secret(part)
        except ValueError as exc:  # the rule only: never the secret itself
            raise ValueError(f"secret #{index + 1} {exc}") from None
    return raw


WebhookSecrets = Annotated[SecretStr, BeforeValidator(_read_webhook_secrets)]


def _read_basic_auth(value: Any) -> Any:
    from worker.flower.guard import basic_auth_problem

    raw = _secret_text(value)
    if not isinstance(raw, str):
        return raw
    # Every entry, split as Flower splits FLOWER_BASIC_AUTH (each comma, nothing stripped):
    # Flower lets in a login equal to any one of them, so "admin:pw," admits an empty one.
    # The guard's rule for an entry, and ours on top: a password of 8+ characters.
    for index, entry in enumerate(raw.split(",") if raw else [], start=1):
        if basic_auth_problem([entry]) is not None or len(entry.partition(":")[2].strip()) < 8:
            # The rule and the position only, never the value: it holds a password.
            raise ValueError(
                f"entry #{index} must be user:password (ASCII, user not blank, a password of "
                "8+ characters); an empty entry (a trailing or doubled comma) lets anyone in"
            )
    return raw


BasicAuth = Annotated[SecretStr, BeforeValidator(_read_basic_auth)]


def _read_level(value: Any) -> Any:
    level = value.strip().upper() if isinstance(value, str) else value
    if level not in _LEVELS:
        raise ValueError(f"must be one of {', '.join(_LEVELS)}, got {value!r}")
    return level


LogLevel = Annotated[str, BeforeValidator(_read_level)]


def choice(*choices: str) -> BeforeValidator:
    """One of ``choices``, in any case."""

    def read(value: Any) -> Any:
        chosen = value.strip().lower() if isinstance(value, str) else value
        if chosen not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {value!r}")
        return chosen

    return BeforeValidator(read)


def _read_queue(value: Any) -> Any:
    if isinstance(value, str) and not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", value):
        raise ValueError("must be 1-64 characters of letters, digits, _ . : -")
    return value


QueueName = Annotated[str, BeforeValidator(_read_queue)]
#: A queue name, or empty (the derived default).
OptionalQueueName = Annotated[
    str, BeforeValidator(lambda value: _read_queue(value) if value else value)
]


def _read_file(value: Any) -> Any:
    if isinstance(value, str) and value and not os.path.isfile(value):
        raise ValueError(f"must name an existing file, got {value!r}")
    return value


ExistingFile = Annotated[str, BeforeValidator(_read_file)]


def _read_address(value: Any) -> Any:
    try:
        return str(ipaddress.ip_address(str(value).strip()))
    except ValueError:
        raise ValueError(f"must be an IP address like 0.0.0.0, got {value!r}") from None


IPAddress = Annotated[str, BeforeValidator(_read_address)]
