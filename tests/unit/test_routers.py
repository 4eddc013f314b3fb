"""Traffic routers: the patches each renders, per weight, and that they carry only the fields it owns."""

from __future__ import annotations

import copy

import pytest

from finetune_operator import routers
from finetune_operator.api.rollout import TrafficRouter
from finetune_operator.routers import (
    Backend,
    GatewayApiRouter,
    IstioRouter,
    KServeRouter,
    ObjectRef,
    ReplicaRatioRouter,
    ReplicaSplit,
    RouterError,
    split_replicas,
)

NS = "serving"
RO = "support"
STABLE = Backend(service="support-stable", port=8000, deployment="support-v1", version="v1")
CANARY = Backend(service="support-canary", port=8000, deployment="support-v2", version="v2")
WEIGHTS = [0, 10, 25, 50, 100]

# --- Gateway API ---------------------------------------------------------------------------------

ROUTE_REF = ObjectRef("gateway.networking.k8s.io/v1", "HTTPRoute", NS, RO)


def http_route(*rules: dict, name: str = RO, namespace: str = NS) -> dict:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": "42", "labels": {"team": "ml"}},
        "spec": {"parentRefs": [{"name": "public"}], "hostnames": ["llm.example.com"], "rules": list(rules)},
    }


MATCH_V1 = {"matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}]}
STABLE_REF = {"name": "support-stable", "port": 8000}
CANARY_REF = {"name": "support-canary", "port": 8000}
OTHER_RULE = {"matches": [{"path": {"type": "PathPrefix", "value": "/docs"}}], "backendRefs": [{"name": "docs", "port": 80}]}


def rendered_rules(route: dict, weight: int, canary: Backend | None = CANARY, router=None) -> list[dict]:
    router = router or GatewayApiRouter()
    [patch] = router.desired(RO, NS, STABLE, canary, weight, {ROUTE_REF: route})
    return patch.body["spec"]["rules"]


@pytest.mark.parametrize("weight", WEIGHTS)
def test_gatewayapi_weights_stable_and_canary(weight):
    route = http_route({**MATCH_V1, "backendRefs": [STABLE_REF, CANARY_REF]})
    [rule] = rendered_rules(route, weight)
    assert rule["backendRefs"] == [{**STABLE_REF, "weight": 100 - weight}, {**CANARY_REF, "weight": weight}]
    assert rule["matches"] == MATCH_V1["matches"]


@pytest.mark.parametrize(
    ("case", "rules", "expected"),
    [
        (
            "only-stable-listed-canary-added-after-it",
            [{**MATCH_V1, "backendRefs": [{"name": "mirror", "port": 1}, STABLE_REF]}],
            [{**MATCH_V1, "backendRefs": [{"name": "mirror", "port": 1}, {**STABLE_REF, "weight": 90}, {**CANARY_REF, "weight": 10}]}],
        ),
        (
            "other-rules-and-refs-untouched",
            [OTHER_RULE, {**MATCH_V1, "backendRefs": [{**CANARY_REF, "weight": 7}, {**STABLE_REF, "weight": 1}]}],
            [OTHER_RULE, {**MATCH_V1, "backendRefs": [{**STABLE_REF, "weight": 90}, {**CANARY_REF, "weight": 10}]}],
        ),
        (
            "every-rule-on-the-services-is-weighted",
            [{**MATCH_V1, "backendRefs": [STABLE_REF]}, {"backendRefs": [STABLE_REF, CANARY_REF]}],
            [
                {**MATCH_V1, "backendRefs": [{**STABLE_REF, "weight": 90}, {**CANARY_REF, "weight": 10}]},
                {"backendRefs": [{**STABLE_REF, "weight": 90}, {**CANARY_REF, "weight": 10}]},
            ],
        ),
        (
            "ref-fields-kept-port-defaulted",
            [{"backendRefs": [{"name": "support-stable", "kind": "Service", "filters": [{"type": "RequestHeaderModifier"}]}]}],
            [{"backendRefs": [
                {"name": "support-stable", "kind": "Service", "filters": [{"type": "RequestHeaderModifier"}], "port": 8000, "weight": 90},
                {**CANARY_REF, "weight": 10},
            ]}],
        ),
        (
            "same-name-in-another-group-is-not-the-service",
            [{"backendRefs": [STABLE_REF, {"name": "support-canary", "group": "example.com", "kind": "Pool"}]}],
            [{"backendRefs": [{**STABLE_REF, "weight": 90}, {**CANARY_REF, "weight": 10},
                              {"name": "support-canary", "group": "example.com", "kind": "Pool"}]}],
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_gatewayapi_rule_shapes(case, rules, expected):
    assert rendered_rules(http_route(*rules), 10) == expected


def test_gatewayapi_patch_owns_only_spec_rules_with_a_resource_version_precondition():
    route = http_route(OTHER_RULE, {**MATCH_V1, "backendRefs": [STABLE_REF, CANARY_REF]})
    before = copy.deepcopy(route)
    [patch] = GatewayApiRouter().desired(RO, NS, STABLE, CANARY, 25, {ROUTE_REF: route})
    assert route == before  # the observed object is not mutated
    assert (patch.api_version, patch.kind, patch.namespace, patch.name) == ("gateway.networking.k8s.io/v1", "HTTPRoute", NS, RO)
    assert patch.field_manager == "finetune-operator-router-gatewayapi" and patch.force
    assert patch.body == {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": RO, "namespace": NS, "resourceVersion": "42"},
        "spec": {"rules": patch.body["spec"]["rules"]},
    }
    # Apart from the weights, the rules are the user's, byte for byte.
    def without_weights(rules):
        return [{**r, "backendRefs": [{k: v for k, v in b.items() if k != "weight"} for b in r.get("backendRefs", [])]} for r in rules]
    assert without_weights(patch.body["spec"]["rules"]) == without_weights(route["spec"]["rules"])


def test_gatewayapi_named_route_in_another_namespace_refers_back_to_the_services():
    router = GatewayApiRouter(http_route="shared", route_namespace="gateways")
    ref = ObjectRef("gateway.networking.k8s.io/v1", "HTTPRoute", "gateways", "shared")
    assert router.targets(RO, NS, STABLE, CANARY) == [ref]
    route = http_route({"backendRefs": [{**STABLE_REF, "namespace": NS}, {"name": "support-stable", "port": 8000}]},
                       name="shared", namespace="gateways")
    [patch] = router.desired(RO, NS, STABLE, CANARY, 10, {ref: route})
    assert patch.body["spec"]["rules"][0]["backendRefs"] == [
        {**STABLE_REF, "namespace": NS, "weight": 90},
        {**CANARY_REF, "namespace": NS, "weight": 10},
        {"name": "support-stable", "port": 8000},  # a Service of that name in the route's own namespace
    ]


def test_gatewayapi_without_a_candidate_sends_everything_to_stable():
    [rule] = rendered_rules(http_route({"backendRefs": [STABLE_REF]}), 0, canary=None)
    assert rule["backendRefs"] == [{**STABLE_REF, "weight": 100}]


@pytest.mark.parametrize(
    ("observed", "message"),
    [
        ({}, "HTTPRoute serving/support not found"),
        ({ROUTE_REF: http_route(OTHER_RULE)}, "no rule with a backendRef to Service support-stable"),
    ],
    ids=["route-missing", "no-rule-on-the-services"],
)
def test_gatewayapi_errors_name_the_route_and_the_fix(observed, message):
    with pytest.raises(RouterError, match=message):
        GatewayApiRouter().desired(RO, NS, STABLE, CANARY, 10, observed)


@pytest.mark.parametrize("weight", WEIGHTS)
def test_gatewayapi_observed_weight_reads_back_what_was_rendered(weight):
    route = http_route({"backendRefs": [STABLE_REF]})
    route["spec"]["rules"] = rendered_rules(route, weight)
    assert GatewayApiRouter().observed_weight(RO, NS, STABLE, CANARY, {ROUTE_REF: route}) == weight


# --- Istio ---------------------------------------------------------------------------------------

VS_REF = ObjectRef("networking.istio.io/v1", "VirtualService", NS, "llm")


def virtual_service(*http: dict) -> dict:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "llm", "namespace": NS, "resourceVersion": "7"},
        "spec": {"hosts": ["llm.example.com"], "gateways": ["public"], "http": list(http)},
    }


def dest(host: str, weight: int | None = None, port: int | None = None) -> dict:
    destination: dict = {"host": host}
    if port:
        destination["port"] = {"number": port}
    return {"destination": destination} | ({} if weight is None else {"weight": weight})


PRIMARY = {"name": "primary", "match": [{"uri": {"prefix": "/v1"}}], "retries": {"attempts": 2},
           "route": [dest("support-stable", 100), dest("support-canary", 0)]}
DOCS = {"name": "docs", "route": [dest("docs")]}


@pytest.mark.parametrize("weight", WEIGHTS)
def test_istio_weights_stable_and_canary(weight):
    [patch] = IstioRouter("llm", ["primary"]).desired(RO, NS, STABLE, CANARY, weight, {VS_REF: virtual_service(PRIMARY, DOCS)})
    primary, docs = patch.body["spec"]["http"]
    assert primary["route"] == [dest("support-stable", 100 - weight), dest("support-canary", weight)]
    assert {k: v for k, v in primary.items() if k != "route"} == {k: v for k, v in PRIMARY.items() if k != "route"}
    assert docs == DOCS


@pytest.mark.parametrize(
    ("case", "routes", "http", "expected_routes"),
    [
        (
            "short-host-canary-added-in-the-same-form",
            [],
            [{"name": "a", "route": [dest(f"support-stable.{NS}.svc.cluster.local", port=8000)]}],
            [[dest(f"support-stable.{NS}.svc.cluster.local", 75, port=8000), dest(f"support-canary.{NS}.svc.cluster.local", 25, port=8000)]],
        ),
        (
            "all-routes-on-the-services-when-none-named",
            [],
            [{"route": [dest(f"support-stable.{NS}")]}, DOCS, {"name": "b", "route": [dest("support-stable", 100)]}],
            [[dest(f"support-stable.{NS}", 75), dest(f"support-canary.{NS}", 25)], DOCS["route"],
             [dest("support-stable", 75), dest("support-canary", 25)]],
        ),
        (
            "only-named-routes-when-named",
            ["b"],
            [{"name": "a", "route": [dest("support-stable")]}, {"name": "b", "route": [dest("support-stable")]}],
            [[dest("support-stable")], [dest("support-stable", 75), dest("support-canary", 25)]],
        ),
        (
            "a-host-in-another-namespace-is-not-the-service",
            [],
            [{"route": [dest("support-stable", 50), dest("support-canary.other", 50)]}],
            [[dest("support-stable", 75), dest("support-canary", 25), dest("support-canary.other", 50)]],
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_istio_route_shapes(case, routes, http, expected_routes):
    [patch] = IstioRouter("llm", routes).desired(RO, NS, STABLE, CANARY, 25, {VS_REF: virtual_service(*http)})
    assert [route["route"] for route in patch.body["spec"]["http"]] == expected_routes


def test_istio_patch_owns_only_spec_http():
    vs = virtual_service(PRIMARY, DOCS)
    before = copy.deepcopy(vs)
    [patch] = IstioRouter("llm").desired(RO, NS, STABLE, CANARY, 10, {VS_REF: vs})
    assert vs == before
    assert patch.field_manager == "finetune-operator-router-istio"
    assert set(patch.body) == {"apiVersion", "kind", "metadata", "spec"}
    assert patch.body["metadata"] == {"name": "llm", "namespace": NS, "resourceVersion": "7"}
    assert set(patch.body["spec"]) == {"http"}


@pytest.mark.parametrize(
    ("routes", "observed", "message"),
    [
        ([], {}, "VirtualService serving/llm not found"),
        (["missing"], {VS_REF: virtual_service(PRIMARY)}, "no HTTP route named missing"),
        (["docs"], {VS_REF: virtual_service(PRIMARY, DOCS)}, "HTTP route docs has no destination on Service support-stable"),
        ([], {VS_REF: virtual_service(DOCS)}, "no HTTP route with a destination on Service support-stable"),
    ],
    ids=["vs-missing", "named-route-missing", "named-route-without-stable", "no-route-on-the-services"],
)
def test_istio_errors(routes, observed, message):
    with pytest.raises(RouterError, match=message):
        IstioRouter("llm", routes).desired(RO, NS, STABLE, CANARY, 10, observed)


@pytest.mark.parametrize("weight", WEIGHTS)
def test_istio_observed_weight_reads_back_what_was_rendered(weight):
    router = IstioRouter("llm")
    vs = virtual_service({"route": [dest("support-stable")]})
    [patch] = router.desired(RO, NS, STABLE, CANARY, weight, {VS_REF: vs})
    vs["spec"] = {**vs["spec"], **patch.body["spec"]}
    assert router.observed_weight(RO, NS, STABLE, CANARY, {VS_REF: vs}) == weight


# --- KServe --------------------------------------------------------------------------------------

ISVC_REF = ObjectRef("serving.kserve.io/v1beta1", "InferenceService", NS, "support")
ISVC = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": "support", "namespace": NS}, "spec": {"predictor": {"model": {"modelFormat": {"name": "huggingface"}}}}}


@pytest.mark.parametrize("weight", WEIGHTS)
def test_kserve_sets_only_canary_traffic_percent(weight):
    [patch] = KServeRouter("support").desired(RO, NS, STABLE, CANARY, weight, {ISVC_REF: ISVC})
    assert patch.field_manager == "finetune-operator-router-kserve"
    assert patch.body == {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "support", "namespace": NS},
        "spec": {"predictor": {"canaryTrafficPercent": weight}},
    }
    applied = {**ISVC, "spec": {"predictor": {**ISVC["spec"]["predictor"], "canaryTrafficPercent": weight}}}
    assert KServeRouter("support").observed_weight(RO, NS, STABLE, CANARY, {ISVC_REF: applied}) == weight


def test_kserve_without_a_candidate_releases_the_field():
    [patch] = KServeRouter("support").desired(RO, NS, STABLE, None, 0, {ISVC_REF: ISVC})
    assert "spec" not in patch.body


def test_kserve_refuses_to_create_the_inference_service():
    with pytest.raises(RouterError, match="InferenceService serving/support not found; create the InferenceService first"):
        KServeRouter("support").desired(RO, NS, STABLE, CANARY, 10, {})


# --- Replica ratio -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "weight", "stable", "canary"),
    [
        (10, 0, 10, 0),
        (10, 10, 9, 1),
        (10, 25, 7, 3),  # 2.5 rounds half up
        (10, 50, 5, 5),
        (10, 100, 0, 10),
        (4, 10, 3, 1),  # 0.4 -> at least one canary replica
        (4, 25, 3, 1),
        (4, 50, 2, 2),
        (4, 95, 1, 3),  # 3.8 -> 4, but stable keeps one until 100%
        (3, 50, 1, 2),  # 1.5 rounds half up
        (2, 10, 1, 1),
        (2, 99, 1, 1),
        (1, 0, 1, 0),
        (1, 10, 1, 1),  # a single replica: both versions run one
        (1, 50, 1, 1),
        (1, 100, 0, 1),
        (100, 1, 99, 1),
        (7, 33, 5, 2),
    ],
)
def test_split_replicas(total, weight, stable, canary):
    assert split_replicas(total, weight) == ReplicaSplit(stable=stable, canary=canary)


@pytest.mark.parametrize("total", [1, 2, 3, 5, 10])
def test_split_replicas_invariants_for_every_weight(total):
    for weight in range(0, 101):
        counts = split_replicas(total, weight)
        assert counts.canary >= (1 if weight else 0), weight
        assert counts.stable >= (1 if weight < 100 else 0), weight
        assert counts.stable + counts.canary == (2 if total == 1 and 0 < weight < 100 else total), weight
        exact = total * weight / 100
        at_a_bound = counts.canary in (1, total - 1)
        assert abs(counts.canary - exact) <= 0.5 or at_a_bound, (weight, counts)


@pytest.mark.parametrize(("total", "weight"), [(0, 10), (-1, 10), (3, -1), (3, 101), (3, 10.5), (True, 10)])
def test_split_replicas_rejects_bad_input(total, weight):
    with pytest.raises(ValueError):
        split_replicas(total, weight)


def test_replica_ratio_patches_only_replicas_of_both_deployments():
    router = ReplicaRatioRouter(replicas=4)
    assert router.targets(RO, NS, STABLE, CANARY) == [
        ObjectRef("apps/v1", "Deployment", NS, "support-v1"),
        ObjectRef("apps/v1", "Deployment", NS, "support-v2"),
    ]
    patches = router.desired(RO, NS, STABLE, CANARY, 25, {})
    assert [(p.name, p.field_manager, p.body) for p in patches] == [
        ("support-v1", "finetune-operator-router-replicaratio",
         {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "support-v1", "namespace": NS}, "spec": {"replicas": 3}}),
        ("support-v2", "finetune-operator-router-replicaratio",
         {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "support-v2", "namespace": NS}, "spec": {"replicas": 1}}),
    ]
    observed = {ObjectRef("apps/v1", "Deployment", NS, p.name): p.body for p in patches}
    assert router.observed_weight(RO, NS, STABLE, CANARY, observed) == 25
    assert router.split(25) == ReplicaSplit(3, 1) and router.split(25).effective_weight == 25


def test_replica_ratio_without_a_candidate_runs_all_replicas_stable():
    [patch] = ReplicaRatioRouter(replicas=4).desired(RO, NS, STABLE, None, 0, {})
    assert (patch.name, patch.body["spec"]) == ("support-v1", {"replicas": 4})


def test_replica_ratio_needs_the_deployments():
    with pytest.raises(RouterError, match="needs the Deployment of Service support-canary"):
        ReplicaRatioRouter(replicas=2).desired(RO, NS, STABLE, Backend(service="support-canary"), 10, {})


# --- The interface -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "router_type", "targets"),
    [
        ({"gatewayAPI": {}}, GatewayApiRouter, [ROUTE_REF]),
        ({"gatewayAPI": {"httpRoute": "shared", "namespace": "gw"}}, GatewayApiRouter,
         [ObjectRef("gateway.networking.k8s.io/v1", "HTTPRoute", "gw", "shared")]),
        ({"istio": {"virtualService": "llm", "routes": ["primary"]}}, IstioRouter, [VS_REF]),
        ({"kserve": {"inferenceService": "support"}}, KServeRouter, [ISVC_REF]),
        ({"replicaRatio": {}}, ReplicaRatioRouter,
         [ObjectRef("apps/v1", "Deployment", NS, "support-v1"), ObjectRef("apps/v1", "Deployment", NS, "support-v2")]),
    ],
    ids=["gatewayapi-default-name", "gatewayapi-named", "istio", "kserve", "replica-ratio"],
)
def test_for_rollout_picks_the_router(spec, router_type, targets):
    router = routers.for_rollout(TrafficRouter.model_validate(spec), replicas=3)
    assert isinstance(router, router_type)
    assert router.targets(RO, NS, STABLE, CANARY) == targets


