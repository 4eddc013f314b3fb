"""The shipped alert rules: each has a runbook and a promtool unit test that makes it fire."""

from __future__ import annotations

from pathlib import Path

import yaml

RULES = Path(__file__).resolve().parents[2] / "config" / "prometheus"


def alerts() -> list[dict]:
    groups = yaml.safe_load((RULES / "rules.yaml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_every_alert_has_a_severity_summary_and_runbook():
    missing = [
        rule["alert"] for rule in alerts()
        if not rule.get("labels", {}).get("severity")
        or not rule.get("annotations", {}).get("summary")
        or len(rule.get("annotations", {}).get("runbook", "")) < 80
    ]
    assert missing == []


def test_every_alert_has_a_firing_promtool_test():
    tests = yaml.safe_load((RULES / "rules_test.yaml").read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert sorted({rule["alert"] for rule in alerts()} - fired) == []


def test_the_issue_alerts_are_all_there():
    names = {rule["alert"] for rule in alerts()}
    assert names >= {
        "FineTuneJobFailed", "FineTuneJobTrainingStalled", "FineTuneJobStuckPending", "ModelVersionRejected",
        "RolloutDegraded", "RolloutRolledBack", "RolloutPausedInconclusive", "FinetuneOperatorDown",
        "FinetuneOperatorReconcileErrors", "FinetuneServingErrorRateHigh", "FinetuneServingLatencyHigh",
    }
