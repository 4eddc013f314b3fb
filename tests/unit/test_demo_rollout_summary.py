"""`make demo-rollout`'s closing summary: success rate, GPU-hours, time from approval to 100%,
and where the dashboards are."""

from __future__ import annotations

from devcluster import demo_rollout


def mv(evaluated: str | None, created: str = "2025-01-01T11:00:00Z") -> dict:
    return {"metadata": {"creationTimestamp": created}, "status": {"evaluationTime": evaluated} if evaluated else {}}


HISTORY = [
    {"action": "promote", "to": "v1", "time": "2025-01-01T12:00:05Z", "trigger": "Steps"},
    {"action": "promote", "from": "v1", "to": "v2", "time": "2025-01-01T12:03:10Z", "trigger": "Steps"},
    {"action": "rollback", "from": "v3", "to": "v2", "time": "2025-01-01T12:05:00Z", "trigger": "Analysis"},
]


def test_numbers():
    numbers = demo_rollout.platform_numbers(
        {"gpuHours": 0.25, "estimatedCost": 0.75},
        {"v1": mv("2025-01-01T12:00:00Z"), "v2": mv("2025-01-01T12:01:00Z"), "v3": mv("2025-01-01T12:04:00Z")},
        HISTORY,
        {"earnings-json-stable": [90, 90, 0, 0], "earnings-json-canary": [10, 4, 6, 0]},
    )
    assert numbers["requests"] == 100 and numbers["success_rate"] == 0.94
    assert (numbers["gpu_hours"], numbers["estimated_cost"]) == (0.25, 0.75)
    assert numbers["approval_to_full_seconds"] == {"v1": 5.0, "v2": 130.0}  # v3 was rolled back, never at 100%


def test_no_traffic_no_gpus_and_a_version_without_evaluation_time_counts_from_creation():
    numbers = demo_rollout.platform_numbers({}, {"v2": mv(None, created="2025-01-01T12:01:00Z")}, HISTORY, {})
    assert (numbers["success_rate"], numbers["gpu_hours"]) == (None, 0.0)
    assert numbers["approval_to_full_seconds"] == {"v2": 130.0}


def test_summary_names_the_dashboards(capsys):
    numbers = demo_rollout.platform_numbers({}, {}, [], {"a": [4, 3, 1, 0]})
    demo_rollout.print_platform_summary(numbers, gpus=0)
    out = capsys.readouterr().out
    assert "success rate        75.00% of 4 requests" in out
    assert "GPU-hours           0.000" in out and "approval -> 100%    - (no version was promoted)" in out
    for path in demo_rollout.dashboard_files():
        assert f"dashboards/json/{path.name}" in out
    assert "grafana.dashboards.enabled=true" in out
