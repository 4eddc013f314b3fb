"""Generate the CustomResourceDefinitions in crds/ from the pydantic models in `api/`.

    python -m finetune_operator.crdgen --out crds/      # write crds/finetune.ai_<plural>.yaml
    python -m finetune_operator.crdgen --check          # exit 1 with a diff when crds/ is stale

The API server only accepts *structural* OpenAPI v3 schemas, which pydantic's JSON Schema
(2020-12) is not: it uses `$ref`/`$defs`, expresses Optional as `anyOf [X, null]`, numeric
`exclusiveMinimum`, `additionalProperties: false` and free-form `{}` nodes. This module
rewrites one into the other: references are inlined, Optional becomes a plain optional field
(an explicit null is pruned by the API server), `int | str` becomes
`x-kubernetes-int-or-string`, free-form objects get `x-kubernetes-preserve-unknown-fields`,
titles are dropped and descriptions, defaults, bounds, enums and the CEL rules attached to the
models are kept. A JSON Schema keyword it does not know is an error, so a constraint is never
lost silently. The output is sorted, so it only changes when the models do.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from finetune_operator.api import GROUP, KINDS, VERSION
from finetune_operator.api.common import KindInfo, Resource

HEADER = (
    "# Generated from finetune_operator.api by `python -m finetune_operator.crdgen --out crds/`"
    " (make crds).\n# Do not edit: change the models and regenerate.\n"
)

# Keywords copied as they are (after their sub-schemas are converted).
_PASSTHROUGH = {
    "description",
    "type",
    "format",
    "enum",
    "default",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "required",
    "nullable",
    "x-kubernetes-validations",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
}
_DROPPED = {"title", "$defs"}
# Formats the API server validates; pydantic may emit others (e.g. "uri") that it would not know.
_KNOWN_FORMATS = {"date-time", "date", "byte", "int32", "int64", "float", "double", "duration"}


class SchemaError(ValueError):
    """The model uses a construct that has no structural OpenAPI equivalent."""


def structural(schema: dict[str, Any], defs: dict[str, Any] | None = None, path: str = "") -> dict[str, Any]:
    """Rewrite one pydantic JSON Schema node (and its children) into a structural schema node."""
    defs = schema.get("$defs", {}) if defs is None else defs
    node = _resolve(schema, defs, path)

    if "anyOf" in node:
        node = _collapse_any_of(node, defs, path)
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if node.get("default", ...) is None:
        del node["default"]

    result: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED:
            continue
        if key == "properties":
            result["properties"] = {
                name: structural(child, defs, f"{path}.{name}") for name, child in value.items()
            }
        elif key == "items":
            result["items"] = structural(value, defs, f"{path}[]")
        elif key == "additionalProperties":
            if value is True:
                result["x-kubernetes-preserve-unknown-fields"] = True
            elif isinstance(value, dict):
                result["additionalProperties"] = structural(value, defs, f"{path}{{}}")
            # False (extra="forbid"): the API server prunes or, with strict field validation,
            # rejects unknown fields anyway; structural schemas may not say so explicitly.
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            result[bound] = value
            result[key] = True
        elif key == "format":
            if value in _KNOWN_FORMATS:
                result["format"] = value
        elif key in _PASSTHROUGH:
            result[key] = copy.deepcopy(value)
        else:
            raise SchemaError(f"{path or '<root>'}: JSON Schema keyword {key!r} has no structural equivalent")

    if "required" in result:
        result["required"] = sorted(result["required"])
    if not result.get("type") and not result.get("x-kubernetes-int-or-string"):
        # `Any`: a free-form value of any type.
        result["x-kubernetes-preserve-unknown-fields"] = True
    elif (
        result.get("type") == "object" and "properties" not in result and "additionalProperties" not in result
    ):
        if (
            not result.get("x-kubernetes-preserve-unknown-fields")
            and node.get("additionalProperties") is not False
        ):
            result["x-kubernetes-preserve-unknown-fields"] = True
    return result


def _resolve(node: dict[str, Any], defs: dict[str, Any], path: str) -> dict[str, Any]:
    """Inline `$ref` (and pydantic's older `allOf: [{$ref}]`); the referring node's keys win."""
    node = dict(node)
    if "allOf" in node:
        parts = node.pop("allOf")
        if len(parts) != 1:
            raise SchemaError(f"{path}: allOf with {len(parts)} parts")
        node = {**parts[0], **node}
    while "$ref" in node:
        ref = node.pop("$ref")
        name = ref.rsplit("/", 1)[-1]
        if name not in defs:
            raise SchemaError(f"{path}: unresolved reference {ref}")
        node = {**copy.deepcopy(defs[name]), **node}
    return node


def _collapse_any_of(node: dict[str, Any], defs: dict[str, Any], path: str) -> dict[str, Any]:
    """Optional[X] -> X; int | str -> int-or-string. Anything else is not structural."""
    node = dict(node)
    branches = [_resolve(branch, defs, path) for branch in node.pop("anyOf")]
    branches = [branch for branch in branches if branch.get("type") != "null"]
    if len(branches) == 1:
        merged = {**branches[0], **node}
        if "anyOf" in merged:
            return _collapse_any_of(merged, defs, path)
        return merged
    types = sorted(branch.get("type", "") for branch in branches)
    if types == ["integer", "string"]:
        merged = dict(node)
        for branch in branches:
            merged.update({key: value for key, value in branch.items() if key not in ("type", "title")})
        merged["x-kubernetes-int-or-string"] = True
        return merged
    raise SchemaError(f"{path}: a union of {types} has no structural equivalent")


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural schema of one model (validation side, camelCase aliases)."""
    return structural(model.model_json_schema(by_alias=True, mode="validation"))


def crd(kind: type[Resource]) -> dict[str, Any]:
    """The CustomResourceDefinition of one kind."""
    info: KindInfo = kind.KIND_INFO
    fields = kind.model_fields
    spec_model = _model_of(kind, "spec")
    status_model = _model_of(kind, "status")
    spec_schema = model_schema(spec_model)
    spec_schema["description"] = fields["spec"].description or spec_schema.get("description", "")
    status_schema = model_schema(status_model)
    status_schema["description"] = fields["status"].description or status_schema.get("description", "")
    root: dict[str, Any] = {
        "type": "object",
        "description": _clean_doc(kind.__doc__),
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": "Versioned schema of this representation of an object (finetune.ai/v1alpha1).",
            },
            "kind": {"type": "string", "description": f"Kind of the object ({info.kind})."},
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": status_schema,
        },
        "required": ["spec"],
    }
    if info.rules:
        root["x-kubernetes-validations"] = [dict(rule) for rule in info.rules]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": info.crd_name,
            "labels": {"app.kubernetes.io/part-of": "finetune-operator"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": info.singular,
                "shortNames": list(info.short_names),
                "categories": list(info.categories),
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {
                            "name": column.name,
                            "type": column.type,
                            "jsonPath": column.json_path,
                            "description": column.description,
                            **({"priority": column.priority} if column.priority else {}),
                        }
                        for column in info.printer_columns
                    ],
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def _model_of(kind: type[Resource], field: str) -> type[BaseModel]:
    """The model a kind's spec or status field holds."""
    annotation = kind.model_fields[field].annotation
    if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
        raise SchemaError(f"{kind.__name__}.{field}: {annotation!r} is not a model")
    return annotation


