"""`python -m finetune_operator`: run the operator, configured from the environment.

Exit status: 0 after a clean shutdown (SIGTERM/SIGINT), 2 when the configuration is invalid
(the message names the variable), 1 for anything else.
"""

from __future__ import annotations

import logging
import sys

from finetune_operator.config import ConfigError, OperatorConfig

EXIT_BAD_CONFIG = 2
PERSISTENCE_PREFIX = "finetune.ai"

logger = logging.getLogger("finetune_operator")


def settings_for(config: OperatorConfig):  # -> kopf.OperatorSettings
    """kopf's settings for this operator: our annotations, errors-only kopf events, peering."""
    import kopf

    from finetune_operator.k8s.events import INSTANCE
    from finetune_operator.k8s.resources import COMPONENT

    settings = kopf.OperatorSettings()
    # Progress and the last-handled spec live in finetune.ai/ annotations, not in status, so the
    # status stays ours alone and `kubectl get -o yaml` shows no kopf.zalando.org keys.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PERSISTENCE_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PERSISTENCE_PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{PERSISTENCE_PREFIX}/finalizer"
    # Our domain events come from k8s.events on transitions; kopf only reports handler errors.
    settings.posting.level = logging.ERROR
    settings.posting.reporting_component = COMPONENT
    settings.posting.reporting_instance = INSTANCE
    # Reconciles are synchronous Kubernetes API calls: I/O-bound, so more threads than cores.
    settings.execution.max_workers = config.workers
    # Each object's own events are batched briefly: a burst of child updates is one reconcile.
    settings.batching.batch_window = 0.2
    settings.peering.name = config.peering_name
    settings.peering.standalone = not config.peering
    settings.peering.mandatory = config.peering
    settings.peering.clusterwide = config.clusterwide
    return settings


def main() -> int:
    try:
        config = OperatorConfig.from_env()
    except ConfigError as exc:
        print(f"finetune-operator: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG

    import kopf

    from finetune_operator import handlers, logging_setup, metrics

    logging_setup.configure(config)
    metrics.publish_build_info()
    try:
        metrics.serve(config.metrics_host, config.metrics_port)
    except OSError as exc:
        print(
            f"finetune-operator: FINETUNE_METRICS_PORT={config.metrics_port}: cannot serve metrics on "
            f"{config.metrics_host}:{config.metrics_port} ({exc.strerror}); pick a free port or 0 to disable",
            file=sys.stderr,
        )
        return EXIT_BAD_CONFIG
    logger.info(
        "finetune-operator starting: watching %s, peering %s, metrics %s, liveness %s, handlers %s",
        ", ".join(config.watch_namespaces) or "all namespaces",
        config.peering_name if config.peering else "off (standalone)",
        f"http://{config.metrics_host}:{config.metrics_port}/metrics" if config.metrics_port else "off",
        config.liveness_endpoint or "off",
        ", ".join(handlers.__all__),
    )
    kopf.run(
        settings=settings_for(config),
        standalone=not config.peering,
        peering_name=config.peering_name if config.peering else None,
        clusterwide=config.clusterwide,
        namespaces=list(config.watch_namespaces),
        liveness_endpoint=config.liveness_endpoint,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
