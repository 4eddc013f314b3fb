"""The traffic routers' patches against the real third-party CRDs on the dev cluster.

The Gateway API, Istio and KServe CRDs come from their Go modules at pinned versions
(`make thirdparty-crds` runs hack/thirdparty/crds.sh before any test). Each test creates the routed object as a user would (`kubectl apply`),
then server-side applies the router's rendered patch with the router's field manager, and
checks that the API server accepted it (schema and CEL), that the weights read back, that the
user's other fields survived, and that managedFields give the router exactly the fields it
claims to own.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from devcluster import controlplane

from finetune_operator.routers import (
    Backend,
    GatewayApiRouter,
    IstioRouter,
    KServeRouter,
    ObjectRef,
    Patch,
    ReplicaRatioRouter,
)

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
RO = "support"
STABLE = Backend(service="support-stable", port=8000, deployment="support-v1", version="v1")
CANARY = Backend(service="support-canary", port=8000, deployment="support-v2", version="v2")


@pytest.fixture(scope="module")
def router_crds(cluster) -> Path:
    """The CRDs fetched from their modules, installed and Established."""
    try:
        directory = controlplane.thirdparty_crds_dir()
    except controlplane.ClusterError as exc:
        pytest.fail(str(exc), pytrace=False)
    # The routers' CRDs (the cache also holds the prometheus-operator's, for the chart's monitoring).
    routers = {"gateway-api", "istio", "kserve"}
    files = sorted(f for f in directory.glob("*/*.yaml") if f.parent.name in routers)
    assert {f.parent.name for f in files} == routers, sorted(directory.glob("*/*.yaml"))
    for f in files:
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(f))
    controlplane.wait_for_crds(cluster.state, files)
    return directory


def apply_patch(cluster, patch: Patch) -> dict:
    """Server-side apply as the operator's k8s layer does: one apply PATCH, nothing else.

    Not `kubectl apply --server-side`: on an object created by client-side `kubectl apply`,
    kubectl first migrates the ownership of every client-side-applied field to the applying
    manager, so the router's next apply (without those fields) would delete the user's
    parentRefs, hostnames and labels.
    """
    from kubernetes.dynamic import DynamicClient

    resource = DynamicClient(cluster.api_client()).resources.get(api_version=patch.api_version, kind=patch.kind)
    return resource.server_side_apply(
        body=patch.body, name=patch.name, namespace=patch.namespace,
        field_manager=patch.field_manager, force_conflicts=patch.force,
    ).to_dict()


def read(cluster, ref: ObjectRef) -> dict:
    from kubernetes.dynamic import DynamicClient

    resource = DynamicClient(cluster.api_client()).resources.get(api_version=ref.api_version, kind=ref.kind)
    return resource.get(name=ref.name, namespace=ref.namespace).to_dict()


def owned_fields(obj: dict, manager: str) -> dict:
    entries = [e for e in obj["metadata"].get("managedFields", []) if e["manager"] == manager]
    assert len(entries) == 1, f"expected one managedFields entry for {manager}: {obj['metadata'].get('managedFields')}"
    assert entries[0]["operation"] == "Apply"
    return entries[0]["fieldsV1"]


def managers(obj: dict) -> set[str]:
    return {e["manager"] for e in obj["metadata"].get("managedFields", [])}


def test_gatewayapi_router_sets_httproute_weights(cluster, namespace, router_crds):
    cluster.apply(
        f"""
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {RO}, namespace: {namespace}, labels: {{team: ml}}}}
spec:
  parentRefs: [{{name: public-gateway}}]
  hostnames: [llm.example.com]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /docs}}}}]
    backendRefs: [{{name: docs, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /v1}}}}]
    timeouts: {{request: 60s}}
    backendRefs: [{{name: support-stable, port: 8000}}]
