"""Typed settings, read once from ``CALLPASS_*`` environment variables."""

from worker.settings.model import (
    MAX_INLINE_WAIT_S,
    SIMULATOR_DEV_TOKEN,
    START_RETRY_DELAYS_S,
    SecretStr,
    Settings,
    SettingsError,
    get_settings,
    is_rabbitmq,
    reset_settings,
)

__all__ = [
    "MAX_INLINE_WAIT_S",
    "SIMULATOR_DEV_TOKEN",
    "START_RETRY_DELAYS_S",
    "SecretStr",
    "Settings",
    "SettingsError",
    "get_settings",
    "is_rabbitmq",
    "reset_settings",
]
