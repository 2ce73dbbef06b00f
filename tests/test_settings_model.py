"""The settings model is declared once: the README's table agrees with it, secrets never show."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from worker.settings import Settings, SettingsError, load_settings
from worker.settings.variables import OTHER_TOOLS, PREFIX, variable_name

README = Path(__file__).resolve().parents[1] / "README.md"
_ROW_RE = re.compile(r"^\| `(CALLPASS_[A-Z0-9_]+)` \| ([^|]*) \|", re.M)
_LITERAL_RE = re.compile(r"^`([^`]*)`")


def _configuration_table() -> dict[str, str]:
    """Variable → default cell of the README's configuration table."""
    section = README.read_text(encoding="utf-8").split("\n## Configuration\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    rows = _ROW_RE.findall(section)
    names = [name for name, _ in rows]
    assert len(names) == len(set(names)), "a variable has two rows"
    return {name: cell.strip() for name, cell in rows}


MODEL_VARIABLES = {variable_name(name): name for name in Settings.model_fields}


def test_the_readme_table_lists_every_setting_and_no_other() -> None:
    table = _configuration_table()
    assert sorted(set(MODEL_VARIABLES) - set(table)) == [], "settings missing from the README"
    assert sorted(set(table) - set(MODEL_VARIABLES)) == [], "README rows no setting reads"


@pytest.mark.parametrize("variable", sorted(MODEL_VARIABLES))
def test_the_readme_gives_each_default_as_the_model_has_it(variable: str) -> None:
    """A default is written as the value one would set (``3/600,10/86400``), which reads back
    to the model's default; secrets and empty (derived or off) defaults are described."""
    field_name = MODEL_VARIABLES[variable]
    field = Settings.model_fields[field_name]
    cell = _configuration_table()[variable]
    if field.annotation is SecretStr:
        assert cell.startswith("("), f"{variable}: a secret's default is described, not shown"
        return
    if field.default in ("", ()):
        assert cell.startswith(("(", "= ")), f"{variable}: an empty default is described"
        return
    literal = _LITERAL_RE.match(cell)
    assert literal, f"{variable}: the default {field.default!r} is missing from its cell"
    read_back = getattr(load_settings({variable: literal.group(1)}), field_name)
    assert read_back == field.default, f"{variable}: README {cell!r}, model {field.default!r}"


def test_the_readme_mentions_no_variable_that_nothing_reads() -> None:
    mentioned = set(re.findall(r"CALLPASS_[A-Z0-9_]+", README.read_text("utf-8")))
    unknown = {n for n in mentioned - set(MODEL_VARIABLES) if not n.startswith(OTHER_TOOLS)}
    assert sorted(unknown) == []


def test_the_model_reads_the_prefix_it_declares() -> None:
    assert Settings.model_config.get("env_prefix") == PREFIX == "CALLPASS_"


# --- secrets never show ----------------------------------------------------------------------

TOKEN = "d" * 64
HASH_KEY = "pin-hash-key-0123456789"
WEBHOOK_SECRET = "whsec_" + "c2VjcmV0LXNpZ25pbmcta2V5LWJ5dGVzLTEyMzQ1Njc4"
LOGIN = "admin:flower-password-1"
URL_PASSWORD = "url-password-42"
SECRETS = (TOKEN, HASH_KEY, WEBHOOK_SECRET, "flower-password-1", URL_PASSWORD, "hook-token-7")
ENV = {
    "CALLPASS_API_TOKEN": TOKEN,
    "CALLPASS_PIN_HASH_KEY": HASH_KEY,
    "CALLPASS_WEBHOOK_SECRETS": WEBHOOK_SECRET,
    "CALLPASS_FLOWER_BASIC_AUTH": LOGIN,
    "CALLPASS_REDIS_URL": f"redis://:{URL_PASSWORD}@redis.internal:6379/0",
    "CALLPASS_BROKER_URL": f"amqp://user:{URL_PASSWORD}@rabbit.internal:5672/vhost",
    "CALLPASS_RESULT_BACKEND": f"rediss://:{URL_PASSWORD}@results.internal:6380/1",
    "CALLPASS_WEBHOOK_URL": "https://hooks.example.com/services/hook-token-7",
}


def test_the_secrets_are_read() -> None:
    settings = load_settings(ENV)
    assert settings.api_token.get_secret_value() == TOKEN
    assert settings.pin_hash_key.get_secret_value() == HASH_KEY
    assert settings.webhook_secrets.get_secret_value() == WEBHOOK_SECRET
    assert settings.flower_basic_auth.get_secret_value() == LOGIN
    assert URL_PASSWORD in settings.redis_url and settings.webhook_keys


@pytest.mark.parametrize(
    "show",
    [
        repr,
        str,
        lambda s: str(s.model_dump()),
        lambda s: str(s.model_dump(mode="json")),
        lambda s: s.model_dump_json(),
    ],
    ids=["repr", "str", "model_dump", "model_dump_json_mode", "model_dump_json"],
)
def test_no_secret_shows_in_what_settings_print_or_dump(show: object) -> None:
    assert callable(show)
    shown = show(load_settings(ENV))
    assert "redis.internal" in shown and "hooks.example.com" in shown  # the rest does show
    for secret in SECRETS:
        assert secret not in shown


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CALLPASS_API_TOKEN", TOKEN.upper()),
        ("CALLPASS_PIN_HASH_KEY", "short-secret"),
        ("CALLPASS_WEBHOOK_SECRETS", "whsec_not!base64-secret-value"),
        ("CALLPASS_FLOWER_BASIC_AUTH", "admin:flower-password-1,ops:shortpw"),
        ("CALLPASS_REDIS_URL", f"redis://h:6379/0?password={URL_PASSWORD}"),
    ],
)
def test_no_secret_shows_in_an_error(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({variable: value})
    assert info.value.variable == variable
    assert value not in str(info.value) and URL_PASSWORD not in str(info.value)
    assert "flower-password-1" not in str(info.value) and "shortpw" not in str(info.value)
    assert info.value.__cause__ is None  # pydantic's error (it holds the input) is not chained


def test_building_settings_in_python_meets_the_same_rules_and_hides_the_input() -> None:
    assert Settings(poll_grace_s=3).poll_grace_s == 3.0
    with pytest.raises(ValidationError) as info:
        Settings(api_token=SecretStr(TOKEN.upper()))
    assert "lower-case hex" in str(info.value) and TOKEN.upper() not in str(info.value)


# --- reading -----------------------------------------------------------------------------------


def test_load_settings_reads_only_the_mapping_it_is_given_and_caches_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CALLPASS_QUEUE", "from-the-environment")
    assert load_settings({}).queue == "callpass"
    assert load_settings({"CALLPASS_QUEUE": "given"}).queue == "given"
    assert load_settings().queue == "from-the-environment"
    monkeypatch.setenv("CALLPASS_QUEUE", "changed")
    assert load_settings().queue == "changed"


def test_variable_names_are_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("callpass_queue", "lower-case")
    monkeypatch.delenv("CALLPASS_QUEUE", raising=False)
    assert load_settings().queue == "callpass"
    assert Settings().queue == "callpass"  # the model's own source reads the same way
    with pytest.raises(SettingsError) as info:
        load_settings({"CALLPASS_QUEUE": "ok", "CALLPASS_Queue": "typo"})
    assert info.value.variable == "CALLPASS_Queue"


def test_the_first_malformed_variable_in_the_models_order_is_named() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({"CALLPASS_POLL_GRACE_S": "soon", "CALLPASS_QUEUE": "has space"})
    assert info.value.variable == "CALLPASS_QUEUE"  # queue comes first, as before


def test_settings_are_frozen_and_comparable() -> None:
    settings = load_settings({})
    with pytest.raises(ValidationError):
        settings.queue = "other"  # type: ignore[misc]
    assert settings == load_settings({}) and hash(settings) == hash(load_settings({}))
