"""Answer formats are checked for what they are before any Pod runs: a formatSchema as a JSON
Schema (against its metaschema), a formatRegex as a regular expression. The CRD takes any object
there; the operator's parse of the spec refuses a broken one naming the field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from finetune_operator.api.finetunejob import FineTuneJobSpec
from finetune_operator.api.rollout import RolloutSpec


def job(schema):
    return FineTuneJobSpec.model_validate({"baseModel": {"uri": "hf://a/b"}, "dataset": {"uri": "s3://d/x.jsonl"},
                                           "evaluation": {"formatSchema": schema}})


def rollout(**serving):
    return RolloutSpec.model_validate({"modelName": "chat", "version": "v1", "serving": serving})


@pytest.mark.parametrize("schema", [
    pytest.param({"type": "objekt"}, id="unknown-type"),
    pytest.param({"type": "object", "required": "revenue"}, id="required-not-a-list"),
    pytest.param({"properties": {"revenue": {"minimum": "zero"}}}, id="minimum-not-a-number"),
])
def test_an_invalid_json_schema_is_refused_naming_the_field(schema):
    with pytest.raises(ValidationError) as refused:
        job(schema)
    assert "spec.evaluation.formatSchema is not a valid JSON Schema" in str(refused.value)
    with pytest.raises(ValidationError) as refused:
        rollout(formatSchema=schema)
    assert "spec.serving.formatSchema is not a valid JSON Schema" in str(refused.value)


def test_a_valid_schema_is_kept_as_written():
    schema = {"type": "object", "required": ["revenue"], "properties": {"revenue": {"type": "number"}}}
    assert job(schema).evaluation.format_schema == schema
    assert rollout(formatSchema=schema).serving.format_schema == schema


@pytest.mark.parametrize("pattern", [r"[unclosed", r"(unclosed", r"*starts-with-a-star"])
def test_an_invalid_regex_is_refused_naming_the_field(pattern):
    with pytest.raises(ValidationError) as refused:
        rollout(formatRegex=pattern)
    assert "spec.serving.formatRegex is not a valid regular expression" in str(refused.value)


def test_a_valid_regex_is_kept():
    assert rollout(formatRegex=r"\{.*\}").serving.format_regex == r"\{.*\}"
