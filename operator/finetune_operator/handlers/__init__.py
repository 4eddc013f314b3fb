"""kopf handlers, one module per kind. Importing this package registers them with kopf.

Handlers only wire: parse the object, observe its children, call the pure decision in `logic/`,
and act through `k8s/`. Sync handlers on purpose: kopf runs them in its thread pool, and the
Kubernetes client they use through `k8s/` is synchronous.
"""

from finetune_operator.handlers import finetunejob, modelversion, monitoring, rollout

__all__ = ["finetunejob", "modelversion", "rollout", "monitoring"]
