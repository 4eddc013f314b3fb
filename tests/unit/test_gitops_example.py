"""examples/gitops: the Argo CD Application, its project and the manifests it syncs fit together.

The manifests themselves are validated against the CRDs by a server-side dry run in
tests/integration/test_gitops_example.py; here: the Application points at them, ignores exactly
the fields the operator's routers and the Argo CD actions write, and the project allows every
kind it syncs.
"""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
GITOPS = ROOT / "examples" / "gitops"
SYNCED = GITOPS / "support-tickets"


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def synced_manifests() -> list[dict]:
    kustomization = load(SYNCED / "kustomization.yaml")
    return [load(SYNCED / name) for name in kustomization["resources"]]


def test_the_application_syncs_the_example_directory():
    app = load(GITOPS / "argocd" / "application.yaml")
    assert (app["apiVersion"], app["kind"]) == ("argoproj.io/v1alpha1", "Application")
    assert ROOT / app["spec"]["source"]["path"] == SYNCED
    kustomization = load(SYNCED / "kustomization.yaml")
    assert kustomization["namespace"] == app["spec"]["destination"]["namespace"]
    files = {p.name for p in SYNCED.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def test_ignore_differences_cover_what_the_operator_and_the_actions_write():
    app = load(GITOPS / "argocd" / "application.yaml")
    ignored = {(i["group"], i["kind"]): i for i in app["spec"]["ignoreDifferences"]}
    route = ignored[("gateway.networking.k8s.io", "HTTPRoute")]
    rollout = next(m for m in synced_manifests() if m["kind"] == "Rollout")
    assert route["name"] == rollout["spec"]["trafficRouter"]["gatewayAPI"]["httpRoute"]
    assert route["jqPathExpressions"] == [".spec.rules[].backendRefs[]?.weight"]
    assert ignored[("finetune.ai", "FineTuneJob")]["jsonPointers"] == ["/spec/suspend"]
    assert "RespectIgnoreDifferences=true" in app["spec"]["syncPolicy"]["syncOptions"]
    kinds = {(m["apiVersion"].rpartition("/")[0], m["kind"]) for m in synced_manifests()}
    assert set(ignored) <= kinds


def test_the_route_in_git_is_the_steady_state_the_router_expects():
    route = next(m for m in synced_manifests() if m["kind"] == "HTTPRoute")
    rollout = next(m for m in synced_manifests() if m["kind"] == "Rollout")
    name = rollout["metadata"]["name"]
    refs = route["spec"]["rules"][0]["backendRefs"]
    assert [(r["name"], r["weight"]) for r in refs] == [(f"{name}-stable", 100), (f"{name}-canary", 0)]


def test_the_project_allows_every_synced_kind_and_the_source():
    project = load(GITOPS / "argocd" / "appproject.yaml")
    app = load(GITOPS / "argocd" / "application.yaml")
    assert app["spec"]["project"] == project["metadata"]["name"]
    assert app["spec"]["source"]["repoURL"] in project["spec"]["sourceRepos"]
    allowed = {(k["group"], k["kind"]) for k in project["spec"]["namespaceResourceWhitelist"]}
    for manifest in synced_manifests():
        assert (manifest["apiVersion"].rpartition("/")[0], manifest["kind"]) in allowed, manifest["kind"]


def test_sync_waves_put_the_route_first_and_the_rollout_last():
    waves = {m["kind"]: int(m["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"]) for m in synced_manifests()}
    assert waves["HTTPRoute"] < waves["FineTuneJob"] < waves["Rollout"]


def test_the_finetunejob_is_the_seeds_support_ticket_case():
    gitops = next(m for m in synced_manifests() if m["kind"] == "FineTuneJob")
    example = load(ROOT / "examples" / "finetunejob-support-tickets-lora.yaml")
    assert gitops["spec"] == example["spec"]
    assert gitops["metadata"]["name"] == example["metadata"]["name"]
