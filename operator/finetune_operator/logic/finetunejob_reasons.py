"""The FineTuneJob controller's words: condition types, reasons and the messages users read.

Each reason has its message next to it, so what users read is reviewed in one place.
"""

from __future__ import annotations

# Condition types.
ACCEPTED = "Accepted"
DATA_READY = "DataReady"
SPEC_APPLIED = "SpecApplied"
TRAINED = "Trained"
EVALUATED = "Evaluated"
GATES_PASSED = "GatesPassed"
SUCCEEDED = "Succeeded"
PROGRESS_REPORTED = "ProgressReported"

# Reasons, each with its message.
REASON_SPEC_VALID = "SpecValid"
MSG_SPEC_VALID = "the spec is valid"
REASON_INVALID_SPEC = "InvalidSpec"
MSG_INVALID_SPEC = "the spec is invalid, no work starts until it is fixed: {problems}"
REASON_PENDING = "Pending"
MSG_PENDING = "waiting for data preparation to start"
REASON_SPEC_APPLIED = "Applied"
MSG_SPEC_APPLIED = "the running job uses the current spec"
REASON_SPEC_NOT_APPLIED = "ChangedWhileRunning"
MSG_SPEC_NOT_APPLIED = (
    "the spec changed after work started; the running job keeps the spec it started with "
    "(only spec.suspend applies to it). Create a new FineTuneJob to train with the new settings"
)
REASON_PREVIOUS_RUN = "WaitingForPreviousRun"
MSG_PREVIOUS_RUN = (
    "waiting for the Jobs and ConfigMaps of an earlier FineTuneJob of this name to be deleted; "
    "this run starts once they are gone"
)
REASON_PREPARING = "Preparing"
MSG_PREPARING = "preparing the dataset"
REASON_DATA_READY = "DataPrepared"
MSG_DATA_READY = "dataset prepared: {summary}"
REASON_DATA_FAILED = "DataPreparationFailed"
REASON_TRAINING = "Training"
MSG_TRAINING_STARTING = "training is starting"
MSG_TRAINING = "training: step {step}/{total}{loss}"
REASON_TRAINED = "Trained"
REASON_TRAINING_FAILED = "TrainingFailed"
REASON_SUCCEEDED = "Succeeded"
MSG_TRAINED = "training finished; artifact at {uri}"
REASON_EVALUATING = "Evaluating"
MSG_EVALUATING = "evaluating the fine-tuned and the base model"
MSG_EVALUATION_PROGRESS = "evaluating: {suite} suite, {model} model, {done}/{total} prompts{eta}"
REASON_EVALUATED = "Evaluated"
MSG_EVALUATED = "evaluation finished"
REASON_EVALUATION_FAILED = "EvaluationFailed"
REASON_REGISTERING = "Registering"
MSG_REGISTERING = "registering the ModelVersion"
REASON_REGISTRATION_FAILED = "RegistrationFailed"
REASON_GATES_PASSED = "GatesPassed"
REASON_GATES_FAILED = "GatesFailed"
MSG_APPROVED = "registered {mv}: Approved ({verdict})"
MSG_REJECTED = "registered {mv}: Rejected, {verdict}"
MSG_REGISTERED_UNEVALUATED = "registered {mv} as a Candidate (evaluation disabled)"
MSG_SUCCEEDED = "training finished; artifact at {uri}"
REASON_SUSPENDED = "Suspended"
MSG_SUSPENDED = "suspended by spec.suspend; set it to false to resume from the latest checkpoint"
REASON_QUEUED = "WaitingForQueue"
MSG_QUEUED = "waiting for admission by Kueue queue {queue}"
REASON_UNSCHEDULABLE = "Unschedulable"
MSG_UNSCHEDULABLE = "pod {pod} cannot be scheduled: {detail}"
REASON_POD_CREATION_FAILED = "PodCreationFailed"
MSG_POD_CREATION_FAILED = (
    "the API server refuses to create the Pod of Job {job}: {detail}; the Job retries by itself once the "
    "cause is gone (a ResourceQuota, LimitRange, admission policy or Pod Security level of the namespace)"
)
SHOWN_API_MESSAGE_CHARS = 300
REASON_IMAGE_PULL = "ImagePullError"
MSG_IMAGE_PULL = "the trainer image cannot be pulled ({reason}): {detail}"
MSG_OOM_KILLED = "OOMKilled: the trainer ran out of memory; raise spec.resources.memory or lower batchSize/maxSeqLength"
MSG_DEADLINE = "{stage} exceeded spec.activeDeadlineSeconds ({seconds}s) and was stopped"
MSG_RESTARTED = "the trainer was restarted ({n} so far); it resumes from the latest checkpoint"

REASON_PROGRESS_VALID = "Valid"
MSG_PROGRESS_VALID = "the trainer's latest progress report was read"
REASON_PROGRESS_IGNORED = "MalformedProgress"
MSG_PROGRESS_IGNORED = (
    "ignored the trainer's latest progress report in ConfigMap {configmap}: {problem}; the status "
    "keeps the last valid progress"
)

# Events, emitted on transitions only.
EVENT_ACCEPTED = "Accepted"
MSG_EVENT_ACCEPTED = "spec accepted; waiting for data preparation to start"
EVENT_INVALID_SPEC = REASON_INVALID_SPEC
