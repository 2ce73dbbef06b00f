"""The published schemas are sound, and ``start_call.v1.json`` says what the worker enforces.

(Real outputs are validated against the other schemas where they are produced: the pipeline,
code-check, raw-producer and webhook tests.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from worker.errors import InvalidRequestError
from worker.validation import START_CALL_FIELDS, parse_start_request

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
START_SCHEMA = json.loads((SCHEMAS / "start_call.v1.json").read_text())


@pytest.mark.parametrize("path", sorted(SCHEMAS.glob("*.json")), ids=lambda p: p.name)
def test_every_schema_is_valid_draft_2020_12(path: Path) -> None:
    schema = json.loads(path.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$id"].endswith("/" + path.name)


def test_the_schema_lists_exactly_the_arguments_start_call_takes() -> None:
    assert set(START_SCHEMA["properties"]) == set(START_CALL_FIELDS)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"dn": "79991234567"},
        {"dn": "799912345678901", "timeout": 99, "request_id": "a.b_c:d-1"},
        {"dn": "79991234567", "timeout": None, "webhook_url": None, "request_id": None},
        {"dn": "79991234567", "webhook_url": "https://hooks.example.com/cb?x=1"},
        {"dn": "7999123456"},  # 10 digits
        {"dn": "7999123456789012"},  # 16 digits
        {"dn": "89991234567"},
        {"dn": "+79991234567"},
        {"dn": 79991234567},
        {"dn": "79991234567", "timeout": 1},
        {"dn": "79991234567", "timeout": 100},
        {"dn": "79991234567", "timeout": "20"},
        {"dn": "79991234567", "timeout": 20.5},
        {"dn": "79991234567", "request_id": ""},
        {"dn": "79991234567", "request_id": "a b"},
        {"dn": "79991234567", "request_id": "x" * 129},
        {"dn": "79991234567", "webhook_url": "ftp://example.com/"},
        {"dn": "79991234567", "webhook_url": "https://example.com/" + "a" * 2048},
        {"dn": "79991234567", "colour": "blue"},
        {"timeout": 20},
    ],
)
def test_schema_and_worker_agree(kwargs: dict[str, Any]) -> None:
    try:
        parse_start_request((), kwargs, default_timeout=20)
        worker_accepts = True
    except InvalidRequestError:
        worker_accepts = False
    schema_accepts = jsonschema.Draft202012Validator(START_SCHEMA).is_valid(kwargs)
    assert schema_accepts == worker_accepts
