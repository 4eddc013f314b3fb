"""crdgen: the CRDs are structural, complete, and exactly what the models generate.

`test_crds_directory_is_up_to_date` is how CI fails when a model changed and crds/ was not
regenerated (`python -m finetune_operator.crdgen --out crds/`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field

from finetune_operator import crdgen
from finetune_operator.api import KINDS
from finetune_operator.api.finetunejob import DatasetSplit

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "crds"
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
GENERATED = {kind.KIND_INFO.kind: crdgen.crd(kind) for kind in KINDS}
FORBIDDEN_KEYWORDS = {
    "$ref",
    "$defs",
    "anyOf",
    "oneOf",
    "allOf",
    "not",
    "title",
    "const",
    "examples",
    "uniqueItems",
}


def schema_of(kind: str) -> dict[str, Any]:
    return GENERATED[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its path."""
    yield path or "<root>", schema
    for name, child in schema.get("properties", {}).items():
        yield from nodes(child, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from nodes(schema["additionalProperties"], f"{path}{{}}")


ALL_NODES = [(kind, path, node) for kind in GENERATED for path, node in nodes(schema_of(kind))]


# --- structural -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", GENERATED)
def test_every_node_is_typed(kind):
    untyped = [
        path
        for path, node in nodes(schema_of(kind))
        if not node.get("type")
        and not node.get("x-kubernetes-preserve-unknown-fields")
        and not node.get("x-kubernetes-int-or-string")
    ]
    assert untyped == []


@pytest.mark.parametrize("kind", GENERATED)
def test_no_json_schema_only_keywords_left(kind):
    leftovers = [(path, sorted(FORBIDDEN_KEYWORDS & node.keys())) for path, node in nodes(schema_of(kind))]
    assert [item for item in leftovers if item[1]] == []
    assert [path for path, node in nodes(schema_of(kind)) if node.get("additionalProperties") is False] == []
    assert [path for path, node in nodes(schema_of(kind)) if node.get("default", ...) is None] == []


@pytest.mark.parametrize("kind", GENERATED)
def test_every_field_has_a_description(kind):
    missing = [
        path
        for path, node in nodes(schema_of(kind))
        if path.count(".") >= 1
        and not path.endswith(("]", "}"))
        and path != ".metadata"
        and not node.get("description")
    ]
    assert missing == []


@pytest.mark.parametrize("kind", GENERATED)
def test_lists_that_cel_rules_look_into_are_bounded(kind):
    """A rule on list items is costed per item: an unbounded list blows the CEL cost budget."""
    unbounded = [
        path
        for path, node in nodes(schema_of(kind))
        if node.get("type") == "array"
        and "x-kubernetes-validations" in node.get("items", {})
        and "maxItems" not in node
    ]
    assert unbounded == []


def test_free_form_fields_are_the_intended_ones():
    free_form = {
        (kind, path) for kind, path, node in ALL_NODES if node.get("x-kubernetes-preserve-unknown-fields")
    }
    assert free_form == {
        ("FineTuneJob", ".spec.dataset.inline[]"),
        ("FineTuneJob", ".spec.dataset.synthetic.seedExamples[]"),
        ("FineTuneJob", ".spec.dataset.sources[].inline[]"),
        ("FineTuneJob", ".spec.dataset.sources[].synthetic.seedExamples[]"),
        ("FineTuneJob", ".spec.resources.affinity"),
        ("FineTuneJob", ".spec.evaluation.formatSchema"),
        ("Rollout", ".spec.serving.formatSchema"),
        ("ModelVersion", ".spec.lineage.hyperparameters"),
        ("ModelVersion", ".spec.modelCard"),
        ("ModelVersion", ".spec.formatSchema"),
    }


# --- what the CRDs declare ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "plural", "short_name", "columns"),
    [
        ("FineTuneJob", "finetunejobs", "ftj", ["Phase", "Progress %", "Loss", "Model Version", "Age"]),
        ("ModelVersion", "modelversions", "mv", ["Model", "Version", "Phase", "Age"]),
        ("Rollout", "rollouts", "ro", ["Model", "Stable", "Candidate", "Weight", "Phase", "Age"]),
    ],
)
def test_names_columns_and_subresources(kind, plural, short_name, columns):
    crd = GENERATED[kind]
    spec = crd["spec"]
    assert crd["metadata"]["name"] == f"{plural}.finetune.ai"
    assert spec["group"] == "finetune.ai" and spec["scope"] == "Namespaced"
    assert spec["names"]["shortNames"] == [short_name]
    assert spec["names"]["categories"] == ["finetune"]
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == columns
    schema = version["schema"]["openAPIV3Schema"]
    assert schema["required"] == ["spec"]
    assert {"observedGeneration", "phase", "conditions"} <= schema["properties"]["status"][
        "properties"
    ].keys()


