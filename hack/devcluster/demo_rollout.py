"""`python -m devcluster.demo_rollout` (`make demo-rollout`): the demo's model, canaried to live traffic.

What it does, each step skipped when already done:

1. the dev cluster, the CRDs and the operator, as `make demo` does; the Gateway API HTTPRoute CRD
   (from its Go module);
2. the `make demo` FineTuneJob: reused when it succeeded earlier, run (and followed) otherwise;
3. the demo's ModelVersion is shown as the seed's gates judged it. Under the seed's defaults a
   135M-parameter model is Rejected (safety, task accuracy, general tasks) and a Rollout will not
   serve it; the rollout below is for a team that ships this adapter for its JSON format only:
   the same artifact, registered under the model name `earnings-json` with the demo run's own
   evaluation figures and the gates formatCompliance > 0.95 (blocking) and latency < 2x base
   (warning), so the operator approves it;
4. a Prometheus (Debian's package) scraping the serving Pods, an HTTPRoute, and a load generator
   playing the gateway: requests go to the stable and canary Pods as the route's weights say;
5. a Rollout tracking the latest Approved `earnings-json` version, canary steps 10 -> 25 -> 50 ->
   100 with an error-rate analysis after each, judged relative to stable (the same query for the
   canary and the stable version; at most 1 point more errors):
   - v1 becomes stable at once (nothing to compare with);
   - v2, the same adapter re-registered as a rebuild with identical weights would be, goes
     through every step to 100% and is promoted;
   - v3, the same adapter again with the dev server's fault file (a broken build: its evaluation
     passed, its server fails every request), is rolled back by the analysis; the comparison is
     printed: canary vs stable value, the test and the verdict;
   the weights are printed as they move, then the history and what the load generator saw;
6. where the Grafana dashboards are, and the three numbers a platform team looks at first:
   the request success rate, the GPU-hours of training, and the time from approval to 100%.

Serving Pods, the Rollout and the HTTPRoute stay for `kubectl`; Prometheus and the load generator
stop with the demo. Everything of the rollout lives in the namespace `earnings-rollout`, made
afresh on each run (`kubectl delete namespace earnings-rollout` stops the serving Pods).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from finetune_trainer.artifacts import digest_files

from . import canary, controlplane, demo
from .demo import DemoError, say, step

MODEL = "earnings-json"
ROUTE = MODEL
NAMESPACE = "earnings-rollout"  # its own: a fresh run deletes it (a Production version goes with it)
STEPS = (
    {"setWeight": 10}, {"analysis": {}}, {"setWeight": 25}, {"analysis": {}},
    {"setWeight": 50}, {"analysis": {}}, {"setWeight": 100},
)
INTERVAL_S = 3
WINDOW = "30s"  # at 10% a CPU-served canary sees a request every few seconds: a wider rate window
COUNT = 3
GATES = (
    {"name": "formatCompliance", "metric": "formatCompliance", "comparator": "GreaterThan", "threshold": 0.95},
    {"name": "latency", "metric": "latencySeconds", "comparator": "LessThan", "threshold": 2.0,
     "baseline": "RatioToBase", "blocking": False},
)
POLL_S = 0.5


class Demo:
    def __init__(self, state: controlplane.ClusterState, workdir: Path):
        self.state, self.workdir = state, workdir
        self.started = time.monotonic()
        self.last_line = ""

    def kubectl(self, *args: str, input: str | None = None) -> str:
        return demo.kubectl(self.state, *args, input=input)

    def apply(self, manifest: dict) -> None:
        self.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=yaml.safe_dump(manifest))

    def get(self, kind: str, name: str, namespace: str = NAMESPACE) -> dict:
        result = controlplane.kubectl(self.state, "get", kind, name, "-n", namespace, "-o", "json", check=False)
        return json.loads(result.stdout) if result.returncode == 0 else {}

    def rollout_status(self) -> dict:
        return self.get("rollout.finetune.ai", ROUTE).get("status") or {}

    def weights(self) -> dict[str, int]:
        route = self.get("httproute", ROUTE)
        return canary.route_weights(route) if route else {}

    # ---- what is printed while it runs

    def show(self) -> dict:
        """One line when the phase, the step, the weights or the analysis changed; the status."""
        status = self.rollout_status()
        weights = self.weights()
        stable = weights.get(f"{ROUTE}-stable", 0)
        canary_weight = weights.get(f"{ROUTE}-canary", 0)
        candidate = status.get("candidateVersion")
        traffic = f"stable {status.get('stableVersion') or '-':<3} {_bar(stable)} {stable:>3}% | " \
                  f"canary {candidate or '-':<3} {_bar(canary_weight)} {canary_weight:>3}%"
        step_index = status.get("currentStepIndex")
        where = f"step {step_index + 1}/{len(STEPS)}" if candidate and step_index is not None else ""
        line = f"{status.get('phase') or '-':<11} {traffic}  {where:<9} {_analysis(status)}"
        if line != self.last_line:
            say(f"  {time.monotonic() - self.started:6.1f}s  {line}")
            self.last_line = line
        return status

    def follow(self, done, timeout: float, what: str) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.show()
            if done(status):
                return status
            time.sleep(POLL_S)
        raise DemoError(f"timed out after {timeout:.0f}s waiting for {what}; "
                        f"`kubectl --kubeconfig {self.state.kubeconfig} -n {NAMESPACE} describe rollout.finetune.ai {ROUTE}` "
                        "says why")


def _bar(percent: int, width: int = 10) -> str:
    filled = round(percent / 100 * width)
    return "#" * filled + "." * (width - filled)


def _analysis(status: dict) -> str:
    analysis = status.get("analysis") or {}
    parts = []
    for metric in analysis.get("metrics") or []:
        measurements = metric.get("measurements") or []
        last = measurements[-1] if measurements else {}
        value = "-" if last.get("value") is None else f"{last['value']:.3f}"
        if last.get("stableValue") is not None:
            value += f" vs stable {last['stableValue']:.3f}"
        parts.append(f"{metric['name']} {value} ({metric.get('successful', 0)} ok, {metric.get('failed', 0)} failed, "
                     f"{metric.get('inconclusive', 0)} no data)")
    return "analysis: " + ", ".join(parts) if parts else ""


def demo_run(state: controlplane.ClusterState, timeout: float) -> demo.Run:
    """The `make demo` FineTuneJob, run first when it has not succeeded here yet."""
    job = demo.get_job(state)
    if (job or {}).get("status", {}).get("phase") != "Succeeded":
        step("the demo FineTuneJob has not succeeded on this cluster yet: running `make demo` first")
        if demo.main(["--reuse", "--skip-samples", "--timeout", str(timeout)]) != 0:
            raise DemoError("the demo FineTuneJob did not succeed; see above")
        job = demo.get_job(state)
    else:
        say(f"    reusing FineTuneJob {demo.NAMESPACE}/{demo.JOB_NAME} (Succeeded)")
    directory = state.path / "artifacts" / demo.JOB_NAME
    return demo.Run(state=state, job=job, output_dir=directory, model_dir=demo.materialize_model())


class Versions:
    """earnings-json v1, v2 (a rebuild) and v3 (a broken build), from the demo's adapter."""

    def __init__(self, d: Demo, run: demo.Run):
        self.d, self.base = d, run.model_dir
        source = run.adapter_dir()
        mv_name = run.status.get("modelVersion")
        if source is None or not mv_name:
            raise DemoError(f"the demo FineTuneJob left no adapter or ModelVersion under {run.output_dir}")
        mv = d.get("modelversion", mv_name, demo.NAMESPACE)
        self.evaluation = (mv.get("spec") or {}).get("evaluation") or {}
        if not self.evaluation.get("metrics"):
            raise DemoError(f"ModelVersion {mv_name} records no evaluation metrics")
        failed = [g["name"] for g in (mv.get("status") or {}).get("gates") or [] if not g["passed"]]
        say(f"    {mv_name}: {(mv.get('status') or {}).get('phase')} under the seed's gates"
            f" ({', '.join(failed) + ' failed' if failed else 'all passed'}); adapter {source}")
        self.paths: dict[str, Path] = {}
        for version in ("v1", "v2", "v3"):
            target = d.workdir / "adapters" / version
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(source, target)
            self.paths[version] = target
        canary.mark_faulty(self.paths["v3"])

    def register(self, version: str, note: str) -> None:
        path = self.paths[version]
        self.d.apply(canary.model_version(
            MODEL, version, path, self.base, metrics=self.evaluation["metrics"],
            base_metrics=self.evaluation.get("baseMetrics") or {}, gates=GATES, digest=digest_files(path),
        ))
        phase = _wait_phase(self.d, version)
        compliance = self.evaluation["metrics"].get("formatCompliance", float("nan"))
        say(f"    ModelVersion {MODEL}-{version} ({note}): {phase}, formatCompliance {compliance:.3f}")
        if phase != "Approved":
            raise DemoError(f"{MODEL}-{version} is {phase}: the demo run's format compliance does not pass "
                            f"formatCompliance > 0.95, so there is nothing to roll out")


