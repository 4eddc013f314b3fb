"""`kubectl finetune`: the Rollout commands a platform team needs in an emergency.

    kubectl finetune status   ROLLOUT          phase, versions, weight, step, analysis
    kubectl finetune history  ROLLOUT          promotions, rollbacks and aborts, with reasons
    kubectl finetune promote  ROLLOUT [--full] leave a pause / skip to 100%
    kubectl finetune abort    ROLLOUT          all traffic back to stable, now
    kubectl finetune rollback ROLLOUT [--to VERSION] [--force]
                                               serve the previous stable (or given) version, now
    kubectl finetune wait     ROLLOUT          until Healthy (exit 0) or Degraded (exit 1)
    kubectl finetune suspend  FINETUNEJOB      stop its Pods; it resumes from its latest checkpoint
    kubectl finetune resume   FINETUNEJOB
    kubectl finetune report   MODELVERSION [-o FILE] [--results LOCATION]
                                               a self-contained HTML report: card, curves, gates, samples

promote, abort and rollback write a request into the Rollout's *status* subresource, as Argo
Rollouts' plugin does: the spec (owned by Git) is never touched, so Argo CD sees no drift. The
operator acts on each request once (by its requestedAt) and records it in status.history.

`rollback` goes to the version that was stable before the current one — never to a candidate
that was aborted or rolled back by analysis. A rollback to a version that is Rejected, or was
aborted or rolled back by analysis, is refused (condition RollbackAccepted=False and a Warning
Event name the version and why) unless `--force` is given; a forced rollback is recorded in
status.history (`forced: true`) and as a Warning Event. `rollback` waits for the operator's
answer and exits 1 when it refused.
Each request replaces the previous one whole (fields it leaves out are written as null, which
a merge patch deletes), so an earlier `--to` or `--force` never carries over into a later
request. `suspend`/`resume` set `spec.suspend` of a FineTuneJob. The patch builders below
(`request_patch`, `promote_fields`, `abort_fields`, `rollback_fields`, `suspend_patch`) are
what the Argo CD resource actions in config/argocd/actions/ reproduce; their tests compare the two.
Install: put `bin/kubectl-finetune` on PATH.
"""

from __future__ import annotations

import argparse
import datetime
import getpass
import json
import sys
import time
from collections.abc import Mapping
from typing import Any

import kubernetes

GROUP, VERSION, PLURAL = "finetune.ai", "v1alpha1", "rollouts"
FTJ_PLURAL = "finetunejobs"

# Every field of each request, by its name in status: a new request writes all of them.
REQUEST_FIELDS = {
    "abortRequest": ("requestedAt", "reason", "requestedBy"),
    "promoteRequest": ("requestedAt", "full", "reason", "requestedBy"),
    "rollbackRequest": ("requestedAt", "toVersion", "force", "reason", "requestedBy"),
}


def request_patch(key: str, fields: dict[str, Any], *, requested_at: str, requested_by: str) -> dict[str, Any]:
    """The merge patch for the status subresource that writes request `key`, replacing the last one."""
    request: dict[str, Any] = dict.fromkeys(REQUEST_FIELDS[key])
    request.update(fields, requestedAt=requested_at, requestedBy=requested_by)
    return {"status": {key: request}}


def promote_fields(full: bool = False, reason: str | None = None) -> dict[str, Any]:
    return {"full": full, **({"reason": reason} if reason else {})}


def abort_fields(reason: str | None = None) -> dict[str, Any]:
    return {"reason": reason} if reason else {}


def rollback_fields(to: str | None = None, force: bool = False, reason: str | None = None) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if to:
        fields["toVersion"] = to
    if reason:
        fields["reason"] = reason
    if force:
        fields["force"] = True
    return fields


def suspend_patch(suspend: bool) -> dict[str, Any]:
    """The merge patch that suspends (True) or resumes (False) a FineTuneJob."""
    return {"spec": {"suspend": suspend}}


def _api(args) -> kubernetes.client.CustomObjectsApi:
    from finetune_operator.k8s.client import with_bearer_token

    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=args.kubeconfig, context=args.context, client_configuration=configuration)
    return kubernetes.client.CustomObjectsApi(kubernetes.client.ApiClient(with_bearer_token(configuration)))


def _namespace(args) -> str:
    if args.namespace:
        return args.namespace
    try:
        _, active = kubernetes.config.list_kube_config_contexts(config_file=args.kubeconfig)
        return active["context"].get("namespace") or "default"
    except Exception:
        return "default"


def _get(api, namespace: str, name: str) -> dict[str, Any]:
    return api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


def _now() -> str:
    # Microseconds: two requests in the same second are still two requests.
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _request(api, namespace: str, name: str, key: str, fields: dict[str, Any]) -> str:
    requested_at = _now()
    body = request_patch(key, fields, requested_at=requested_at, requested_by=getpass.getuser())
    api.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, name, body, _content_type="application/merge-patch+json"
    )
    return requested_at


