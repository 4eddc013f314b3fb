"""`python -m finetune_operator.retrain`: create today's FineTuneJob of a schedule.

The chart's `schedules` run this from a CronJob (see builders.schedule for the template's
placeholders and naming):

    python -m finetune_operator.retrain --template /etc/finetune-schedule/template.yaml \
        --schedule monthly-tickets [--namespace team-a] [--now 2026-12-01T03:00:00Z]

Exit status: 0 when the job was created or already exists (a CronJob retry on the same day),
1 when the template cannot make a FineTuneJob or the API server refuses it (its message, which
names the field, is printed), 2 for bad arguments. In a Pod the namespace defaults to the Pod's own.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

from finetune_operator.builders.schedule import ScheduleError, render

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m finetune_operator.retrain", description=__doc__.split("\n")[0])
    parser.add_argument("--template", required=True, type=Path, help="FineTuneJob template (YAML)")
    parser.add_argument("--schedule", required=True, help="the schedule's name (label finetune.ai/schedule)")
    parser.add_argument("--namespace", help="where to create the job (default: the Pod's namespace)")
    parser.add_argument("--now", help="the run's time, ISO 8601 (default: now, UTC)")
    args = parser.parse_args(argv)

    now = datetime.datetime.fromisoformat(args.now.replace("Z", "+00:00")) if args.now else datetime.datetime.now(datetime.UTC)
    namespace = args.namespace or (SERVICE_ACCOUNT_NAMESPACE.read_text().strip() if SERVICE_ACCOUNT_NAMESPACE.exists() else None)
    if not namespace:
        parser.error("--namespace is required outside a Pod")
    try:
        body = render(args.template.read_text(), now, args.schedule)
    except (OSError, ScheduleError) as exc:
        print(f"retrain {args.schedule}: {exc}", file=sys.stderr)
        return 1

    import kubernetes

    from finetune_operator.k8s import client

    group, _, version = body["apiVersion"].partition("/")
    name = body["metadata"]["name"]
    try:
        client.custom_objects().create_namespaced_custom_object(group, version, namespace, "finetunejobs", body)
    except kubernetes.client.ApiException as exc:
        if exc.status == 409:
            print(f"retrain {args.schedule}: FineTuneJob {namespace}/{name} exists already; nothing to do")
            return 0
        print(f"retrain {args.schedule}: the API server refused FineTuneJob {namespace}/{name}: {_reason(exc)}", file=sys.stderr)
        return 1
    print(f"retrain {args.schedule}: created FineTuneJob {namespace}/{name}")
    return 0


def _reason(exc: Exception) -> str:
    import json

    body = getattr(exc, "body", None)
    try:
        return str(json.loads(body)["message"]) if body else str(exc)
    except (ValueError, KeyError, TypeError):
        return str(exc)


if __name__ == "__main__":
    sys.exit(main())
