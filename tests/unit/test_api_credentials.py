"""URLs carrying credentials are refused, naming the field and pointing to the secret reference.

The pydantic validator and the CRD's CEL rule share URL_USERINFO_RE and the message; the
integration corpus (tests/integration/invalid/ftj-synthetic-endpoint-credentials-*.yaml) checks
the API server's side.
"""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from finetune_operator.api.common import METADATA_HOST_RE
from finetune_operator.api.finetunejob import MSG_ENDPOINT_CREDENTIALS, URL_USERINFO_RE, SyntheticDataSpec
from finetune_operator.api.rollout import MSG_PROMETHEUS_CREDENTIALS, PrometheusProvider


def synthetic(endpoint: str) -> SyntheticDataSpec:
    return SyntheticDataSpec.model_validate({"endpoint": endpoint, "model": "teacher", "prompt": "Write tickets."})


@pytest.mark.parametrize("endpoint", [
    "https://alice:s3cret@teacher.example/v1",
    "http://token@vllm.models:8000/v1",
    "http://user:p%40ss@host:8000",
])
def test_credentials_in_the_endpoint_are_refused(endpoint):
    with pytest.raises(ValidationError) as refused:
        synthetic(endpoint)
    assert MSG_ENDPOINT_CREDENTIALS in str(refused.value)
    assert "spec.dataset.synthetic.secretRef" in MSG_ENDPOINT_CREDENTIALS


@pytest.mark.parametrize("endpoint", [
    "http://vllm.models:8000/v1",
    "https://teacher.example/v1/users/@me",  # an @ in the path is no credential
    "http://127.0.0.1:8000",
])
def test_plain_endpoints_are_accepted(endpoint):
    assert synthetic(endpoint).endpoint == endpoint


def test_the_cel_rules_use_the_same_patterns():
    for model in (SyntheticDataSpec, PrometheusProvider):
        rules = model.model_json_schema()["x-kubernetes-validations"]
        assert URL_USERINFO_RE in rules[0]["rule"] and METADATA_HOST_RE in rules[1]["rule"]
        assert "metadata-service address" in rules[1]["message"]
    assert SyntheticDataSpec.model_json_schema()["x-kubernetes-validations"][0]["message"] == MSG_ENDPOINT_CREDENTIALS
    # RE2 (CEL) and Python agree on these patterns: no lookarounds or backreferences.
    for pattern in (URL_USERINFO_RE, METADATA_HOST_RE):
        assert not re.search(r"\(\?[=!<]|\\[1-9]", pattern)


@pytest.mark.parametrize("address", [
    "http://u:p@prometheus.monitoring:9090",
    "http://169.254.169.254/latest/meta-data",
    "http://[fd00:ec2::254]/",
    "http://[fe80::1]:9090",
    "http://Metadata.Google.Internal/computeMetadata/v1",
    "http://100.100.100.200/latest",
])
def test_prometheus_address_with_credentials_or_a_metadata_service_is_refused(address):
    with pytest.raises(ValidationError) as refused:
        PrometheusProvider(address=address)
    assert "spec.analysis.prometheus.address" in str(refused.value)


@pytest.mark.parametrize("address", ["http://prometheus.monitoring:9090", "http://127.0.0.1:9090", "http://metadata-proxy:80"])
def test_plain_prometheus_addresses_are_accepted(address):
    assert PrometheusProvider(address=address).address == address


def test_a_teacher_on_the_metadata_service_is_refused():
    with pytest.raises(ValidationError) as refused:
        synthetic("http://169.254.169.254/v1")
    assert "spec.dataset.synthetic.endpoint points at a link-local or cloud metadata-service address" in str(refused.value)
