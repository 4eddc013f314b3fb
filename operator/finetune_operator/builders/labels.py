"""Labels the operator puts on every child object, so children are found by selector."""

from __future__ import annotations

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "finetune-operator"
FINETUNEJOB_LABEL = "finetune.ai/finetunejob"


def finetunejob_child_labels(finetunejob_name: str) -> dict[str, str]:
    return {MANAGED_BY_LABEL: MANAGED_BY, FINETUNEJOB_LABEL: finetunejob_name}
