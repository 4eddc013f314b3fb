"""Property-based, against the real API server: an accepted spec admits, and its children are valid.

For specs drawn by the strategies of tests/unit/test_spec_hypothesis.py that the operator's spec
parsing accepts: the object itself passes the API server's schema and CEL (server-side dry run:
the models and the CRD agree), and every child the builders render for it (ConfigMaps, RBAC,
Jobs, Deployments, Services) is a valid Kubernetes object by the same dry run. A bounded number
of examples per kind keeps this under two minutes.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from finetune_operator.api.finetunejob import FineTuneJobSpec
from finetune_operator.api.modelversion import ModelVersionSpec
from finetune_operator.api.rollout import RolloutSpec
from finetune_operator.builders import finetunejob as ftj_builders
from finetune_operator.builders import modelversion as mv_builders
from finetune_operator.builders import rollout as ro_builders
from finetune_operator.logic import finetunejob as finetunejob_logic
from finetune_operator.logic import modelversion as modelversion_logic
from finetune_operator.logic import rollout as rollout_logic
from tests.unit.test_spec_hypothesis import (
    FINETUNEJOB_SPECS,
    MODELVERSION_SPECS,
    ROLLOUT_SPECS,
    SETTINGS,
)

pytestmark = pytest.mark.cluster

DRY_RUN = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)
UID = "00000000-0000-0000-0000-000000000001"
TRAINER_IMAGE = "ghcr.io/finetune-operator/trainer:0.1.0"


def dry_run(cluster, namespace: str, objects: list[dict[str, Any]]) -> None:
    """Every object passes the API server's validation and admission (nothing is stored)."""
    listing = {"apiVersion": "v1", "kind": "List", "items": objects}
    result = cluster.kubectl(
        "create", "--dry-run=server", "-n", namespace, "-f", "-", "-o", "name", input=json.dumps(listing), check=False
    )
    assert result.returncode == 0, f"{result.stderr}\n{json.dumps(objects, indent=1)[:4000]}"


def resource(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "finetune.ai/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec}


@DRY_RUN
@given(raw=FINETUNEJOB_SPECS.filter(lambda raw: isinstance(finetunejob_logic.parse_spec(raw), FineTuneJobSpec)))
def test_accepted_finetunejob_and_its_children_pass_the_api_server(cluster, namespace, raw):
    spec = finetunejob_logic.parse_spec(raw)
    assert isinstance(spec, FineTuneJobSpec)
    owner = ftj_builders.Owner(name="prop-ftj", namespace=namespace, uid=UID)
    objects = [resource("FineTuneJob", owner.name, raw)]
    try:
        objects += ftj_builders.setup_objects(owner, spec, SETTINGS)
        objects += [
            ftj_builders.prepare_job(owner, spec, SETTINGS),
            ftj_builders.train_job(owner, spec, SETTINGS),
            ftj_builders.eval_job(owner, spec, SETTINGS),
        ]
    except ftj_builders.RenderError as exc:
        # A node path the operator does not allow: InvalidSpec naming the field, no children.
        assert str(exc).startswith("spec."), exc
    dry_run(cluster, namespace, objects)


@DRY_RUN
@given(raw=ROLLOUT_SPECS.filter(lambda raw: isinstance(rollout_logic.parse_spec(raw), RolloutSpec)))
def test_accepted_rollout_and_its_children_pass_the_api_server(cluster, namespace, raw):
    spec = rollout_logic.parse_spec(raw)
    assert isinstance(spec, RolloutSpec)
    owner = ro_builders.Owner(name="prop-ro", namespace=namespace, uid=UID)
    served = ro_builders.ServedVersion(
        version="v2",
        base_model_uri="hf://HuggingFaceTB/SmolLM2-135M-Instruct",
        artifact_uri="pvc://models/chat/v2",
        artifact_digest="sha256:" + "ab" * 32,
    )
    objects = [
        resource("Rollout", owner.name, raw),
        ro_builders.deployment(owner, spec, served, spec.serving.replicas, verifier_image=TRAINER_IMAGE),
        ro_builders.version_service(owner, spec, "v2"),
        ro_builders.track_service(owner, spec, "stable", "v2"),
        ro_builders.track_service(owner, spec, "canary", "v2"),
    ]
    dry_run(cluster, namespace, objects)


@DRY_RUN
@given(raw=MODELVERSION_SPECS.filter(lambda raw: isinstance(modelversion_logic.parse_spec(raw), ModelVersionSpec)))
def test_accepted_modelversion_and_its_children_pass_the_api_server(cluster, namespace, raw):
    mv = {**resource("ModelVersion", "prop-mv", raw), "metadata": {"name": "prop-mv", "namespace": namespace, "uid": UID}}
    objects = [resource("ModelVersion", "prop-mv", raw), mv_builders.model_card_config_map(mv, [])]
    verify = mv_builders.verify_job(mv, TRAINER_IMAGE, SETTINGS.allowed_host_paths)
    if verify is not None:
        objects.append(verify)
    dry_run(cluster, namespace, objects)
