"""The one error a bad configuration raises: the variable and the rule, on one line."""

from __future__ import annotations

from pydantic import ValidationError

from worker.settings.variables import PREFIX, variable_name


class SettingsError(ValueError):
    """A ``CALLPASS_*`` variable is malformed; the message names it and the rule."""

    def __init__(self, variable: str, rule: str) -> None:
        super().__init__(variable, rule)
        self.variable = variable
        self.rule = rule

    def __str__(self) -> str:
        return f"{self.variable}: {self.rule}"


def settings_error(exc: ValidationError) -> SettingsError:
    """The first problem pydantic found, as a :class:`SettingsError`.

    Built from the rule's own text and the field's name only: pydantic's message would show
    the input, and an input may be a secret.
    """
    first = exc.errors(include_url=False, include_input=False)[0]
    cause = first.get("ctx", {}).get("error")
    if isinstance(cause, SettingsError):  # a rule between settings names its variable
        return cause
    loc = first["loc"]
    variable = variable_name(str(loc[0])) if loc else PREFIX + "*"
    rule = str(cause) if isinstance(cause, ValueError) else first["msg"]
    return SettingsError(variable, rule)
