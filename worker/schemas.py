"""``schemas/*.json``, generated from the contract models (JSON Schema draft 2020-12).

    python -m worker.schemas           # (re)write them: ``make schemas``
    python -m worker.schemas --check   # exit 1 naming every stale file

Each file stands alone but for the models that have a file of their own (the PLACED info and
the outcome document): the webhook events refer to those files instead of restating them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, JsonSchemaValue
from pydantic_core import core_schema

from callpass_producer.contracts.events import CallCompleted, CallPlaced
from callpass_producer.contracts.outcome import OutcomeDocument, OutcomeDocumentV2
from callpass_producer.contracts.placed import PlacedInfo
from callpass_producer.contracts.start_call import StartCallArguments
from callpass_producer.contracts.verify import CodeCheck

__all__ = [
    "SCHEMAS_DIR",
    "SCHEMA_BASE",
    "SCHEMA_FILES",
    "SHARED_MODELS",
    "SchemaFile",
    "main",
    "render",
    "schema_of",
    "stale_files",
    "write_schemas",
]

SCHEMA_BASE: Final = "https://callpass-worker.invalid/schemas/"
#: The checked-in schemas, beside the package in a source checkout.
SCHEMAS_DIR: Final = Path(__file__).resolve().parents[1] / "schemas"


@dataclass(frozen=True)
class SchemaFile:
    """One file of ``schemas/``: the model it describes, as sent (or as accepted)."""

    name: str
    model: type[BaseModel]
    #: "validation" for what the worker accepts, "serialization" for what it sends.
    mode: JsonSchemaMode = "serialization"


SCHEMA_FILES: Final = (
    SchemaFile("start_call.v1.json", StartCallArguments, "validation"),
    SchemaFile("placed.v1.json", PlacedInfo),
    SchemaFile("outcome.v1.json", OutcomeDocument),
    SchemaFile("outcome.v2.json", OutcomeDocumentV2),
    SchemaFile("call.placed.v1.json", CallPlaced),
    SchemaFile("call.completed.v1.json", CallCompleted),
    SchemaFile("verify_code.v1.json", CodeCheck),
)

#: Models with a file of their own, which other schemas refer to by a relative ``$ref``.
SHARED_MODELS: Final[Mapping[type[BaseModel], str]] = {
    PlacedInfo: "placed.v1.json",
    OutcomeDocument: "outcome.v1.json",
    OutcomeDocumentV2: "outcome.v2.json",
}

# Stands in for a "$ref" to another file while pydantic generates (it owns every "$ref").
_FILE_REF: Final = "x-callpass-file-ref"
_SCALARS: Final = frozenset({"string", "integer", "number", "boolean"})
_COMBINERS: Final = frozenset({"$ref", "const", "enum", "anyOf", "oneOf", "allOf", "not"})
# Keys in reading order; any other key follows, alphabetically.
_KEY_ORDER: Final = (
    "$schema",
    "$id",
    "title",
    "description",
    "type",
    "const",
    "enum",
    "format",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "default",
    "additionalProperties",
    "required",
    "properties",
    "anyOf",
)


class _ContractJsonSchema(GenerateJsonSchema):
    """pydantic's generator, tuned for documents people read and other languages validate."""

    def __init__(self, root: type[BaseModel], shared: Mapping[type[BaseModel], str]) -> None:
        super().__init__(by_alias=True)
        self._root = root
        self._shared = shared

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False  # "Request Id" restates the property name

    def field_is_required(self, field: Any, total: bool) -> bool:
        # What the worker sends always has every field (null when it has no value).
        return self.mode == "serialization" or super().field_is_required(field, total)

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        if self.mode == "serialization":
            return self.generate_inner(schema["schema"])
        return super().default_schema(schema)

    def nullable_schema(self, schema: core_schema.NullableSchema) -> JsonSchemaValue:
        inner = self.generate_inner(schema["schema"])
        kind = inner.get("type")
        # A scalar's keywords (pattern, maximum, ...) do not apply to null: one type list reads
        # better than anyOf.
        if isinstance(kind, str) and kind in _SCALARS and not inner.keys() & _COMBINERS:
            return {**inner, "type": [kind, "null"]}
        return {"anyOf": [inner, {"type": "null"}]}

    def model_schema(self, schema: core_schema.ModelSchema) -> JsonSchemaValue:
        cls = schema["cls"]
        if cls is not self._root and cls in self._shared:
            return {_FILE_REF: self._shared[cls]}
        return super().model_schema(schema)


