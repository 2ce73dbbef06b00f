"""Settings are read once, typed, and refuse malformed values by name and rule."""

from __future__ import annotations

import subprocess
import sys

import pytest

from worker.dev.stack import child_env
from worker.settings import SIMULATOR_DEV_TOKEN, SettingsError, load_settings

SECRET = "a" * 63 + "Z"  # malformed (upper case), and must never be echoed


def test_defaults_suit_local_use() -> None:
    settings = load_settings({})
    assert settings.api_url == "http://127.0.0.1:8099/"
    assert settings.uses_simulator_token
    assert settings.effective_broker_url == settings.redis_url == settings.effective_result_backend
    assert settings.tls_verify is True


@pytest.mark.parametrize(
    ("variable", "value", "rule_part"),
    [
        ("CALLPASS_API_TOKEN", SECRET, "lower-case hex"),
        ("CALLPASS_API_TOKEN", "abc", "32 or 64"),
        ("CALLPASS_API_URL", "ftp://example.invalid/", "scheme https or http"),
        ("CALLPASS_API_URL", "not a url", "scheme"),
        ("CALLPASS_REDIS_URL", "http://127.0.0.1:6379", "scheme redis"),
        ("CALLPASS_READ_TIMEOUT_S", "soon", "must be a number"),
        ("CALLPASS_READ_TIMEOUT_S", "0", "between"),
        ("CALLPASS_HTTP_ATTEMPTS", "2.5", "whole number"),
        ("CALLPASS_DEFAULT_CALL_TIMEOUT_S", "100", "between 2 and 99"),
        ("CALLPASS_INSECURE_SKIP_TLS_VERIFY", "maybe", "true or false"),
        ("CALLPASS_LOG_LEVEL", "LOUD", "one of"),
        ("CALLPASS_QUEUE", "has space", "characters"),
        ("CALLPASS_CA_BUNDLE", "/nonexistent.pem", "existing file"),
        ("CALLPASS_VISIBILITY_TIMEOUT_S", "60", "longest countdown"),
        ("CALLPASS_WEBHOOK_QUEUE", "callpass.polls", "must differ from the calls' queues"),
        ("CALLPASS_API_URL", "http://api.example.invalid/", "must be https"),
        ("CALLPASS_API_TOKNE", SIMULATOR_DEV_TOKEN, "not a known setting"),
        ("CALLPASS_CALL_BUDGETS", "week=100", "[PREFIX/]day=CALLS"),
        ("CALLPASS_CALL_BUDGETS", "day=0", "above 0"),
        ("CALLPASS_CALL_BUDGETS", "+7999/day=5", "[PREFIX/]day=CALLS"),
        ("CALLPASS_CALL_BUDGETS", "day=-5", "[PREFIX/]day=CALLS"),
        ("CALLPASS_KEY_LIMITS", "IP=5/60", "key name"),
        ("CALLPASS_KEY_LIMITS", "ip=5", "CALLS/SECONDS"),
        ("CALLPASS_KEY_LIMITS", "ip=0/60", "CALLS/SECONDS"),
        ("CALLPASS_PREFIX_LIMITS", "8999=5/60", "prefix"),
        ("CALLPASS_RESEND_COOLDOWNS_S", "soon", "comma-separated seconds"),
        ("CALLPASS_RESEND_MAX_CALLS", "0", "between 1 and 20"),
        ("CALLPASS_CODE_LIVE_CALLS", "many", "whole number"),
        ("CALLPASS_FALLBACK_QUEUE", "has space", "characters"),
        ("CALLPASS_METRICS_PREFIX_DIGITS", "16", "between 1 and 15"),
    ],
)
def test_malformed_values_name_the_variable_and_the_rule(
    variable: str, value: str, rule_part: str
) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({variable: value})
    assert info.value.variable == variable
    assert rule_part in info.value.rule
    assert SECRET not in str(info.value)


def test_token_is_accepted_in_both_lengths_and_never_shown() -> None:
    for token in ("b" * 32, "c" * 64):
        settings = load_settings({"CALLPASS_API_TOKEN": token})
        assert settings.api_token.get_secret_value() == token
        assert token not in repr(settings) and token not in str(settings.api_token)
        assert not settings.uses_simulator_token


def test_plain_http_is_for_loopback_or_needs_the_setting_that_says_so() -> None:
    assert load_settings({"CALLPASS_API_URL": "http://127.0.0.1:9/"}).api_url
    assert load_settings({"CALLPASS_API_URL": "http://[::1]:9/"}).api_url
    settings = load_settings(
        {"CALLPASS_API_URL": "http://sim:8099/", "CALLPASS_INSECURE_ALLOW_HTTP": "true"}
    )
    assert settings.api_url == "http://sim:8099/"