def _wait_phase(d: Demo, version: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        phase = (d.get("modelversion", f"{MODEL}-{version}").get("status") or {}).get("phase")
        if phase and phase != "Candidate":
            return phase
        time.sleep(0.5)
    raise DemoError(f"ModelVersion {MODEL}-{version} was not judged within {timeout:.0f}s")


def reset(d: Demo, timeout: float = 180) -> None:
    """A fresh namespace: the Rollout, route and versions of an earlier run go with the old one.

    Deleting a ModelVersion in Production is refused by the admission policy; deleting its
    namespace is not.
    """
    controlplane.kubectl(d.state, "delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true",
                         f"--timeout={timeout:.0f}s", check=False)
    d.kubectl("create", "namespace", NAMESPACE)
    deadline = time.monotonic() + 60
    while controlplane.kubectl(d.state, "get", "serviceaccount", "default", "-n", NAMESPACE, check=False).returncode:
        if time.monotonic() > deadline:
            raise DemoError(f"no default ServiceAccount in namespace {NAMESPACE} after 60s")
        time.sleep(0.5)
    say(f"    namespace {NAMESPACE} (created afresh)")


def print_judgement(status: dict) -> None:
    """The relative judgement that decided: canary vs stable value, the test and the verdict."""
    from finetune_operator.cli import judgement_lines

    say("    the judgement against stable (kubectl finetune status):")
    for line in judgement_lines(status):
        say(f"    {line}")


def print_history(d: Demo) -> None:
    plugin = [str(demo.REPO_ROOT / "bin" / "kubectl-finetune"), "--kubeconfig", str(d.state.kubeconfig),
              "-n", NAMESPACE, "history", ROUTE]
    result = subprocess.run(plugin, capture_output=True, text=True, check=False)
    for line in (result.stdout or result.stderr).splitlines():
        say(f"  {line}")


def print_traffic(traffic: canary.TrafficLoop) -> dict[str, list[int]]:
    totals: dict[str, list[int]] = {}
    for report in traffic.reports:
        for backend, stats in report.backends.items():
            row = totals.setdefault(backend, [0, 0, 0, 0])
            for i, value in enumerate((stats.requests, stats.ok, stats.http_errors, stats.failures)):
                row[i] += value
    say(f"  {'backend':<24} {'requests':>8} {'ok':>6} {'errors':>6} {'no answer':>9}")
    for backend in sorted(totals):
        requests, ok, errors, failures = totals[backend]
        say(f"  {backend:<24} {requests:>8} {ok:>6} {errors:>6} {failures:>9}")
    return totals


def _time(text: str | None):
    import datetime

    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def platform_numbers(job_status: dict, model_versions: dict[str, dict], history: list[dict],
                     totals: dict[str, list[int]]) -> dict:
    """The three numbers a platform team looks at first.

    - success rate: requests answered OK of all requests the gateway sent, every version;
    - GPU-hours (and their estimated cost) the FineTuneJob consumed;
    - time from approval to 100%: for each promoted version, from its ModelVersion's approval
      (status.evaluationTime, when its gates were judged) to the Rollout's promote entry.
    """
    requests = sum(row[0] for row in totals.values())
    ok = sum(row[1] for row in totals.values())
    to_full: dict[str, float] = {}
    for entry in history:
        version = entry.get("to")
        if entry.get("action") != "promote" or version not in model_versions:
            continue
        mv = model_versions[version]
        approved = _time((mv.get("status") or {}).get("evaluationTime") or (mv.get("metadata") or {}).get("creationTimestamp"))
        promoted = _time(entry.get("time"))
        if approved and promoted:
            to_full[version] = max((promoted - approved).total_seconds(), 0.0)
    return {
        "requests": requests,
        "success_rate": ok / requests if requests else None,
        "gpu_hours": float(job_status.get("gpuHours") or 0.0),
        "estimated_cost": job_status.get("estimatedCost"),
        "approval_to_full_seconds": to_full,
    }


def dashboard_files() -> list[Path]:
    return sorted((demo.REPO_ROOT / "dashboards" / "json").glob("*.json"))


def print_platform_summary(numbers: dict, gpus: int) -> None:
    rate = numbers["success_rate"]
    say(f"  success rate        {'-' if rate is None else f'{100 * rate:.2f}%'} of {numbers['requests']} requests "
        f"(every version, the broken v3 included)")
    cost = numbers["estimated_cost"]
    say(f"  GPU-hours           {numbers['gpu_hours']:.3f}" + (f" (estimated cost {cost:.2f})" if cost else "")
        + ("" if gpus else "  (the demo trains on the CPU: no GPU was requested)"))
    for version, seconds in sorted(numbers["approval_to_full_seconds"].items()):
        say(f"  approval -> 100%    {version}: {seconds:.0f}s")
    if not numbers["approval_to_full_seconds"]:
        say("  approval -> 100%    - (no version was promoted)")
    files = dashboard_files()
    say("  dashboards          " + (", ".join(str(f.relative_to(demo.REPO_ROOT)) for f in files) or "none generated yet (make dashboards)"))
    say("                      import them into Grafana, or install the chart with --set grafana.dashboards.enabled=true:")
    say("                      one ConfigMap per dashboard (label grafana_dashboard=1) for Grafana's sidecar")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devcluster.demo_rollout", description=__doc__.splitlines()[0])
    parser.add_argument("--cluster-dir", type=Path, default=Path(os.environ.get("DEVCLUSTER_DIR", demo.DEFAULT_CLUSTER_DIR)))
    parser.add_argument("--timeout", type=float, default=3600, help="seconds for the demo FineTuneJob, when it has to run")
    args = parser.parse_args(argv)
    directory = args.cluster_dir.resolve()
    prometheus = traffic = None
    try:
        step("dev cluster, CRDs, operator")
        state = demo.ensure_cluster(directory)
        demo.install_crds(state)
        demo.ensure_operator(state)
        canary.install_httproute_crd(state)
        say("    Gateway API HTTPRoute CRD established")
        step("the demo's fine-tuned model")
        run = demo_run(state, args.timeout)
        d = Demo(state, directory / "rollout-demo")
        reset(d)
        versions = Versions(d, run)
        say(f"    the rollout below ships this adapter as {MODEL}, gated on formatCompliance > 0.95 (blocking)")
        say("    and latency < 2x base (warning), with the demo run's own evaluation figures")

        step("Prometheus scraping the serving Pods, and the HTTPRoute")
        from hack.prometheus.server import PrometheusError, start_serving_prometheus

        try:
            prometheus = start_serving_prometheus(str(state.kubeconfig), [NAMESPACE], d.workdir / "prometheus")
        except PrometheusError as exc:
            raise DemoError(f"{exc} (make demo-rollout installs it)") from None
        say(f"    Prometheus {prometheus.url}")
        d.apply(canary.httproute(ROUTE))

        step(f"v1: Rollout {ROUTE} tracking the latest Approved {MODEL}; the first version serves at once")
        versions.register("v1", "the demo's adapter")
        d.apply(canary.rollout(ROUTE, MODEL, prometheus.url, steps=STEPS, interval_s=INTERVAL_S, count=COUNT,
                               failure_limit=0, max_increase=0.01, window=WINDOW, cpu="1"))
        d.follow(lambda s: s.get("phase") == "Healthy" and s.get("stableVersion") == "v1", 300, "v1 to serve")
        traffic = canary.TrafficLoop(str(state.kubeconfig), NAMESPACE, ROUTE, model=MODEL, concurrency=4, max_tokens=4).start()

        step("v2, a good candidate: 10% -> 25% -> 50% -> 100%, analysed at each step")
        versions.register("v2", "a rebuild: the same weights")
        status = d.follow(lambda s: s.get("stableVersion") == "v2" and s.get("phase") == "Healthy"
                          or s.get("phase") == "Degraded", 600, "v2 to be promoted")
        if status.get("stableVersion") != "v2":
            raise DemoError(f"v2 was not promoted: {status.get('message')}")

        step("v3, a broken build (its server fails every request): rolled back by the analysis")
        versions.register("v3", "a broken build")
        status = d.follow(lambda s: s.get("phase") == "Degraded" or s.get("stableVersion") == "v3", 600,
                          "v3 to be rolled back")
        if status.get("stableVersion") != "v2":
            raise DemoError(f"v3 was not rolled back: {status.get('message')}")
        say(f"    {status.get('message')}")
        print_judgement(status)

        traffic.stop()
        step("history (kubectl finetune history)")
        print_history(d)
        step("what the load generator saw")
        totals = print_traffic(traffic)
        step("for the platform team")
        model_versions = {v: d.get("modelversion", f"{MODEL}-{v}") for v in ("v1", "v2", "v3")}
        history = d.rollout_status().get("history") or []
        gpus = int((((run.job or {}).get("spec") or {}).get("resources") or {}).get("gpusPerNode") or 0)
        print_platform_summary(platform_numbers(run.status, model_versions, history, totals), gpus)
        say()
        say(f"Rollout {NAMESPACE}/{ROUTE}: stable {status.get('stableVersion')}, v3 rolled back. The serving Pods keep running:")
        say(f"  kubectl --kubeconfig {state.kubeconfig} -n {NAMESPACE} get ro,mv,deploy,httproute")
        say(f"  kubectl finetune --kubeconfig {state.kubeconfig} -n {NAMESPACE} status {ROUTE}   (bin/ on PATH)")
        say(f"  stop them: kubectl --kubeconfig {state.kubeconfig} delete namespace {NAMESPACE}")
        return 0
    except (DemoError, controlplane.ClusterError) as exc:
        say()
        say(f"demo-rollout: {exc}")
        return 1
    except KeyboardInterrupt:
        say()
        say("demo-rollout: interrupted; the cluster and operator keep running (make devcluster-down stops them)")
        return 130
    finally:
        if traffic is not None:
            traffic.stop()
        if prometheus is not None:
            prometheus.stop()


if __name__ == "__main__":
    sys.exit(main())
