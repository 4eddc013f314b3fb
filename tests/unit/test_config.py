"""Operator configuration from the environment: defaults, parsing, and errors naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import finetune_operator
from finetune_operator.config import ConfigError, OperatorConfig


def test_defaults():
    config = OperatorConfig.from_env({})
    assert config.watch_namespaces == ()
    assert config.clusterwide
    assert (config.log_format, config.log_level) == ("text", "INFO")
    assert (config.metrics_host, config.metrics_port) == ("127.0.0.1", 8080)
    assert config.liveness_endpoint == "http://127.0.0.1:8081/healthz"
    assert config.peering is False
    assert config.gpu_hour_price == 0.0


@pytest.mark.parametrize(
    ("env", "attribute", "expected"),
    [
        pytest.param({"FINETUNE_WATCH_NAMESPACES": "team-a, team-b,"}, "watch_namespaces", ("team-a", "team-b"), id="namespace-list"),
        pytest.param({"FINETUNE_WATCH_NAMESPACES": ""}, "clusterwide", True, id="empty-namespaces-is-clusterwide"),
        pytest.param({"FINETUNE_WATCH_NAMESPACES": "ml"}, "clusterwide", False, id="namespaced"),
        pytest.param({"FINETUNE_LOG_FORMAT": "JSON"}, "log_format", "json", id="log-format-any-case"),
        pytest.param({"FINETUNE_LOG_LEVEL": "debug"}, "log_level", "DEBUG", id="log-level-any-case"),
        pytest.param({"FINETUNE_METRICS_PORT": "0"}, "metrics_port", 0, id="metrics-disabled"),
        pytest.param({"FINETUNE_METRICS_HOST": "0.0.0.0"}, "metrics_host", "0.0.0.0", id="metrics-host"),
        pytest.param({"FINETUNE_HEALTH_PORT": "0"}, "liveness_endpoint", None, id="liveness-disabled"),
        pytest.param(
            {"FINETUNE_HEALTH_HOST": "0.0.0.0", "FINETUNE_HEALTH_PORT": "9000"},
            "liveness_endpoint", "http://0.0.0.0:9000/healthz", id="liveness-endpoint",
        ),
        pytest.param({"FINETUNE_HEALTH_HOST": "::1"}, "liveness_endpoint", "http://[::1]:8081/healthz", id="liveness-ipv6"),
        pytest.param({"FINETUNE_PEERING": "on"}, "peering", True, id="peering-on"),
        pytest.param({"FINETUNE_PEERING": "OFF"}, "peering", False, id="peering-off"),
        pytest.param({"FINETUNE_GPU_HOUR_PRICE": "2.49"}, "gpu_hour_price", 2.49, id="gpu-hour-price"),
        pytest.param({"KUBECONFIG": "/elsewhere", "UNRELATED": "x"}, "log_level", "INFO", id="other-variables-ignored"),
        pytest.param({}, "allowed_host_paths", (), id="no-node-paths-allowed-by-default"),
        pytest.param({"FINETUNE_ALLOWED_HOST_PATHS": "/srv/finetune, /tmp/runs/,"}, "allowed_host_paths",
                     ("/srv/finetune", "/tmp/runs"), id="host-path-prefixes-normalised"),
        pytest.param({"FINETUNE_ALLOWED_HOST_PATHS": "//srv//finetune"}, "allowed_host_paths", ("/srv/finetune",),
                     id="host-path-repeated-slashes"),
    ],
)
def test_parses(env, attribute, expected):
    assert getattr(OperatorConfig.from_env(env), attribute) == expected


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        pytest.param({"FINETUNE_METRICS_PORT": "eighty"}, "FINETUNE_METRICS_PORT", id="port-not-a-number"),
        pytest.param({"FINETUNE_HEALTH_PORT": "70000"}, "FINETUNE_HEALTH_PORT", id="port-out-of-range"),
        pytest.param({"FINETUNE_LOG_FORMAT": "xml"}, "FINETUNE_LOG_FORMAT", id="unknown-log-format"),
        pytest.param({"FINETUNE_LOG_LEVEL": "LOUD"}, "FINETUNE_LOG_LEVEL", id="unknown-log-level"),
        pytest.param({"FINETUNE_PEERING": "maybe"}, "FINETUNE_PEERING", id="peering-not-on-off"),
        pytest.param({"FINETUNE_GPU_HOUR_PRICE": "-1"}, "FINETUNE_GPU_HOUR_PRICE", id="negative-price"),
        pytest.param({"FINETUNE_WATCH_NAMESPACES": "Team_A"}, "FINETUNE_WATCH_NAMESPACES", id="namespace-not-a-dns-label"),
        pytest.param({"FINETUNE_ALLOWED_HOST_PATHS": "srv/finetune"}, "FINETUNE_ALLOWED_HOST_PATHS", id="host-path-relative"),
        pytest.param({"FINETUNE_ALLOWED_HOST_PATHS": "/srv/../etc"}, "FINETUNE_ALLOWED_HOST_PATHS", id="host-path-dot-dot"),
        pytest.param({"FINETUNE_ALLOWED_HOST_PATHS": "/"}, "FINETUNE_ALLOWED_HOST_PATHS", id="host-path-root-allows-everything"),
    ],
)
def test_bad_value_names_the_variable(env, variable):
    with pytest.raises(ConfigError) as caught:
        OperatorConfig.from_env(env)
    assert variable in str(caught.value)
    assert repr(next(iter(env.values()))) in str(caught.value)


def test_all_problems_are_reported_together():
    with pytest.raises(ConfigError) as caught:
        OperatorConfig.from_env({"FINETUNE_METRICS_PORT": "x", "FINETUNE_LOG_FORMAT": "xml"})
    assert "FINETUNE_METRICS_PORT" in str(caught.value) and "FINETUNE_LOG_FORMAT" in str(caught.value)


def test_bad_environment_exits_2_before_touching_a_cluster():
    package_root = os.path.dirname(os.path.dirname(finetune_operator.__file__))
    env = {
        **os.environ,
        "PYTHONPATH": package_root,
        "FINETUNE_METRICS_PORT": "eighty",
        "KUBECONFIG": "/nonexistent",
    }
    result = subprocess.run(
        [sys.executable, "-m", "finetune_operator"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "FINETUNE_METRICS_PORT='eighty'" in result.stderr


LEADER = {"FINETUNE_LEADER_ELECTION": "on", "FINETUNE_LEADER_ELECTION_NAMESPACE": "finetune-system"}


def test_leader_election_settings():
    config = OperatorConfig.from_env(LEADER)
    assert config.leader_election and config.leader_election_namespace == "finetune-system"
    assert config.leader_election_name == "finetune-operator"
    assert (config.lease_duration_seconds, config.lease_renew_deadline_seconds, config.lease_retry_period_seconds) == (15, 10, 2)
    assert OperatorConfig.from_env({}).leader_election is False


@pytest.mark.parametrize(
    ("env", "words"),
    [
        pytest.param({"FINETUNE_LEADER_ELECTION": "on"}, ["FINETUNE_LEADER_ELECTION_NAMESPACE", "namespace of its Lease"],
                     id="no-lease-namespace"),
        pytest.param({**LEADER, "FINETUNE_PEERING": "on"}, ["FINETUNE_PEERING=off", "choose one"], id="with-peering"),
        pytest.param({**LEADER, "FINETUNE_LEASE_DURATION_SECONDS": "8"},
                     ["FINETUNE_LEASE_RENEW_DEADLINE_SECONDS (10)", "FINETUNE_LEASE_DURATION_SECONDS (8)", "must hold"],
                     id="renew-deadline-not-below-duration"),
        pytest.param({**LEADER, "FINETUNE_LEASE_RETRY_PERIOD_SECONDS": "10"},
                     ["FINETUNE_LEASE_RETRY_PERIOD_SECONDS (10)", "must hold"], id="retry-not-below-renew-deadline"),
        pytest.param({**LEADER, "FINETUNE_LEADER_ELECTION_NAMESPACE": "Ops_NS"},
                     ["FINETUNE_LEADER_ELECTION_NAMESPACE='Ops_NS'"], id="lease-namespace-not-a-name"),
        pytest.param({**LEADER, "FINETUNE_LEADER_ELECTION": "sometimes"}, ["FINETUNE_LEADER_ELECTION='sometimes'"],
                     id="not-on-off"),
    ],
)
def test_bad_leader_election_settings_are_named(env, words):
    with pytest.raises(ConfigError) as caught:
        OperatorConfig.from_env(env)
    for word in words:
        assert word in str(caught.value)
