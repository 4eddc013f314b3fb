"""Exit codes of the trainer's entry points, and the exceptions that map onto them.

The operator runs `prepare` and `train` in Kubernetes Jobs and turns these codes into a Job
podFailurePolicy: codes in `FAIL_FAST` mean retrying cannot help (a bad config, bad data, a
missing model), so the Job fails at once with the reason from the termination message; other
non-zero codes are retried within the Job's backoffLimit. `TERMINATED` (128 + SIGTERM) is what a
preempted or deleted trainer returns after saving a checkpoint; the next attempt resumes from it.

| code | name               | meaning                                                      | retry |
|------|--------------------|--------------------------------------------------------------|-------|
| 0    | OK                 | finished; results written                                    |   -   |
| 1    | INTERNAL_ERROR     | unexpected failure (a bug or an unclassified crash)          |  yes  |
| 2    | CONFIG_ERROR       | config missing/invalid, or asks for what this node can't do   |  no   |
| 3    | DATA_ERROR         | dataset malformed, PII blocked, or nothing left to train on  |  no   |
| 4    | MODEL_ERROR        | base model missing, not in the local cache, or unloadable    |  no   |
| 5    | STORAGE_ERROR      | reading a source or writing the output failed (I/O, network) |  yes  |
| 6    | OUT_OF_MEMORY      | the accelerator ran out of memory                            |  no   |
| 7    | TRAINING_DIVERGED  | the loss became NaN or infinite                              |  no   |
| 143  | TERMINATED         | stopped by SIGTERM after saving a checkpoint                 |  yes  |
"""

from __future__ import annotations

OK = 0
INTERNAL_ERROR = 1
CONFIG_ERROR = 2
DATA_ERROR = 3
MODEL_ERROR = 4
STORAGE_ERROR = 5
OUT_OF_MEMORY = 6
TRAINING_DIVERGED = 7
TERMINATED = 143

NAMES = {
    OK: "OK",
    INTERNAL_ERROR: "InternalError",
    CONFIG_ERROR: "ConfigError",
    DATA_ERROR: "DataError",
    MODEL_ERROR: "ModelError",
    STORAGE_ERROR: "StorageError",
    OUT_OF_MEMORY: "OutOfMemory",
    TRAINING_DIVERGED: "TrainingDiverged",
    TERMINATED: "Terminated",
}

# Retrying these only burns GPU time: the same input fails the same way.
FAIL_FAST = frozenset({CONFIG_ERROR, DATA_ERROR, MODEL_ERROR, OUT_OF_MEMORY, TRAINING_DIVERGED})


class TrainerError(Exception):
    """A failure with a known cause; `exit_code` says which, the message says what to fix.

    `details` (optional) is merged into the termination message, e.g. the checkpoint saved.
    """

    exit_code = INTERNAL_ERROR

    def __init__(self, message: str, details: dict | None = None):
        super().__init__(message)
        self.details = details or {}

    @property
    def reason(self) -> str:
        return NAMES[self.exit_code]


class ConfigError(TrainerError):
    exit_code = CONFIG_ERROR


class DataError(TrainerError):
    exit_code = DATA_ERROR


class ModelError(TrainerError):
    exit_code = MODEL_ERROR


class StorageError(TrainerError):
    exit_code = STORAGE_ERROR


class OutOfMemory(TrainerError):
    exit_code = OUT_OF_MEMORY


class TrainingDiverged(TrainerError):
    exit_code = TRAINING_DIVERGED


class Terminated(TrainerError):
    exit_code = TERMINATED
