"""The contract models: the refusals start_call answers with, word for word, and a package a
producer can import without the worker."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from referencing import Registry, Resource

from callpass_producer.contracts.events import CallCompleted, CallPlaced
from callpass_producer.contracts.outcome import (
    TIMEOUT_MAX_S,
    TIMEOUT_MIN_S,
    Outcome,
    OutcomeDocument,
)
from callpass_producer.contracts.placed import PlacedInfo
from callpass_producer.contracts.start_call import START_CALL_FIELDS, StartCallArguments
from callpass_producer.contracts.verify import CodeCheck, CodeReason
from worker.api.errors import InvalidRequestError
from worker.pipeline.document import build_outcome
from worker.schemas import SHARED_MODELS
from worker.validation import (
    parse_start_request,
    validate_callid,
    validate_dn,
    validate_request_id,
    validate_timeout,
    validate_webhook_url,
)

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
DN = "79991234567"
KNOWN = f"(known: {', '.join(START_CALL_FIELDS)})"
DN_RULE = "must be 11 to 15 ASCII digits starting with 7, without '+' or spaces"
URL_TYPE_RULE = "must be a URL string of at most 2048 characters"
URL_RULE = "must be an http(s) URL with a host"
REQUEST_ID_RULE = "must be 1 to 128 characters of letters, digits, '.', '_', ':' or '-'"


@pytest.mark.parametrize(
    ("kwargs", "field", "rule"),
    [
        ({}, "dn", "is required"),
        ({"timeout": 1}, "dn", "is required"),
        ({"dn": 79991234567}, "dn", "must be a string of digits, got int"),
        ({"dn": None}, "dn", "must be a string of digits, got NoneType"),
        ({"dn": "+79991234567"}, "dn", DN_RULE),
        ({"dn": "79991234567\n"}, "dn", DN_RULE),
        ({"dn": DN, "timeout": 20.0}, "timeout", "must be a whole number of seconds, got float"),
        ({"dn": DN, "timeout": True}, "timeout", "must be a whole number of seconds, got bool"),
        ({"dn": DN, "timeout": "20"}, "timeout", "must be a whole number of seconds, got str"),
        ({"dn": DN, "timeout": 1}, "timeout", "must be between 2 and 99 seconds"),
        ({"dn": DN, "timeout": 10**40}, "timeout", "must be between 2 and 99 seconds"),
        ({"dn": DN, "webhook_url": 5}, "webhook_url", URL_TYPE_RULE),
        (
            {"dn": DN, "webhook_url": "https://a.example/" + "x" * 2048},
            "webhook_url",
            URL_TYPE_RULE,
        ),
        ({"dn": DN, "webhook_url": "ftp://a.example/"}, "webhook_url", URL_RULE),
        ({"dn": DN, "webhook_url": "http://[::1"}, "webhook_url", URL_RULE),
        ({"dn": DN, "webhook_url": "https://"}, "webhook_url", URL_RULE),
        ({"dn": DN, "request_id": ""}, "request_id", REQUEST_ID_RULE),
        ({"dn": DN, "request_id": 7}, "request_id", REQUEST_ID_RULE),
        # The first broken field in declaration order, and unknown arguments before any.
        ({"dn": "1", "timeout": 1, "request_id": ""}, "dn", DN_RULE),
        ({"dn": DN, "timeout": 1, "request_id": ""}, "timeout", "must be between 2 and 99 seconds"),
        ({"dn": "1", "zeta": 1, "alpha": 2}, "alpha", f"is not an argument of start_call {KNOWN}"),
        ({"x" * 100: 1}, "x" * 64, f"is not an argument of start_call {KNOWN}"),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 20 else None,
)
def test_a_refusal_names_the_field_and_the_rule(
    kwargs: dict[str, Any], field: str, rule: str
) -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse_start_request((), kwargs, default_timeout=20)
    assert (info.value.field, info.value.rule) == (field, rule)
    assert str(info.value) == f"{field}: {rule}"


def test_the_timeout_rule_names_the_bounds_the_model_enforces() -> None:
    # TIMEOUT_MIN_S/MAX_S word the rule; the Timeout type (shared with the documents) enforces.
    bounds = StartCallArguments.model_json_schema()["properties"]["timeout"]["anyOf"][0]
    assert (bounds["minimum"], bounds["maximum"]) == (TIMEOUT_MIN_S, TIMEOUT_MAX_S)
    assert validate_timeout(TIMEOUT_MIN_S) == TIMEOUT_MIN_S
    assert validate_timeout(TIMEOUT_MAX_S) == TIMEOUT_MAX_S


def test_positional_arguments_are_refused_before_anything() -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse_start_request((DN,), {"colour": 1}, default_timeout=20)
    assert (info.value.field, info.value.rule) == (
        "args",
        f"must be empty: pass {', '.join(START_CALL_FIELDS)} as keyword arguments",
    )


def test_a_valid_request_resolves_its_timeout() -> None:
    url = "https://hooks.example.com/cb"
    request = parse_start_request((), {"dn": DN, "webhook_url": url, "request_id": "r"}, 17)
    assert (request.dn, request.timeout, request.webhook_url, request.request_id) == (
        DN,
        17,
        url,
        "r",
    )
    assert parse_start_request((), {"dn": DN, "timeout": 99}, 17).timeout == 99


@pytest.mark.parametrize(
    ("check", "value", "field", "rule"),
    [
        (validate_dn, "7", "dn", DN_RULE),
        (validate_dn, b"79991234567", "dn", "must be a string of digits, got bytes"),
        (validate_timeout, None, "timeout", "must be a whole number of seconds, got NoneType"),
        (validate_timeout, 100, "timeout", "must be between 2 and 99 seconds"),
        (validate_webhook_url, None, "webhook_url", URL_TYPE_RULE),
        (validate_webhook_url, "https:///x", "webhook_url", URL_RULE),
        (validate_request_id, None, "request_id", REQUEST_ID_RULE),
        (validate_callid, "a b", "callid", "must be 1 to 128 letters, digits or '-'"),
    ],
    ids=lambda v: getattr(v, "__name__", None),
)
def test_one_field_on_its_own_is_refused_in_the_same_words(
    check: Any, value: object, field: str, rule: str
) -> None:
    with pytest.raises(InvalidRequestError) as info:
        check(value)
    assert (info.value.field, info.value.rule) == (field, rule)


def test_one_field_on_its_own_passes_through_unchanged() -> None:
    assert validate_dn(DN) == DN and validate_timeout(2) == 2
    assert validate_webhook_url("http://a.example") == "http://a.example"
    assert validate_request_id("a:b") == "a:b" and validate_callid("abc-1") == "abc-1"


def _run(code: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return list(json.loads(out))


def test_the_contracts_import_nothing_of_the_worker() -> None:
    loaded = _run(
        "import json, sys\n"
        "import callpass_producer.contracts.events, callpass_producer.contracts.next_step\n"
        "import callpass_producer.contracts.start_call, callpass_producer.contracts.verify\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    assert not [m for m in loaded if m.split(".")[0] in ("worker", "tasks")]
    assert not {"celery", "redis", "kombu", "jsonschema"} & {m.split(".")[0] for m in loaded}


def test_the_producer_package_pulls_in_nothing_of_the_worker() -> None:
    loaded = _run("import json, sys, callpass_producer\nprint(json.dumps(sorted(sys.modules)))")
    tops = {m.split(".")[0] for m in loaded}
    assert not {"worker", "tasks", "flower", "prometheus_client", "aiohttp"} & tops
    assert "pydantic_settings" not in tops


def test_the_worker_producer_helper_does_not_pull_in_the_worker_runtime() -> None:
    loaded = _run("import json, sys, worker.producer\nprint(json.dumps(sorted(sys.modules)))")
    assert not {"worker.process.wiring", "worker.celery_app", "tasks"} & set(loaded)


def _registry() -> Registry[Any]:
    shared = [json.loads((SCHEMAS / n).read_text()) for n in SHARED_MODELS.values()]
    return Registry().with_resources((s["$id"], Resource.from_contents(s)) for s in shared)


def _valid(instance: dict[str, Any], name: str) -> None:
    schema = json.loads((SCHEMAS / name).read_text())
    jsonschema.Draft202012Validator(schema, registry=_registry()).validate(instance)


def test_events_built_from_the_models_match_their_schemas() -> None:
    at = "2026-12-01T10:00:00.000Z"
    placed = PlacedInfo(request_id="r", callid="c-1", pin="0446", placed_at=at, timeout=20)
    event = CallPlaced(timestamp=at, data=placed).model_dump(mode="json")
    assert event["type"] == "call.placed" and event["data"]["pin"] == "0446"
    _valid(event, "call.placed.v1.json")
    document = OutcomeDocument(
        request_id="r",
        dn_masked="7999***4567",
        callid=None,
        pin=None,
        outcome=Outcome.INVALID,
        call_placed=False,
        raw_result=None,
        api_message=None,
        error={"field": "dn", "rule": DN_RULE},
        timeout=None,
        requested_at=at,
        placed_at=None,
        completed_at=at,
        status_requests=0,
        retry_at=None,
    )
    completed = CallCompleted(timestamp=at, data=document).model_dump(mode="json")
    _valid(completed, "call.completed.v1.json")
    version_2 = build_outcome(
        Outcome.BUSY, completed_at=1.7e9, request_id="r", version=2, verification_id="v"
    )
    assert (version_2.next_step, version_2.verification_id) == ("other_channel", "v")
    _valid(version_2.model_dump(mode="json"), "outcome.v2.json")
    _valid({**completed, "data": version_2.model_dump(mode="json")}, "call.completed.v1.json")
    with pytest.raises(jsonschema.ValidationError):  # a version-1 reader refuses version 2
        _valid(version_2.model_dump(mode="json"), "outcome.v1.json")
    with pytest.raises(jsonschema.ValidationError):
        _valid({**completed, "type": "call.placed"}, "call.completed.v1.json")


@pytest.mark.parametrize("reason", list(CodeReason), ids=str)
def test_every_code_check_answer_matches_its_schema(reason: CodeReason) -> None:
    answer = CodeCheck(valid=reason is CodeReason.OK, reason=reason, attempts_left=2)
    _valid(answer.model_dump(mode="json"), "verify_code.v1.json")
