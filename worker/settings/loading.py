"""Reading the settings, validated, as one :class:`SettingsError` when malformed (nothing is
cached: whoever starts a process reads them once and passes them on)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import ValidationError

from worker.settings.errors import SettingsError, settings_error
from worker.settings.model import Settings
from worker.settings.variables import reading, unknown_variables


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every ``CALLPASS_*`` variable of ``environ`` (``os.environ`` by
    default), caching nothing; raise :class:`SettingsError` naming the variable and the rule.

    Unknown ``CALLPASS_*`` variables (typos) are refused too, except the other tools' own.
    """
    env = os.environ if environ is None else environ
    unknown = unknown_variables(env, Settings.model_fields)
    if unknown:
        raise SettingsError(unknown[0], "is not a known setting (see the README's table)")
    try:
        with reading(env):
            return Settings()
    except ValidationError as exc:
        raise settings_error(exc) from None
