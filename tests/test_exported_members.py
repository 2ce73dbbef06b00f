"""The public surface is explicit: each module's ``__all__`` is pinned here."""

from __future__ import annotations

import importlib

import pytest

EXPECTED = {
    "worker": ["__version__"],
    "worker.api.client": ["CallPassClient", "CallStatus", "StartedCall"],
    "worker.api.errors": [
        "ApiRejectedError",
        "AuthError",
        "CallPassError",
        "ConnectError",
        "ConnectionLostError",
        "DeadlinePassedError",
        "InvalidRequestError",
        "MalformedResponseError",
        "OutcomeUnknownError",
        "PermanentError",
        "RateLimitedError",
        "ReadTimeoutError",
        "ServerError",
        "TransientError",
    ],
    "worker.api.results": ["classify_result", "is_in_progress"],
    "worker.producer": ["default_outbox", "verifier_from_settings"],
    # The producer package's surface: what a producing service imports.
    "callpass_producer": [
        "CODE_QUEUE_SUFFIX",
        "DEFAULT_QUEUE",
        "PLACED",
        "START_TASK",
        "VERIFY_TASK",
        "InvalidArguments",
        "OutboxNotes",
        "Verification",
        "Verifier",
        "enqueue_call",
        "verify_code",
        "wait_for_pin",
    ],
    # What a Python webhook receiver uses (standard library only).
    "worker.webhooks.signature": [
        "SECRET_PREFIX",
        "WebhookVerificationError",
        "generate_secret",
        "parse_secret",
        "sign",
        "signature_headers",
        "verify_delivery",
    ],
    "worker.settings": [
        "SIMULATOR_DEV_TOKEN",
        "SecretStr",
        "Settings",
        "SettingsError",
        "is_rabbitmq",
        "load_settings",
    ],
    # Declared on an app by worker.celery_app.create_app, not at import.
    "tasks": ["register_call_tasks", "register_webhook_tasks"],
    "simulator": [
        "CallBook",
        "FaultConfig",
        "MixEntry",
        "SimulatorConfig",
        "build_app",
        "parse_mix",
    ],
}


@pytest.mark.parametrize("module", sorted(EXPECTED))
def test_all_is_pinned(module: str) -> None:
    mod = importlib.import_module(module)
    assert sorted(mod.__all__) == sorted(EXPECTED[module])
    for name in mod.__all__:
        assert hasattr(mod, name), f"{module}.{name} is in __all__ but missing"