def _handled(api, namespace: str, name: str, requested_at: str, timeout: float) -> dict[str, Any] | None:
    """The Rollout's status once the operator acted on the request written at `requested_at`."""
    asked = datetime.datetime.fromisoformat(requested_at.replace("Z", "+00:00"))
    deadline = time.monotonic() + timeout
    while True:
        st = _get(api, namespace, name).get("status") or {}
        handled = st.get("lastHandledRequest")
        if handled and datetime.datetime.fromisoformat(handled.replace("Z", "+00:00")) >= asked:
            return st
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.5)


def cmd_status(api, namespace: str, args) -> int:
    ro = _get(api, namespace, args.rollout)
    st = ro.get("status") or {}
    if args.output == "json":
        print(json.dumps(st, indent=2))
        return 0
    steps = ((ro.get("spec") or {}).get("strategy") or {}).get("canary", {}).get("steps") or []
    print(f"Rollout:    {namespace}/{args.rollout}  (model {ro['spec'].get('modelName')})")
    print(f"Phase:      {st.get('phase', '-')}  {st.get('message', '')}")
    print(f"Stable:     {st.get('stableVersion', '-')}")
    print(f"Candidate:  {st.get('candidateVersion', '-')}  weight {st.get('canaryWeight', 0)}%")
    if st.get("currentStepIndex") is not None:
        print(f"Step:       {st['currentStepIndex'] + 1}/{len(steps)}")
    run = st.get("analysis") or {}
    for metric in run.get("metrics") or []:
        last = (metric.get("measurements") or [{}])[-1]
        versus = f" vs stable {last['stableValue']}" if last.get("stableValue") is not None else ""
        print(f"Analysis:   {metric['name']}: {metric.get('phase')} (ok {metric.get('successful', 0)}, "
              f"failed {metric.get('failed', 0)}, inconclusive {metric.get('inconclusive', 0)}) "
              f"last={last.get('value')}{versus}")
    for line in judgement_lines(st):
        print(line)
    return 0


def judgement_lines(status: dict[str, Any]) -> list[str]:
    """The last judgement of a canary against stable: verdict, decision and each metric's figures and test."""
    judged = status.get("judgement")
    if not judged:
        return []
    lines = [f"Judgement:  {judged.get('candidate', '-')} vs stable {judged.get('stable', '-')}: "
             f"{judged.get('verdict')} -> {judged.get('decision')}  ({judged.get('time', '')})"]
    lines += [f"            {figure}" for figure in judged.get("figures") or []]
    return lines


def cmd_history(api, namespace: str, args) -> int:
    history = (_get(api, namespace, args.rollout).get("status") or {}).get("history") or []
    if not history:
        print("no promotions, rollbacks or aborts yet")
    for entry in history:
        print(f"{entry.get('time', '')}  {entry['action']:<9} {entry.get('from', '-')} -> {entry.get('to', '-')}  {entry.get('reason', '')}")
    return 0


def cmd_promote(api, namespace: str, args) -> int:
    _request(api, namespace, args.rollout, "promoteRequest", promote_fields(args.full, args.reason))
    print(f"promote requested for {args.rollout}" + (" (full: skip to 100%)" if args.full else ""))
    return 0


def cmd_abort(api, namespace: str, args) -> int:
    _request(api, namespace, args.rollout, "abortRequest", abort_fields(args.reason))
    print(f"abort requested for {args.rollout}: all traffic goes back to the stable version")
    return 0


def cmd_rollback(api, namespace: str, args) -> int:
    fields = rollback_fields(args.to, args.force, args.reason)
    requested_at = _request(api, namespace, args.rollout, "rollbackRequest", fields)
    print(f"rollback requested for {args.rollout}" + (f" to {args.to}" if args.to else " to the previous stable version")
          + (" (forced)" if args.force else ""))
    if args.wait <= 0:
        return 0
    st = _handled(api, namespace, args.rollout, requested_at, args.wait)
    if st is None:
        print(f"{args.rollout}: the operator has not acted on the request after {args.wait:g}s; "
              f"see kubectl finetune status {args.rollout}", file=sys.stderr)
        return 2
    outcome: Mapping[str, Any] = next((c for c in st.get("conditions") or [] if c.get("type") == "RollbackAccepted"), {})
    if outcome.get("status") == "False":
        print(f"{args.rollout}: {outcome.get('message', 'rollback refused')}", file=sys.stderr)
        return 1
    print(f"{args.rollout}: {outcome.get('message') or st.get('message', '')}")
    return 0


def cmd_wait(api, namespace: str, args) -> int:
    deadline = time.monotonic() + args.timeout
    generation = None
    while time.monotonic() < deadline:
        ro = _get(api, namespace, args.rollout)
        generation = ro["metadata"]["generation"]
        st = ro.get("status") or {}
        # Only a status written for this generation counts: never a previous run's verdict.
        if st.get("observedGeneration") == generation and st.get("phase") in ("Healthy", "Degraded", "RolledBack"):
            print(f"{args.rollout}: {st['phase']}: {st.get('message', '')}")
            return 0 if st["phase"] != "Degraded" else 1
        time.sleep(1)
    print(f"{args.rollout}: timed out after {args.timeout}s (generation {generation})", file=sys.stderr)
    return 2


