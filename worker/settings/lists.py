"""Rules of the comma-separated settings: each reads its text into a tuple, or refuses it.

A tuple given in Python passes through to the field's type; empty text is the empty tuple
(the setting is off), except for the webhook schedule, which needs one delay at least.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any

from pydantic import BeforeValidator

from callpass_producer.contracts.start_call import LIMIT_KEY_NAME
from worker.api.limits import Budget, WindowLimit, parse_window_limits

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _read_schedule(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    delays = []
    for part in value.split(","):
        try:
            delays.append(float(part))
        except ValueError:
            raise ValueError(
                f"must be comma-separated seconds like 0,5,300, got {part.strip()!r}"
            ) from None
    if not 1 <= len(delays) <= 50 or not all(0 <= d <= 7 * 86_400 for d in delays):
        raise ValueError("must list 1 to 50 delays, each between 0 and 604800 seconds")
    return tuple(delays)


#: Delays in seconds: ``0,5,300``.
Delays = Annotated[tuple[float, ...], BeforeValidator(_read_schedule)]


def _read_hosts(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    hosts = tuple(h.strip().lower() for h in value.split(",") if h.strip())
    bad = [h for h in hosts if not re.fullmatch(r"(\*\.)?[a-z0-9.:_\[\]-]{1,253}", h)]
    if bad:
        raise ValueError(f"must be comma-separated host names: {bad[0]!r}")
    return hosts


#: Host names, lower-cased; ``*.example.com`` for subdomains.
Hosts = Annotated[tuple[str, ...], BeforeValidator(_read_hosts)]


def _read_networks(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    networks = []
    for part in (p.strip() for p in value.split(",") if p.strip()):
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(
                f"must be comma-separated networks like 10.0.0.0/8, got {part!r}"
            ) from None
    return tuple(networks)


#: CIDR networks: ``10.0.0.0/8,fd00::/8``.
Networks = Annotated[tuple[IPNetwork, ...], BeforeValidator(_read_networks)]


def _read_limits(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return parse_window_limits(value)
    except ValueError as exc:
        raise ValueError(f"must be CALLS/SECONDS pairs like 3/600,10/86400: {exc}") from None


#: Calls per window: ``3/600,10/86400``.
WindowLimits = Annotated[tuple[WindowLimit, ...], BeforeValidator(_read_limits)]


def _read_prefixes(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    prefixes = tuple(p.strip() for p in value.split(",") if p.strip())
    bad = [p for p in prefixes if not re.fullmatch(r"7[0-9]{0,14}", p)]
    if bad:
        raise ValueError(f"must be comma-separated digit prefixes starting with 7: {bad[0]!r}")
    return prefixes


#: Number prefixes: ``7916,7999``.
Prefixes = Annotated[tuple[str, ...], BeforeValidator(_read_prefixes)]


def _read_named_limits(value: Any, name_rule: str, pattern: str) -> Any:
    if not isinstance(value, str):
        return value
    limits = []
    for part in (p.strip() for p in value.split(",") if p.strip()):
        name, _, limit = part.partition("=")
        if not re.fullmatch(pattern, name.strip()):
            raise ValueError(f"{part!r}: {name_rule}")
        try:
            [window] = parse_window_limits(limit)
        except ValueError:
            raise ValueError(
                f"{part!r}: the limit must be CALLS/SECONDS, whole numbers above 0"
            ) from None
        limits.append((name.strip(), window))
    return tuple(limits)


#: Calls per window per limit key: ``ip=5/3600,account=20/86400`` (a name may repeat).
KeyLimits = Annotated[
    tuple[tuple[str, WindowLimit], ...],
    BeforeValidator(
        lambda v: _read_named_limits(
            v, "the key name must be 1-32 lower-case letters, digits or _", LIMIT_KEY_NAME
        )
    ),
]
#: Calls per window per number prefix: ``7999=100/60,7=2000/60``.
PrefixLimits = Annotated[
    tuple[tuple[str, WindowLimit], ...],
    BeforeValidator(
        lambda v: _read_named_limits(
            v, "the prefix must be 1-15 digits starting with 7", r"7[0-9]{0,14}"
        )
    ),
]

BUDGET_PERIODS = ("day", "month")


def _read_budgets(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    budgets = []
    for part in (p.strip() for p in value.split(",") if p.strip()):
        match = re.fullmatch(r"(?:(7[0-9]{0,14})/)?(day|month)=([0-9]{1,12})", part)
        if match is None or int(match.group(3)) == 0:
            raise ValueError(
                f"{part!r} is not [PREFIX/]day=CALLS or [PREFIX/]month=CALLS "
                "(calls a whole number above 0; PREFIX digits starting with 7)"
            )
        budgets.append(Budget(match.group(1) or "", match.group(2), int(match.group(3))))
    return tuple(budgets)


#: Call budgets: ``day=10000,month=200000,7999/day=100``.
Budgets = Annotated[tuple[Budget, ...], BeforeValidator(_read_budgets)]
