"""KServe: `spec.predictor.canaryTrafficPercent` of an InferenceService.

KServe's canary is revision-based: the latest predictor revision gets canaryTrafficPercent and
the last fully rolled-out revision the rest (Knative serverless mode). The stable and canary
Backends therefore name no Services here; the router only sets the percentage.

Unlike the route lists of the Gateway API and Istio, canaryTrafficPercent is a scalar inside
nested structs, which server-side apply tracks field by field: the patch carries only that
field, and the router's manager owns exactly `f:spec.f:predictor.f:canaryTrafficPercent`. With no
candidate the patch carries no field at all, which releases it: KServe then sends all traffic to
the latest ready revision, as without a canary. The InferenceService must exist (an apply would
otherwise create a half-empty one), so the router refuses to render without it.
"""

from __future__ import annotations

from typing import Any

from finetune_operator.routers.base import (
    Backend,
    Observed,
    ObjectRef,
    Patch,
    apply_body,
    check_weight,
    field_manager,
    require,
)

API_VERSION = "serving.kserve.io/v1beta1"
KIND = "InferenceService"


class KServeRouter:
    kind = "kserve"
    field_manager = field_manager("kserve")
    owns_replicas = False

    def replica_counts(self, weight: int) -> tuple[int, int] | None:
        return None  # every version runs spec.serving.replicas

    def __init__(self, inference_service: str):
        self.inference_service = inference_service

    def isvc_ref(self, namespace: str) -> ObjectRef:
        return ObjectRef(API_VERSION, KIND, namespace, self.inference_service)

    def targets(self, rollout_name: str, namespace: str, stable: Backend, canary: Backend | None) -> list[ObjectRef]:
        return [self.isvc_ref(namespace)]

    def desired(
        self,
        rollout_name: str,
        namespace: str,
        stable: Backend,
        canary: Backend | None,
        weight: int,
        observed: Observed,
    ) -> list[Patch]:
        check_weight(weight)
        ref = self.isvc_ref(namespace)
        require(observed, ref, "create the InferenceService first; the router only sets its canaryTrafficPercent")
        fields: dict[str, Any] = {} if canary is None else {"spec": {"predictor": {"canaryTrafficPercent": weight}}}
        return [Patch(ref, apply_body(ref, **fields), self.field_manager)]

    def effective_weight(self, weight: int) -> int:
        return check_weight(weight)

    def observed_weight(
        self, rollout_name: str, namespace: str, stable: Backend, canary: Backend | None, observed: Observed
    ) -> int | None:
        isvc = observed.get(self.isvc_ref(namespace))
        if not isvc:
            return None
        percent = ((isvc.get("spec") or {}).get("predictor") or {}).get("canaryTrafficPercent")
        return None if percent is None else int(percent)
