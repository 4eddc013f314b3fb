"""Pure decisions: (spec, status, observed children, now) -> what the status should be and what to do.

Nothing here imports kopf or the Kubernetes client or does I/O (an import-linter contract keeps
it so), which is why every function can be tested with a table of inputs and expected outputs.
"""
