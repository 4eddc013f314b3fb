"""`python -m finetune_operator`: run the operator, configured from the environment.

Exit status: 0 after a clean shutdown (SIGTERM/SIGINT), 2 when the configuration is invalid
(the message names the variable), 1 for anything else, a lost leader-election Lease included.

With FINETUNE_LEADER_ELECTION=on the process first waits, as a standby, until it holds the Lease
(k8s.leader): meanwhile it serves /healthz and /metrics but starts no controller and makes no
other API call. Once it holds the Lease, kopf starts and a thread renews the Lease; if it cannot
renew before the renew deadline, the process exits at once (as client-go's controllers do), so
that the replica taking over acts alone. A clean shutdown releases the Lease, so the standby
takes over at its next check instead of after the lease duration.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from finetune_operator.config import ConfigError, OperatorConfig

EXIT_BAD_CONFIG = 2
PERSISTENCE_PREFIX = "finetune.ai"

logger = logging.getLogger("finetune_operator")


def settings_for(config: OperatorConfig):  # -> kopf.OperatorSettings
    """kopf's settings for this operator: our annotations, errors-only kopf events, peering."""
    import kopf

    from finetune_operator.k8s.events import INSTANCE
    from finetune_operator.k8s.resources import COMPONENT
    from finetune_operator.k8s.watchcache import FAILED_CREATE_FIELD_SELECTOR

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
    # Reconciles are synchronous Kubernetes API calls: I/O-bound, so more threads than cores. The
    # same threads run the reconciles that child events queue (handlers.workers).
    from finetune_operator.handlers import workers

    settings.execution.executor = workers.pool(config.workers)
    # Events are watched for one reason only; the API server filters them (k8s.watchcache).
    settings.watching.field_selectors[("", "v1", "events")] = FAILED_CREATE_FIELD_SELECTOR
    # Watched namespaces are exact names (config validates them), so a namespaced operator has
    # nothing to discover: without this kopf would list and watch every Namespace and every CRD in
    # the cluster, which a namespaced install is not granted (docs/security.md). Resource discovery
    # (/apis) still runs once at start.
    settings.scanning.disabled = not config.clusterwide
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
    elector = None
    if config.leader_election:
        from finetune_operator.k8s import leader

        elector = leader.LeaderElector(
            config.leader_election_namespace,
            config.leader_election_name,
            identity(),
            lease_duration=config.lease_duration_seconds,
            renew_deadline=config.lease_renew_deadline_seconds,
            retry_period=config.lease_retry_period_seconds,
        )
        logger.info(
            "finetune-operator %s: leader election on Lease %s/%s (duration %ds, renew deadline %gs, retry %gs)",
            elector.identity, elector.namespace, elector.name, config.lease_duration_seconds,
            config.lease_renew_deadline_seconds, config.lease_retry_period_seconds,
        )
        if not wait_as_standby(elector, config):
            return 0
        elector.hold(on_lost=_lost_leadership)
    else:
        metrics.LEADER.set(1)
    logger.info(
        "finetune-operator starting: watching %s, peering %s, metrics %s, liveness %s, handlers %s",
        ", ".join(config.watch_namespaces) or "all namespaces",
        config.peering_name if config.peering else "off (standalone)",
        f"http://{config.metrics_host}:{config.metrics_port}/metrics" if config.metrics_port else "off",
        config.liveness_endpoint or "off",
        ", ".join(handlers.__all__),
    )
    try:
        kopf.run(
            settings=settings_for(config),
            standalone=not config.peering,
            peering_name=config.peering_name if config.peering else None,
            clusterwide=config.clusterwide,
            namespaces=list(config.watch_namespaces),
            liveness_endpoint=config.liveness_endpoint,
        )
    finally:
        if elector is not None:
            elector.stop()
            elector.release()
    return 0


def identity() -> str:
    """This replica's name in the Lease: its Pod (or host) and a per-start suffix, so a restarted
    Pod never mistakes its predecessor's Lease for its own."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


class _StandbyHealth(BaseHTTPRequestHandler):
    """/healthz of a standby (kopf's own endpoint starts with the controllers, on the same port)."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        body = b'{"status": "standby"}'
        self.send_response(200 if self.path.split("?")[0] == "/healthz" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def wait_as_standby(elector, config: OperatorConfig) -> bool:  # elector: k8s.leader.LeaderElector
    """Block until `elector` holds the Lease (True), or SIGTERM/SIGINT came first (False)."""
    health = None
    if config.health_port:
        health = ThreadingHTTPServer((config.health_host, config.health_port), _StandbyHealth)
        threading.Thread(target=health.serve_forever, name="standby-health", daemon=True).start()
    stopped = threading.Event()

    def stop(signum: int, _frame: object) -> None:
        logger.info("finetune-operator: %s while standby; exiting", signal.Signals(signum).name)
        stopped.set()
        elector.stop()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return elector.acquire() and not stopped.is_set()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if health is not None:
            health.shutdown()
            health.server_close()  # kopf binds the same port for its liveness endpoint


def _lost_leadership(reason: str) -> None:
    logger.error("finetune-operator: lost the leader-election Lease (%s); exiting so that the new leader acts alone",
                 reason)
    for handler in logging.getLogger().handlers + logger.handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)


if __name__ == "__main__":
    sys.exit(main())
