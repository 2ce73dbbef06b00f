"""How settings are named in the environment, and the source that reads them.

A field ``poll_interval_s`` is the variable ``CALLPASS_POLL_INTERVAL_S``, exactly: names are
case-sensitive (as the environment is on Linux) and each value reaches the field's rule as
the text it was given; no JSON decoding, since the README's formats (``3/600,10/86400``) are
not JSON.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from pydantic.fields import FieldInfo
from pydantic_settings import PydanticBaseSettingsSource

if TYPE_CHECKING:
    from pydantic_settings import BaseSettings

PREFIX = "CALLPASS_"

# Variables of the simulator, the contract suite and the demo share the prefix but not the model.
OTHER_TOOLS = (
    "CALLPASS_SIM_",
    "CALLPASS_CONTRACT_",
    "CALLPASS_DEMO_",
    "CALLPASS_PROPERTY_",
    "CALLPASS_TEST_",
)


def variable_name(field_name: str) -> str:
    """The environment variable of a settings field: ``api_url`` → ``CALLPASS_API_URL``."""
    return PREFIX + field_name.upper()


def unknown_variables(environ: Mapping[str, str], field_names: Iterable[str]) -> list[str]:
    """``CALLPASS_*`` variables no field reads (typos), sorted; the other tools' are not."""
    known = {variable_name(name) for name in field_names}
    return sorted(
        name
        for name in environ
        if name.startswith(PREFIX) and name not in known and not name.startswith(OTHER_TOOLS)
    )


# The environment a Settings() being built reads: BaseSettings takes no mapping of its own.
_reading: ContextVar[Mapping[str, str] | None] = ContextVar("callpass_settings_environ")


@contextmanager
def reading(environ: Mapping[str, str]) -> Iterator[None]:
    """Within this block (this thread or task), ``Settings()`` reads ``environ`` alone."""
    token = _reading.set(environ)
    try:
        yield
    finally:
        _reading.reset(token)


class EnvironmentSource(PydanticBaseSettingsSource):
    """Each field's variable, as raw text, from the environment :func:`reading` names, else
    ``os.environ``."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        environ = _reading.get(None)
        self._environ = os.environ if environ is None else environ

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        # The model's env_prefix is PREFIX (a test holds them together).
        name = str(self.config.get("env_prefix", "")) + field_name.upper()
        return self._environ.get(name), name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for field_name, field in self.settings_cls.model_fields.items():
            value, _, _ = self.get_field_value(field, field_name)
            if value is not None:
                values[field_name] = value
        return values
