"""The custom resources of group `finetune.ai`, version `v1alpha1`, as pydantic models.

These models are the only definition of each CRD: `finetune_operator.crdgen` turns them into
the OpenAPI schemas under `crds/`, so a field, its default, its description (what
`kubectl explain` prints) and the CEL rule that guards it are written once, here.

Python attributes are snake_case; the wire format (aliases) is camelCase, as Kubernetes wants.
Parse an object with `FineTuneJob.model_validate(body)`; write status with
`status.model_dump(mode="json", exclude_none=True)` (dumps use the camelCase aliases).
"""

from finetune_operator.api.common import API_VERSION, GROUP, VERSION
from finetune_operator.api.finetunejob import FineTuneJob
from finetune_operator.api.modelversion import ModelVersion
from finetune_operator.api.rollout import Rollout

# Every kind, in the order their CRDs are generated.
KINDS = (FineTuneJob, ModelVersion, Rollout)

__all__ = ["API_VERSION", "GROUP", "KINDS", "VERSION", "FineTuneJob", "ModelVersion", "Rollout"]
