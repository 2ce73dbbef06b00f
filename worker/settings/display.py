"""A setting's value as ``callpass config`` prints it: in the variable's own syntax, so a
line can be copied back into an environment (``CALLPASS_DN_LIMITS=3/600,10/86400``)."""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from worker.api.limits import Budget, WindowLimit
from worker.masking import redact_setting

__all__ = ["shown_setting"]


def shown_setting(name: str, value: Any) -> str:
    """``value`` of the setting ``name`` written as its variable takes it (secrets hidden,
    URLs without their credentials)."""
    redacted = redact_setting(name, value)
    return _written(redacted)


def _written(value: Any) -> str:
    if isinstance(value, SecretStr):
        return "**********" if value.get_secret_value() else ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, WindowLimit):
        return f"{value.calls}/{_written(float(value.window_s))}"
    if isinstance(value, Budget):
        return f"{value.prefix + '/' if value.prefix else ''}{value.period}={value.calls}"
    if (
        isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], WindowLimit)
    ):
        return f"{value[0]}={_written(value[1])}"  # a named limit: ip=5/3600, 7999=100/60
    if isinstance(value, tuple | list | frozenset | set):
        return ",".join(_written(item) for item in value)
    return "" if value is None else str(value)