def schema_of(
    file: SchemaFile, shared: Mapping[type[BaseModel], str] = SHARED_MODELS
) -> dict[str, Any]:
    """The JSON Schema of ``file`` as a dict, ``$defs`` inlined."""
    generator = _ContractJsonSchema(file.model, shared)
    generated = generator.generate(file.model.__pydantic_core_schema__, mode=file.mode)
    definitions = generated.pop("$defs", {})
    body = _inlined(generated, definitions, ())
    header = {"$schema": generator.schema_dialect, "$id": SCHEMA_BASE + file.name}
    schema: dict[str, Any] = _ordered({**header, **body})
    return schema


def render(file: SchemaFile, shared: Mapping[type[BaseModel], str] = SHARED_MODELS) -> str:
    """The text of ``file`` as it is checked in."""
    return json.dumps(schema_of(file, shared), indent=2, ensure_ascii=False) + "\n"


def _inlined(node: Any, definitions: Mapping[str, Any], seen: tuple[str, ...]) -> Any:
    if isinstance(node, list):
        return [_inlined(item, definitions, seen) for item in node]
    if not isinstance(node, dict):
        return node
    if _FILE_REF in node:
        return {"$ref": node[_FILE_REF]}
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        name = ref.removeprefix("#/$defs/")
        if name in seen:
            raise ValueError(f"recursive model {name}: a schema file cannot inline it")
        target = _inlined(definitions[name], definitions, (*seen, name))
        siblings = {k: _inlined(v, definitions, seen) for k, v in node.items() if k != "$ref"}
        return {**target, **siblings}
    return {k: _inlined(v, definitions, seen) for k, v in node.items()}


def _ordered(node: Any, *, keys_are_names: bool = False) -> Any:
    if isinstance(node, list):
        return [_ordered(item) for item in node]
    if not isinstance(node, dict):
        return node
    if keys_are_names:  # "properties": keep the model's field order
        return {k: _ordered(v) for k, v in node.items()}
    rank = {key: i for i, key in enumerate(_KEY_ORDER)}
    keys = sorted(node, key=lambda k: (rank.get(k, len(rank)), k))
    return {k: _ordered(node[k], keys_are_names=k == "properties") for k in keys}


def stale_files(directory: Path, files: Iterable[SchemaFile] = SCHEMA_FILES) -> list[str]:
    """Why each file of ``directory`` is not what the models generate, one line per file."""
    files = list(files)
    problems = []
    for file in files:
        path = directory / file.name
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif path.read_text(encoding="utf-8") != render(file):
            problems.append(f"{path}: stale (not what {file.model.__name__} generates)")
    generated = {file.name for file in files}
    problems += [
        f"{path}: generated by no model"
        for path in sorted(directory.glob("*.json"))
        if path.name not in generated
    ]
    return problems


def write_schemas(directory: Path, files: Iterable[SchemaFile] = SCHEMA_FILES) -> list[Path]:
    """Write every file that differs from what its model generates; return those written."""
    written = []
    directory.mkdir(parents=True, exist_ok=True)
    for file in files:
        path = directory / file.name
        text = render(file)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m worker.schemas", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if any file is stale")
    parser.add_argument("--dir", type=Path, default=SCHEMAS_DIR, help="default: %(default)s")
    args = parser.parse_args(argv)
    if args.check:
        problems = stale_files(args.dir)
        for line in problems:
            print(line, file=sys.stderr)
        if problems:
            print("run `make schemas` and commit the result", file=sys.stderr)
        return 1 if problems else 0
    for path in write_schemas(args.dir):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
