"""``schemas/`` is what the contract models generate, and ``start_call.v1.json`` says what the
worker enforces.

(Real outputs are validated against the other schemas where they are produced: the pipeline,
code-check, raw-producer and webhook tests.)
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import Field

from callpass_producer.contracts.outcome import OutcomeDocument
from callpass_producer.contracts.start_call import StartCallArguments
from worker.api.errors import InvalidRequestError
from worker.schemas import (
    SCHEMA_FILES,
    SchemaFile,
    main,
    render,
    stale_files,
    write_schemas,
)
from worker.validation import START_CALL_FIELDS, parse_start_request

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
START_SCHEMA = json.loads((SCHEMAS / "start_call.v1.json").read_text())


def _ecma_end_anchors(pattern: str) -> str:
    """``pattern`` with each ``$`` anchor as ECMA-262 reads it (the end of the string: ``\\Z``
    in Python, where ``$`` also matches before a final newline)."""
    out, in_class, escaped = [], False, False
    for char in pattern:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char in "[]":
            in_class = char == "["
        elif char == "$" and not in_class:
            char = r"\Z"
        out.append(char)
    return "".join(out)


def _ecma_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Any:
    if validator.is_type(instance, "string") and not re.search(
        _ecma_end_anchors(pattern), instance
    ):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


# A validator in another language, reading what the worker receives. JSON text `20` decodes to
# an int and `20.0` to a float, which the worker refuses; JSON Schema's "integer" is any number
# with a zero fraction, so a validator that follows it to the letter lets 20.0 through (the
# schema's description says so). Patterns are ECMA-262 regular expressions.
JsonTextValidator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    validators={"pattern": _ecma_pattern},
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool)
    ),
)


class OutcomeWithOneMoreField(OutcomeDocument):
    """The outcome document as a change to the model would leave it."""

    channel: str = Field(description="A field the checked-in schema does not have.")


@pytest.mark.parametrize("path", sorted(SCHEMAS.glob("*.json")), ids=lambda p: p.name)
def test_every_schema_is_valid_draft_2020_12(path: Path) -> None:
    schema = json.loads(path.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$id"] == "https://callpass-worker.invalid/schemas/" + path.name
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] and schema["description"]
    assert schema["additionalProperties"] is False


@pytest.mark.parametrize("file", SCHEMA_FILES, ids=lambda f: f.name)
def test_every_checked_in_schema_is_what_its_model_generates(file: SchemaFile) -> None:
    assert (SCHEMAS / file.name).read_text() == render(file), "run `make schemas`"


def test_schemas_holds_no_file_that_no_model_generates() -> None:
    assert stale_files(SCHEMAS) == []
    assert main(["--check"]) == 0


def test_the_stale_check_names_a_model_changed_without_its_schema() -> None:
    changed = tuple(
        replace(f, model=OutcomeWithOneMoreField) if f.model is OutcomeDocument else f
        for f in SCHEMA_FILES
    )
    assert "channel" in render(next(f for f in changed if f.name == "outcome.v1.json"))
    # Only the outcome's file: the events refer to it rather than restating it.
    assert stale_files(SCHEMAS, changed) == [
        f"{SCHEMAS / 'outcome.v1.json'}: stale (not what OutcomeWithOneMoreField generates)"
    ]


def test_check_exits_1_naming_every_stale_missing_and_unknown_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for path in SCHEMAS.glob("*.json"):
        shutil.copy(path, tmp_path)
    outcome = json.loads((tmp_path / "outcome.v1.json").read_text())
    outcome["properties"]["outcome"]["enum"].remove("busy")  # a hand edit
    (tmp_path / "outcome.v1.json").write_text(json.dumps(outcome, indent=2) + "\n")
    (tmp_path / "verify_code.v1.json").unlink()
    (tmp_path / "start_call.v2.json").write_text("{}\n")

    assert main(["--check", "--dir", str(tmp_path)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"{tmp_path / 'outcome.v1.json'}: stale (not what OutcomeDocument generates)",
        f"{tmp_path / 'verify_code.v1.json'}: missing",
        f"{tmp_path / 'start_call.v2.json'}: generated by no model",
        "run `make schemas` and commit the result",
    ]

    assert main(["--dir", str(tmp_path)]) == 0  # regenerates the two; the stray file stays
    assert stale_files(tmp_path) == [f"{tmp_path / 'start_call.v2.json'}: generated by no model"]


def test_writing_changes_only_what_differs(tmp_path: Path) -> None:
    assert sorted(p.name for p in write_schemas(tmp_path)) == sorted(f.name for f in SCHEMA_FILES)
    assert write_schemas(tmp_path) == []
    assert stale_files(tmp_path) == []


def test_the_schema_lists_exactly_the_arguments_start_call_takes() -> None:
    assert tuple(START_SCHEMA["properties"]) == START_CALL_FIELDS
    assert tuple(StartCallArguments.model_fields) == START_CALL_FIELDS


@pytest.mark.parametrize(
    "kwargs",
    [
        {"dn": "79991234567"},
        {"dn": "799912345678901", "timeout": 99, "request_id": "a.b_c:d-1"},
        {"dn": "79991234567", "timeout": None, "webhook_url": None, "request_id": None},
        {"dn": "79991234567", "timeout": 2, "request_id": "x" * 128},
        {"dn": "79991234567", "webhook_url": "https://hooks.example.com/cb?x=1"},
        {"dn": "79991234567", "webhook_url": "http://user:pw@hooks.example.com:8080/cb"},
        {"dn": "79991234567", "webhook_url": "HTTPS://HOOKS.EXAMPLE.COM/cb"},
        {"dn": "79991234567", "webhook_url": "https://[2001:db8::1]:8443/cb"},
        {"dn": "79991234567", "webhook_url": "https://hooks.example.com#frag"},
        {"dn": "7999123456"},  # 10 digits
        {"dn": "7999123456789012"},  # 16 digits
        {"dn": "89991234567"},
        {"dn": "+79991234567"},
        {"dn": "79991234567\n"},
        {"dn": 79991234567},
        {"dn": None},
        {"dn": "79991234567", "timeout": 1},
        {"dn": "79991234567", "timeout": 100},
        {"dn": "79991234567", "timeout": "20"},
        {"dn": "79991234567", "timeout": 20.5},
        {"dn": "79991234567", "timeout": 20.0},
        {"dn": "79991234567", "timeout": True},
        {"dn": "79991234567", "request_id": ""},
        {"dn": "79991234567", "request_id": "a b"},
        {"dn": "79991234567", "request_id": "x" * 129},
        {"dn": "79991234567", "request_id": 42},
        {"dn": "79991234567", "webhook_url": "ftp://example.com/"},
        {"dn": "79991234567", "webhook_url": "https://example.com/" + "a" * 2048},
        {"dn": "79991234567", "webhook_url": "https://"},
        {"dn": "79991234567", "webhook_url": "https:///path"},
        {"dn": "79991234567", "webhook_url": "https://user@/path"},
        {"dn": "79991234567", "webhook_url": "https://:8443/path"},
        {"dn": "79991234567", "webhook_url": "http://[::1"},
        {"dn": "79991234567", "webhook_url": "https:example.com"},
        {"dn": "79991234567", "webhook_url": ""},
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
    schema_accepts = JsonTextValidator(START_SCHEMA).is_valid(kwargs)
    assert schema_accepts == worker_accepts


# URL-ish text from the characters urlsplit cares about (brackets aside: see start_call.py).
URL_PIECES = st.sampled_from(
    [*"hHtTpPsS:/?#@.1a-_ %;=", "https://", "http://", "HTTP://", "example.com", "user@", "\x00"]
)


@settings(max_examples=400, derandomize=True, deadline=None)
@given(
    dn=st.sampled_from(["79991234567", "7" * 15, "7" * 16, "8" * 11, "", None, 7]),
    timeout=st.one_of(st.none(), st.integers(-5, 120), st.floats(1, 100), st.booleans()),
    webhook_url=st.one_of(st.none(), st.lists(URL_PIECES, max_size=10).map("".join)),
    request_id=st.one_of(st.none(), st.text(st.sampled_from("aZ09._:- /\n"), max_size=130)),
)
def test_schema_and_worker_agree_on_generated_arguments(
    dn: object, timeout: object, webhook_url: str | None, request_id: str | None
) -> None:
    kwargs = {"dn": dn, "timeout": timeout, "webhook_url": webhook_url, "request_id": request_id}
    test_schema_and_worker_agree(kwargs)


@pytest.mark.parametrize(
    "kwargs", [{"dn": "79991234567", "timeout": 20.0}, {"dn": "79991234567\n"}], ids=["20.0", "lf"]
)
def test_where_pythons_jsonschema_reads_the_schema_otherwise(kwargs: dict[str, Any]) -> None:
    # Why the table above uses JsonTextValidator: Python's reading of "integer" and of "$".
    assert jsonschema.Draft202012Validator(START_SCHEMA).is_valid(kwargs)
    assert not JsonTextValidator(START_SCHEMA).is_valid(kwargs)
    with pytest.raises(InvalidRequestError):
        parse_start_request((), kwargs, default_timeout=20)


def test_the_schema_says_a_whole_float_is_refused() -> None:
    assert "20.0 is refused" in START_SCHEMA["description"]
