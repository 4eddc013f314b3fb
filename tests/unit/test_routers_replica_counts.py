"""The router interface carries the one difference between routers the controller acts on:
whether the router splits traffic by scaling the versions' Deployments."""

from __future__ import annotations

import pytest

from finetune_operator import routers
from finetune_operator.routers.gatewayapi import GatewayApiRouter
from finetune_operator.routers.istio import IstioRouter
from finetune_operator.routers.kserve import KServeRouter
from finetune_operator.routers.replicaratio import ReplicaRatioRouter


@pytest.mark.parametrize("router", [GatewayApiRouter, IstioRouter, KServeRouter], ids=lambda r: r.kind)
def test_routers_of_their_own_objects_leave_replicas_alone(router):
    instance = router.__new__(router)
    assert instance.owns_replicas is False
    assert instance.replica_counts(25) is None


@pytest.mark.parametrize(("replicas", "weight", "expected"), [(4, 25, (3, 1)), (4, 50, (2, 2)), (10, 10, (9, 1)), (2, 90, (1, 1))])
def test_the_replica_ratio_router_owns_replicas_and_splits_them(replicas, weight, expected):
    router = ReplicaRatioRouter(replicas)
    assert router.owns_replicas is True
    assert router.replica_counts(weight) == expected
    split = routers.split_replicas(replicas, weight)
    assert (split.stable, split.canary) == expected