def test_skipping_tls_verification_needs_the_setting_that_says_so() -> None:
    from worker.process.signals import startup_warnings

    insecure = load_settings({"CALLPASS_INSECURE_SKIP_TLS_VERIFY": "true"})
    assert insecure.tls_verify is False
    assert any("NOT checked" in w for w in startup_warnings(insecure))
    assert startup_warnings(load_settings({})) == []


def test_a_worker_with_a_malformed_setting_does_not_start() -> None:
    """The worker stops at import, before taking a message, and says which variable is wrong."""
    proc = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "--pool", "solo"],
        env=child_env(
            {"CALLPASS_API_TOKEN": SECRET, "CALLPASS_REDIS_URL": "redis://127.0.0.1:1/0"}
        ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "CALLPASS_API_TOKEN" in output and "lower-case hex" in output
    assert SECRET not in output


def test_webhook_deadline_and_lease_default_from_the_timeout() -> None:
    settings = load_settings({"CALLPASS_WEBHOOK_TIMEOUT_S": "20"})
    assert settings.effective_webhook_deadline_s == 40
    assert settings.effective_webhook_lease_s == 120
    assert load_settings({}).webhook_concurrency == 4


@pytest.mark.parametrize(
    "env",
    [
        {"CALLPASS_WEBHOOK_DEADLINE_S": "55"},  # the default lease is 60 s
        {"CALLPASS_WEBHOOK_LEASE_S": "30", "CALLPASS_WEBHOOK_DEADLINE_S": "25"},
        {"CALLPASS_WEBHOOK_LEASE_S": "15"},  # the default deadline is 10 s
    ],
)
def test_a_webhook_lease_must_outlast_the_attempt_deadline(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(env)
    assert caught.value.variable == "CALLPASS_WEBHOOK_LEASE_S"
    assert "CALLPASS_WEBHOOK_DEADLINE_S" in caught.value.rule


@pytest.mark.parametrize(
    ("variable", "value", "rule_part"),
    [
        ("CALLPASS_WEBHOOK_CONCURRENCY", "0", "between 1 and 1000"),
        ("CALLPASS_WEBHOOK_CONCURRENCY", "two", "whole number"),
        ("CALLPASS_WEBHOOK_DEADLINE_S", "0.1", "0 (the default) or between 0.5"),
        ("CALLPASS_WEBHOOK_DEADLINE_S", "-1", "between 0 and 600"),
        ("CALLPASS_WEBHOOK_LEASE_S", "5", "0 (the default) or between 10"),
    ],
)
def test_malformed_webhook_limits_name_the_variable_and_the_rule(
    variable: str, value: str, rule_part: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({variable: value})
    assert caught.value.variable == variable
    assert rule_part in caught.value.rule


@pytest.mark.parametrize(
    ("value", "entry"),
    [
        ("admin:long-enough,", 2),  # a trailing comma: Flower would admit an empty login
        (",admin:long-enough", 1),
        ("admin:long-enough,,ops:also-long-enough", 2),
        ("admin:long-enough,ops:", 2),
        ("admin:long-enough,ops:        ", 2),  # blank
        ("admin:short", 1),
        (":long-enough", 1),
        ("  :long-enough", 1),
        ("admin", 1),
        ("admin:long-enough,ops:l\u00f6ng-enough", 2),  # Flower cannot compare non-ASCII
    ],
)
def test_every_flower_login_entry_is_checked(value: str, entry: int) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({"CALLPASS_FLOWER_BASIC_AUTH": value})
    assert info.value.variable == "CALLPASS_FLOWER_BASIC_AUTH"
    assert f"entry #{entry} must be user:password" in info.value.rule
    assert "long-enough" not in str(info.value)  # the rule, never the password


def test_flower_logins_that_need_a_password_are_accepted() -> None:
    for value in ("", "admin:long-enough", "admin:long-enough,ops:an0ther-one:with-colon"):
        login = load_settings({"CALLPASS_FLOWER_BASIC_AUTH": value}).flower_basic_auth
        assert login.get_secret_value() == value


def test_a_malformed_test_number_is_refused_without_showing_its_pin() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({"CALLPASS_TEST_NUMBERS": "79990000001:1234,79990000002:98x6"})
    assert info.value.variable == "CALLPASS_TEST_NUMBERS"
    assert "entry 2 must be NUMBER:PIN" in info.value.rule
    assert "98x6" not in str(info.value) and "1234" not in str(info.value)
    settings = load_settings({"CALLPASS_TEST_NUMBERS": "79990000001:1234"})
    assert "1234" not in repr(settings)