def _suspend(api, namespace: str, name: str, suspend: bool) -> int:
    api.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, FTJ_PLURAL, name, suspend_patch(suspend), _content_type="application/merge-patch+json"
    )
    print(f"{name}: " + ("suspended: its Pods stop; resume continues from the latest checkpoint" if suspend else "resumed"))
    return 0


def cmd_suspend(api, namespace: str, args) -> int:
    return _suspend(api, namespace, args.finetunejob, True)


def cmd_resume(api, namespace: str, args) -> int:
    return _suspend(api, namespace, args.finetunejob, False)


def _run_location(mv: dict[str, Any], results: str | None) -> str | None:
    """The run's output location: --results, else the directory above the artifact."""
    if results:
        return results
    uri = ((mv.get("spec") or {}).get("artifact") or {}).get("uri") or ""
    return uri.rstrip("/").rsplit("/", 1)[0] if "/" in uri.rstrip("/") else None


def _read_run_files(location: str | None):
    """evaluation.json, progress.jsonl and model-card.png from the run's output location; each
    one that cannot be read becomes a line in the report saying why."""
    from finetune_operator import report

    run = report.RunFiles(location=location)
    if not location:
        run.problems.append("the ModelVersion names no artifact location; pass --results DIR")
        return run
    if location.startswith("pvc://"):
        run.problems.append(f"{location} is inside a PersistentVolumeClaim: pass --results with a local copy or "
                            "mount of that directory for the curves, samples and the card picture")
        return run

    def read(name: str) -> bytes | None:
        path = location.removeprefix("file://").rstrip("/") + "/" + name
        try:
            if "://" in path:
                import fsspec

                with fsspec.open(path, "rb") as handle:
                    return handle.read()
            with open(path, "rb") as handle:
                return handle.read()
        except (OSError, ImportError, ValueError) as exc:
            run.problems.append(f"{path}: not read ({exc.__class__.__name__}: {exc})")
            return None

    evaluation = read(report.EVALUATION_FILE)
    if evaluation is not None:
        try:
            run.evaluation = json.loads(evaluation)
        except ValueError:
            run.problems.append(f"{location}/{report.EVALUATION_FILE} is not JSON")
    progress = read(report.PROGRESS_FILE)
    if progress is not None:
        run.progress = report.parse_progress(progress.decode("utf-8", "replace"))
    run.card_image = read(report.CARD_IMAGE)
    return run


def cmd_report(api, namespace: str, args) -> int:
    from finetune_operator import report

    mv = api.get_namespaced_custom_object(GROUP, VERSION, namespace, "modelversions", args.modelversion)
    run = _read_run_files(_run_location(mv, args.results))
    out = args.output or f"{args.modelversion}-report.html"
    with open(out, "w", encoding="utf-8") as handle:
        handle.write(report.render(mv, run))
    print(f"wrote {out}" + "".join(f"\n  note: {problem}" for problem in run.problems))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kubectl finetune", description=__doc__.split("\n")[0])
    parser.add_argument("--kubeconfig", default=None)
    parser.add_argument("--context", default=None)
    parser.add_argument("-n", "--namespace", default=None)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("status", "history", "promote", "abort", "rollback", "wait"):
        p = sub.add_parser(name)
        p.add_argument("rollout")
        if name in ("promote", "abort", "rollback"):
            p.add_argument("--reason", default=None)
        if name == "promote":
            p.add_argument("--full", action="store_true", help="skip the remaining steps and analysis")
        if name == "rollback":
            p.add_argument("--to", default=None, help="version to go back to (default: the previous stable)")
            p.add_argument("--force", action="store_true",
                           help="serve it even if it is Rejected or was aborted or rolled back by analysis (recorded)")
            p.add_argument("--wait", type=float, default=30,
                           help="seconds to wait for the operator's answer (0: do not wait)")
        if name == "status":
            p.add_argument("-o", "--output", choices=["text", "json"], default="text")
        if name == "wait":
            p.add_argument("--timeout", type=float, default=600)
    for name in ("suspend", "resume"):
        sub.add_parser(name).add_argument("finetunejob")
    p = sub.add_parser("report", help="write a self-contained HTML report of a ModelVersion")
    p.add_argument("modelversion")
    p.add_argument("-o", "--output", default=None, help="HTML file to write (default: MODELVERSION-report.html)")
    p.add_argument("--results", default=None,
                   help="the run's output location (evaluation.json, progress.jsonl, model-card.png); "
                        "default: the directory above the ModelVersion's artifact")
    args = parser.parse_args(argv)
    api = _api(args)
    namespace = _namespace(args)
    try:
        return globals()[f"cmd_{args.command}"](api, namespace, args)
    except kubernetes.client.ApiException as exc:
        print(f"kubectl finetune {args.command}: {exc.status} {exc.reason}: {json.loads(exc.body or '{}').get('message', '')}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