def _clean_doc(doc: str | None) -> str:
    return " ".join((doc or "").split())


def filename(kind: type[Resource]) -> str:
    return f"{GROUP}_{kind.KIND_INFO.plural}.yaml"


def render(kinds: tuple[type[Resource], ...] = KINDS) -> dict[str, str]:
    """File name -> YAML text of every CRD."""
    return {
        filename(kind): HEADER + yaml.safe_dump(crd(kind), sort_keys=True, width=100, allow_unicode=True)
        for kind in kinds
    }


def check(out: Path, rendered: dict[str, str]) -> list[str]:
    """Unified diffs of every file in `out` that differs from what the models generate."""
    diffs = []
    for name, text in sorted(rendered.items()):
        path = out / name
        current = path.read_text() if path.exists() else ""
        if current != text:
            diffs.append(
                "".join(
                    difflib.unified_diff(
                        current.splitlines(keepends=True),
                        text.splitlines(keepends=True),
                        fromfile=str(path),
                        tofile=f"{path} (generated)",
                    )
                )
            )
    return diffs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m finetune_operator.crdgen", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--out", type=Path, default=Path("crds"), help="directory of the CRD files (default: crds)"
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 with a diff when the files differ"
    )
    args = parser.parse_args(argv)
    rendered = render()
    if args.check:
        diffs = check(args.out, rendered)
        if diffs:
            sys.stdout.write("".join(diffs))
            sys.stderr.write(
                f"{args.out} is out of date with finetune_operator.api: "
                f"run python -m finetune_operator.crdgen --out {args.out}\n"
            )
            return 1
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in rendered.items():
        (args.out / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