def rules(kind: str) -> dict[str, list[str]]:
    return {
        path: [rule["rule"] for rule in node["x-kubernetes-validations"]]
        for path, node in nodes(schema_of(kind))
        if "x-kubernetes-validations" in node
    }


@pytest.mark.parametrize(
    ("kind", "path", "fragment"),
    [
        ("FineTuneJob", ".spec.dataset", "has(self.uri), has(self.inline), has(self.synthetic), has(self.sources)"),
        ("FineTuneJob", ".spec.dataset", "self.sources.exists(t, t.name == s.seedFrom"),
        ("FineTuneJob", ".spec.dataset.sources[]", "has(self.uri), has(self.inline), has(self.synthetic), has(self.replay)"),
        ("FineTuneJob", ".spec.dataset.sources[].uri", "[.][.]?"),
        ("FineTuneJob", ".spec.dataset.split", "has(self.train)"),
        ("FineTuneJob", ".spec", "self.adaptation.type == 'qlora'"),
        ("FineTuneJob", ".spec", "self.method != 'dpo'"),
        ("FineTuneJob", ".spec.evaluation.gates[]", "has(self.metric)"),
        ("ModelVersion", ".spec", "self == oldSelf"),
        # Names that would make invalid children, refused on the whole object (only the root sees metadata).
        ("FineTuneJob", "<root>", "self.metadata.name.size() <= 53"),
        ("FineTuneJob", "<root>", "self.metadata.name.matches("),
        ("FineTuneJob", "<root>", "self.spec.output.modelName.size()"),
        ("ModelVersion", "<root>", "self.metadata.name.size() <= 52"),
        # Locations: no '.'/'..' segments anywhere; never the bare root of a claim where runs write.
        ("FineTuneJob", ".spec.output.uri", "[.][.]?"),
        ("FineTuneJob", ".spec.output.uri", "^(pvc|s3)://[^/]*/*$"),
        ("FineTuneJob", ".spec.dataset.uri", "[.][.]?"),
        ("ModelVersion", ".spec.artifact.uri", "[.][.]?"),
        ("ModelVersion", ".spec.artifact.uri", "^(pvc|s3)://[^/]*/*$"),
        ("Rollout", ".spec", "has(self.version) != has(self.track)"),
        (
            "Rollout",
            ".spec.strategy.canary.steps[]",
            "has(self.setWeight), has(self.pause), has(self.analysis)",
        ),
        (
            "Rollout",
            ".spec.trafficRouter",
            "has(self.gatewayAPI), has(self.istio), has(self.kserve), has(self.replicaRatio)",
        ),
    ],
)
def test_cel_rules_sit_on_the_type_they_guard(kind, path, fragment):
    assert any(fragment in rule for rule in rules(kind).get(path, [])), rules(kind)


def test_every_cel_rule_has_a_message():
    for kind, path, node in ALL_NODES:
        for rule in node.get("x-kubernetes-validations", []):
            assert rule.get("message"), f"{kind} {path}: {rule['rule']}"


def test_split_rule_falls_back_to_the_field_defaults():
    """The server checks the rule against `default: {}` too, so its fallbacks must be the defaults."""
    (rule,) = DatasetSplit.model_config["json_schema_extra"]["x-kubernetes-validations"]
    for name, field in DatasetSplit.model_fields.items():
        assert f"(has(self.{name}) ? self.{name} : {field.default})" in rule["rule"]


@pytest.mark.parametrize(
    ("path", "default"),
    [
        (".spec.hyperparameters.learningRate", 2e-5),
        (".spec.hyperparameters.epochs", 3),
        (".spec.adaptation.rank", 16),
        (".spec.adaptation.alpha", 32),
        (".spec.dataset.split.train", 0.7),
        (".spec.dataset.piiPolicy", "block"),
        (".spec.hyperparameters", {}),
    ],
)
def test_defaults_reach_the_crd(path, default):
    node = {p: n for kind, p, n in ALL_NODES if kind == "FineTuneJob"}[path]
    assert node["default"] == default


# --- the files in crds/ ------------------------------------------------------------------------


def test_crds_directory_is_up_to_date():
    diffs = crdgen.check(CRDS, crdgen.render())
    assert not diffs, (
        "crds/ is stale: run python -m finetune_operator.crdgen --out crds/\n" + "".join(diffs)[:4000]
    )


def test_render_is_deterministic():
    assert crdgen.render() == crdgen.render()