def test_each_router_has_its_own_field_manager():
    managers = [GatewayApiRouter.field_manager, IstioRouter.field_manager, KServeRouter.field_manager,
                ReplicaRatioRouter.field_manager]
    assert len(set(managers)) == 4
    assert all(m.startswith(routers.FIELD_MANAGER_PREFIX) and len(m) <= 128 for m in managers)


@pytest.mark.parametrize("weight", [-1, 101, 10.0, None])
@pytest.mark.parametrize(
    ("router", "observed"),
    [
        (GatewayApiRouter(), {ROUTE_REF: http_route({"backendRefs": [STABLE_REF]})}),
        (IstioRouter("llm"), {VS_REF: virtual_service(PRIMARY)}),
        (KServeRouter("support"), {ISVC_REF: ISVC}),
        (ReplicaRatioRouter(3), {}),
    ],
    ids=["gatewayapi", "istio", "kserve", "replica-ratio"],
)
def test_weights_outside_0_to_100_are_refused(router, observed, weight):
    with pytest.raises(ValueError, match="canary weight"):
        router.desired(RO, NS, STABLE, CANARY, weight, observed)


# ---- reading the weight back: what a canary step compares with the weight it set

from finetune_operator import routers as _routers  # noqa: E402


@pytest.mark.parametrize(
    ("router", "weight", "carried", "expected"),
    [
        pytest.param(_routers.GatewayApiRouter(), 30, 30, 30, id="gateway-carries-the-weight"),
        pytest.param(_routers.GatewayApiRouter(), 30, 0, 0, id="gateway-not-yet-moved"),
        pytest.param(_routers.GatewayApiRouter(), 30, None, None, id="gateway-says-nothing"),
        pytest.param(_routers.ReplicaRatioRouter(1), 30, 50, 30, id="one-replica-each-is-the-closest-to-30"),
        pytest.param(_routers.ReplicaRatioRouter(4), 30, 25, 30, id="one-of-four-is-the-closest-to-30"),
        pytest.param(_routers.ReplicaRatioRouter(4), 30, 0, 0, id="replicas-not-yet-split"),
        pytest.param(_routers.KServeRouter("isvc"), 60, 60, 60, id="kserve-carries-the-percent"),
    ],
)
def test_applied_weight(router, weight, carried, expected):
    assert _routers.applied_weight(router, weight, carried) == expected
