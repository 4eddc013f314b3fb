"""Serving env: literal values, or references to Secret and ConfigMap keys (never copied)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from finetune_operator.api.rollout import MSG_ENV_ONE_SOURCE, MSG_ENV_VALUE_AND_FROM, RolloutSpec
from finetune_operator.builders import rollout as builders

OWNER = builders.Owner(name="chat", namespace="team", uid="uid-1")
SERVED = builders.ServedVersion("v1", "hf://base", "s3://models/chat/v1")


def server_env(env: list[dict]) -> list[dict]:
    spec = RolloutSpec.model_validate({"modelName": "chat", "track": "LatestApproved", "serving": {"env": env}})
    container = builders.deployment(OWNER, spec, SERVED, 1)["spec"]["template"]["spec"]["containers"][0]
    names = {e["name"] for e in env}
    return [e for e in container["env"] if e["name"] in names]


@pytest.mark.parametrize(
    "env, expected",
    [
        pytest.param({"name": "LOG", "value": "debug"}, {"name": "LOG", "value": "debug"}, id="literal"),
        pytest.param({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}},
                     {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}, id="secret"),
        pytest.param({"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "serving", "key": "mode"}}},
                     {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "serving", "key": "mode"}}}, id="configmap"),
    ],
)
def test_env_reaches_the_server_container(env, expected):
    assert server_env([env]) == [expected]


@pytest.mark.parametrize(
    "env, message",
    [
        pytest.param({"name": "X", "valueFrom": {}}, MSG_ENV_ONE_SOURCE, id="no-source"),
        pytest.param({"name": "X", "valueFrom": {"secretKeyRef": {"name": "a", "key": "k"},
                                                 "configMapKeyRef": {"name": "b", "key": "k"}}}, MSG_ENV_ONE_SOURCE, id="two-sources"),
        pytest.param({"name": "X", "value": "v", "valueFrom": {"secretKeyRef": {"name": "a", "key": "k"}}},
                     MSG_ENV_VALUE_AND_FROM, id="value-and-reference"),
    ],
)
def test_bad_env_is_refused(env, message):
    with pytest.raises(ValidationError) as refused:
        server_env([env])
    assert message in str(refused.value)