def test_check_mode_exits_1_with_a_diff_on_drift(tmp_path, capsys):
    assert crdgen.main(["--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "finetune.ai_finetunejobs.yaml",
        "finetune.ai_modelversions.yaml",
        "finetune.ai_rollouts.yaml",
    ]
    assert crdgen.main(["--out", str(tmp_path), "--check"]) == 0
    stale = tmp_path / "finetune.ai_rollouts.yaml"
    stale.write_text(stale.read_text().replace("shortNames:\n    - ro", "shortNames:\n    - rox"))
    capsys.readouterr()
    assert crdgen.main(["--out", str(tmp_path), "--check"]) == 1
    assert "- rox" in capsys.readouterr().out


# --- examples against the generated schemas (types, enums, bounds; CEL needs the server) -------


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_matches_the_crd_schema(path):
    document = yaml.safe_load(path.read_text())
    # OpenAPI v3.0 bounds (boolean exclusiveMinimum) are JSON Schema draft 4.
    jsonschema.Draft4Validator(_no_extensions(schema_of(document["kind"]))).validate(document)


def _no_extensions(schema: Any) -> Any:
    if isinstance(schema, dict):
        cleaned = {k: _no_extensions(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
        if schema.get("x-kubernetes-int-or-string"):
            cleaned["type"] = ["integer", "string"]
        return cleaned
    if isinstance(schema, list):
        return [_no_extensions(item) for item in schema]
    return schema


# --- the conversion itself ---------------------------------------------------------------------


class _Inner(BaseModel):
    """Inner docs."""

    model_config = ConfigDict(extra="forbid")
    size: int = Field(default=1, gt=0, description="A size.")


class _Sample(BaseModel):
    maybe: int | None = Field(default=None, description="Optional int.")
    quantity: int | str = Field(description="Int or string.")
    free: dict[str, Any] = Field(default_factory=dict, description="Anything.")
    counts: dict[str, int] = Field(default_factory=dict, description="Counts.")
    inner: _Inner | None = Field(default=None, description="Field description wins.")
    choice: str = Field(default="a", pattern="^[ab]$", description="Pattern.")


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("maybe", {"type": "integer", "description": "Optional int."}),
        ("quantity", {"x-kubernetes-int-or-string": True, "description": "Int or string."}),
        (
            "free",
            {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "description": "Anything."},
        ),
        ("counts", {"type": "object", "additionalProperties": {"type": "integer"}, "description": "Counts."}),
        (
            "inner",
            {
                "type": "object",
                "description": "Field description wins.",
                "properties": {
                    "size": {
                        "type": "integer",
                        "default": 1,
                        "minimum": 0,
                        "exclusiveMinimum": True,
                        "description": "A size.",
                    }
                },
            },
        ),
        ("choice", {"type": "string", "default": "a", "pattern": "^[ab]$", "description": "Pattern."}),
    ],
)
def test_structural_conversion(field, expected):
    assert crdgen.model_schema(_Sample)["properties"][field] == expected


def test_unknown_keywords_are_errors_not_silently_dropped():
    with pytest.raises(crdgen.SchemaError, match="uniqueItems"):
        crdgen.structural({"type": "array", "items": {"type": "string"}, "uniqueItems": True})
    with pytest.raises(crdgen.SchemaError, match="union"):
        crdgen.structural({"anyOf": [{"type": "integer"}, {"type": "boolean"}]})


def test_yaml_header_says_generated():
    for text in crdgen.render().values():
        assert text.startswith("# Generated from finetune_operator.api")
        assert re.search(r"^apiVersion: apiextensions.k8s.io/v1$", text, re.M)


# --- derived names ---------------------------------------------------------------------------------


def test_finetunejob_name_limit_comes_from_the_longest_child_name():
    """A name of the longest length admitted gives children that are all DNS labels of <= 63."""
    from finetune_operator.api.finetunejob import NAME_MAX_LENGTH, FineTuneJobSpec
    from finetune_operator.builders import finetunejob as builders

    name = "a" * NAME_MAX_LENGTH
    spec = FineTuneJobSpec.model_validate(
        {"baseModel": {"uri": "hf://org/model"}, "dataset": {"uri": "s3://data/x.jsonl"},
         "resources": {"nodes": 128, "gpusPerNode": 1}}
    )
    owner = builders.Owner(name=name, namespace="team", uid="uid-1")
    children = [obj["metadata"]["name"] for obj in builders.setup_objects(owner, spec, builders.Settings())]
    children += [builders.prepare_job_name(name), builders.train_job_name(name), builders.eval_job_name(name, 9),
                 f"{builders.train_job_name(name)}-{spec.resources.nodes - 1}",  # the last rank's Pod host name
                 builders.cleanup_job(owner, spec, builders.Settings(artifact_store="pvc://store"))["metadata"]["name"]]
    assert max(len(child) for child in children) == 63, children
    assert all(re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", child) for child in children), children


def test_modelversion_name_limit_leaves_room_for_its_children():
    from finetune_operator.api.modelversion import CHILD_NAME_SUFFIXES, NAME_MAX_LENGTH

    assert max(len("v" * NAME_MAX_LENGTH + suffix) for suffix in CHILD_NAME_SUFFIXES) == 63