"""
    )
    router = GatewayApiRouter()
    ref = router.route_ref(RO, namespace)
    for weight in (10, 50, 100, 0):
        [patch] = router.desired(RO, namespace, STABLE, CANARY, weight, {ref: read(cluster, ref)})
        apply_patch(cluster, patch)
        route = read(cluster, ref)
        docs, api = route["spec"]["rules"]
        assert [(b["name"], b["weight"]) for b in api["backendRefs"]] == [("support-stable", 100 - weight), ("support-canary", weight)]
        assert router.observed_weight(RO, namespace, STABLE, CANARY, {ref: route}) == weight
    # The user's fields are untouched; the router's manager owns the rules list and nothing else.
    assert docs["backendRefs"][0]["name"] == "docs" and api["timeouts"] == {"request": "60s"}
    assert route["spec"]["parentRefs"][0]["name"] == "public-gateway" and route["metadata"]["labels"] == {"team": "ml"}
    assert owned_fields(route, router.field_manager) == {"f:spec": {"f:rules": {}}}
    assert "kubectl-client-side-apply" in managers(route)

    # A patch rendered from a stale read is refused, never applied over the user's newer rules.
    from kubernetes.dynamic.exceptions import ConflictError

    [stale] = router.desired(RO, namespace, STABLE, CANARY, 25, {ref: route})
    cluster.kubectl("label", "httproute", RO, "-n", namespace, "edited=yes")
    with pytest.raises(ConflictError, match="modified"):
        apply_patch(cluster, stale)


def test_istio_router_sets_virtualservice_weights(cluster, namespace, router_crds):
    cluster.apply(
        f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: llm, namespace: {namespace}}}
spec:
  hosts: [llm.example.com]
  gateways: [public]
  http:
  - name: primary
    match: [{{uri: {{prefix: /v1}}}}]
    retries: {{attempts: 2}}
    route:
    - destination: {{host: support-stable.{namespace}.svc.cluster.local, port: {{number: 8000}}}}
  - name: docs
    route:
    - destination: {{host: docs}}
"""
    )
    router = IstioRouter("llm", ["primary"])
    ref = router.vs_ref(namespace)
    for weight in (10, 25, 100):
        [patch] = router.desired(RO, namespace, STABLE, CANARY, weight, {ref: read(cluster, ref)})
        apply_patch(cluster, patch)
        vs = read(cluster, ref)
        primary, docs = vs["spec"]["http"]
        assert [(d["destination"]["host"].split(".")[0], d["weight"]) for d in primary["route"]] == [
            ("support-stable", 100 - weight), ("support-canary", weight)
        ]
        assert router.observed_weight(RO, namespace, STABLE, CANARY, {ref: vs}) == weight
    assert primary["retries"] == {"attempts": 2} and docs["route"] == [{"destination": {"host": "docs"}}]
    assert vs["spec"]["hosts"] == ["llm.example.com"]
    assert owned_fields(vs, router.field_manager) == {"f:spec": {"f:http": {}}}


def test_kserve_router_sets_canary_traffic_percent(cluster, namespace, router_crds):
    cluster.apply(
        f"""
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata: {{name: support, namespace: {namespace}}}
spec:
  predictor:
    minReplicas: 1
    model:
      modelFormat: {{name: huggingface}}
      storageUri: pvc://models/support/v2
"""
    )
    router = KServeRouter("support")
    ref = router.isvc_ref(namespace)
    for weight in (10, 50):
        [patch] = router.desired(RO, namespace, STABLE, CANARY, weight, {ref: read(cluster, ref)})
        apply_patch(cluster, patch)
        isvc = read(cluster, ref)
        assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == weight
        assert router.observed_weight(RO, namespace, STABLE, CANARY, {ref: isvc}) == weight
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == "pvc://models/support/v2"
    assert owned_fields(isvc, router.field_manager) == {"f:spec": {"f:predictor": {"f:canaryTrafficPercent": {}}}}

    # Without a candidate the router releases the field: KServe's default (all to latest) again.
    [release] = router.desired(RO, namespace, STABLE, None, 0, {ref: isvc})
    apply_patch(cluster, release)
    isvc = read(cluster, ref)
    assert "canaryTrafficPercent" not in isvc["spec"]["predictor"]
    assert router.field_manager not in managers(isvc)


def test_replica_ratio_router_scales_the_two_deployments(cluster, namespace):
    for deployment, version in (("support-v1", "v1"), ("support-v2", "v2")):
        cluster.apply(
            f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {deployment}, namespace: {namespace}}}
spec:
  selector: {{matchLabels: {{app: support, version: {version}}}}}
  template:
    metadata: {{labels: {{app: support, version: {version}}}}}
    spec:
      containers: [{{name: server, image: registry.k8s.io/pause:3.10}}]
"""
        )
    router = ReplicaRatioRouter(replicas=4)
    for weight, (stable_replicas, canary_replicas) in ((10, (3, 1)), (50, (2, 2)), (100, (0, 4))):
        for patch in router.desired(RO, namespace, STABLE, CANARY, weight, {}):
            apply_patch(cluster, patch)
        stable, canary = (read(cluster, ref) for ref in router.targets(RO, namespace, STABLE, CANARY))
        assert (stable["spec"]["replicas"], canary["spec"]["replicas"]) == (stable_replicas, canary_replicas)
        observed = dict(zip(router.targets(RO, namespace, STABLE, CANARY), (stable, canary)))
        # Whole replicas: 3:1 is the closest 4 replicas get to 10%, and reads back as 25%.
        assert router.observed_weight(RO, namespace, STABLE, CANARY, observed) == router.split(weight).effective_weight
    for deployment in (stable, canary):
        assert owned_fields(deployment, router.field_manager) == {"f:spec": {"f:replicas": {}}}
        assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.k8s.io/pause:3.10"
