"""Logging of the operator process: kopf's formatters, our level.

kopf's own formatters are used for both formats because they attach the Kubernetes object a
log line is about (`object` in JSON; a `[namespace/name]` prefix in text), which is what makes
an operator's logs searchable per FineTuneJob.
"""

from __future__ import annotations

import logging

import kopf

from finetune_operator.config import OperatorConfig


def configure(config: OperatorConfig) -> None:
    kopf.configure(
        log_format=kopf.LogFormat.JSON if config.log_format == "json" else kopf.LogFormat.FULL,
        log_refkey="object" if config.log_format == "json" else None,
        log_prefix=config.log_format == "text",
    )
    level = getattr(logging, config.log_level)
    logging.getLogger().setLevel(level)
    logging.getLogger("kopf").setLevel(level)
    # The Kubernetes client logs every request body at DEBUG; keep it quieter than us.
    logging.getLogger("kubernetes").setLevel(max(level, logging.INFO))
    logging.getLogger("urllib3").setLevel(max(level, logging.WARNING))
