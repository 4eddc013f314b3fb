"""URLs carrying credentials are refused, naming the field and pointing to the secret reference.

The pydantic validator and the CRD's CEL rule share URL_USERINFO_RE and the message; the
integration corpus (tests/integration/invalid/ftj-synthetic-endpoint-credentials-*.yaml) checks
the API server's side.
"""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from finetune_operator.api.finetunejob import MSG_ENDPOINT_CREDENTIALS, URL_USERINFO_RE, SyntheticDataSpec


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


def test_the_cel_rule_uses_the_same_pattern():
    rules = SyntheticDataSpec.model_json_schema()["x-kubernetes-validations"]
    assert [r["message"] for r in rules] == [MSG_ENDPOINT_CREDENTIALS]
    assert URL_USERINFO_RE in rules[0]["rule"]
    # RE2 (CEL) and Python agree on this pattern: no lookarounds or backreferences.
    assert not re.search(r"\(\?[=!<]|\\[1-9]", URL_USERINFO_RE)
