"""Typed settings from ``CALLPASS_*`` environment variables (pydantic-settings), read by
whoever starts a process and passed on from there.

A malformed value raises :class:`SettingsError` naming the variable and the rule, so a
worker with a bad configuration refuses to start instead of failing on the first call.

- :mod:`.model`: the :class:`Settings` fields, their defaults and derived values;
- :mod:`.rules`, :mod:`.lists`: each field's rule (how its text is read and checked);
- :mod:`.consistency`: rules between settings;
- :mod:`.variables`: variable names and the environment source;
- :mod:`.errors`, :mod:`.loading`: the one-line error, and reading the settings.
"""

from __future__ import annotations

from pydantic import SecretStr

from worker.settings.errors import SettingsError
from worker.settings.loading import load_settings
from worker.settings.model import SIMULATOR_DEV_TOKEN, Settings, is_rabbitmq

__all__ = [
    "SIMULATOR_DEV_TOKEN",
    "SecretStr",
    "Settings",
    "SettingsError",
    "is_rabbitmq",
    "load_settings",
]
