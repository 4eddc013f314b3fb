"""Coordinates of the custom resources the operator serves, for kopf decorators and API calls."""

from __future__ import annotations

from typing import NamedTuple

GROUP = "finetune.ai"
VERSION = "v1alpha1"
FIELD_MANAGER = "finetune-operator"
COMPONENT = "finetune-operator"


class Resource(NamedTuple):
    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


FINETUNEJOBS = Resource(GROUP, VERSION, "finetunejobs", "FineTuneJob")
MODELVERSIONS = Resource(GROUP, VERSION, "modelversions", "ModelVersion")
ROLLOUTS = Resource(GROUP, VERSION, "rollouts", "Rollout")
