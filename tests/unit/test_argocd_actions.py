"""The Argo CD resource actions in config/argocd/actions, run as Argo CD runs them.

Argo CD runs an action's `discovery.lua` to decide which actions its UI offers, and an
`action.lua` to change the live object; it then sends the difference as a merge patch (what
changed under `status` to the status subresource). Both run here in a Lua 5.1 runtime with only
the base and table libraries and a reduced `os`, as Argo CD's gopher-lua has for actions.

The property that matters: an action writes exactly what `kubectl finetune` writes. Each row
applies the CLI's own patch builders (operator/finetune_operator/cli.py) to the same live object
with RFC 7386 merge-patch semantics and compares the result with the action's; then the
operator's real `decide` acts on what the action wrote.
"""

from __future__ import annotations

import copy
import datetime
from typing import Any

import pytest
import yaml

from finetune_operator import cli
from finetune_operator.api.finetunejob import FineTuneJobSpec
from finetune_operator.api.rollout import AbortRequest, PromoteRequest, RollbackRequest, RolloutStatus
from finetune_operator.logic import finetunejob as ftj_logic

from tests.unit import rollout_fixtures as rf
from tests.unit.test_argocd_health import ARGOCD, FTJ_SPEC, RO_SPEC, dump, lua_runtime, obj, render

# Argo CD's safe os library for actions, with a clock this test controls.
SANDBOX = """
getmetatable("").__index = nil
local real_date = os.date
string, math, io, debug, coroutine, package, require = nil, nil, nil, nil, nil, nil, nil
load, loadfile, loadstring, dofile, module = nil, nil, nil, nil, nil
os = {date = function(format, t)
  if NOW ~= nil then
    assert(format == "!%Y-%m-%dT%H:%M:%SZ", "unexpected os.date format " .. tostring(format))
    return NOW
  end
  return real_date(format, t)
end}
"""
REQUESTED_AT = rf.at(30)
NOW = REQUESTED_AT.strftime("%Y-%m-%dT%H:%M:%SZ")
ROLLOUT_ACTIONS = ("abort", "promote", "promote-full", "rollback")
FTJ_ACTIONS = ("resume", "suspend")


def to_python(value: Any) -> Any:
    if not hasattr(value, "items") or isinstance(value, dict):
        return value
    items = dict(value.items())
    if items and list(items) == list(range(1, len(items) + 1)):
        return [to_python(v) for v in items.values()]
    return {k: to_python(v) for k, v in items.items()}


def run_lua(script: str, live: dict[str, Any], now: str | None = NOW) -> Any:
    lua = lua_runtime.LuaRuntime(unpack_returned_tuples=True)
    lua.execute(SANDBOX)
    lua.globals().NOW = now
    lua.globals().obj = lua.table_from(copy.deepcopy(live), recursive=True)
    return to_python(lua.execute(script))


def empty_lists_back(made: Any, live: Any) -> Any:
    """An empty Lua table has no type: Argo CD turns it back into [] where the live object had an
    empty list (cleanReturnedObj in argo-cd's util/lua), and so does this."""
    if made == {} and live == []:
        return []
    if isinstance(made, dict) and isinstance(live, dict):
        return {k: empty_lists_back(v, live.get(k)) for k, v in made.items()}
    if isinstance(made, list) and isinstance(live, list):
        return [empty_lists_back(m, l) for m, l in zip(made, live)] + made[len(live):]
    return made


def run_action(kind: str, name: str, live: dict[str, Any], now: str | None = NOW) -> dict[str, Any]:
    return empty_lists_back(run_lua(render.action_script(kind, name), live, now), live)


def discover(kind: str, live: dict[str, Any]) -> dict[str, bool]:
    """action -> enabled, as Argo CD's UI shows them."""
    found = run_lua(render.discovery_script(kind), live)
    for action in found.values():
        assert action["iconClass"] and action["displayName"], action
    return {name: not action["disabled"] for name, action in found.items()}


def merge_apply(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch, as the API server applies `application/merge-patch+json`."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_apply(result.get(key), value)
    return result


def changed_paths(before: Any, after: Any, path: str = "") -> set[str]:
    if isinstance(before, dict) and isinstance(after, dict):
        paths: set[str] = set()
        for key in set(before) | set(after):
            paths |= changed_paths(before.get(key), after.get(key), f"{path}.{key}")
        return paths
    return set() if before == after else {path}


# --- Rollouts ------------------------------------------------------------------------------------

CLI_REQUESTS = {
    "promote": ("promoteRequest", cli.promote_fields()),
    "promote-full": ("promoteRequest", cli.promote_fields(full=True)),
    "abort": ("abortRequest", cli.abort_fields()),
    "rollback": ("rollbackRequest", cli.rollback_fields()),
}


def rollout_story(step: str) -> rf.Cluster:
    """v1 stable; then v2 canaried at 10% with analysis; then v2 paused at a pause step."""
    steps = [{"setWeight": 10}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}]
    analysis = None if step == "paused" else rf.ONE_METRIC
    cluster = rf.Cluster(rf.spec(analysis=analysis, strategy={"canary": {"steps": steps}}),
                         versions=[rf.version(1)], ready={"v1"})
    cluster.reconcile(0)
    if step == "stable":
        return cluster
    cluster.approve(2, ready=True)
    cluster.reconcile(5, rf.GOOD)
    if step == "paused":
        cluster.reconcile(10)
        assert cluster.status.phase == "Paused", cluster.status.message
    elif step == "stale-requests":
        # An earlier forced rollback to v1 with a reason: nothing of it may carry over.
        cluster.request(**rf.rollback(1, to="v1", reason="old incident"),
                        **{"promote_request": PromoteRequest(requested_at=rf.at(2), full=True, reason="x", requested_by="bob")})
        cluster.status = cluster.status.model_copy(update={"last_handled_request": rf.at(2)})
    return cluster


def live_rollout(cluster: rf.Cluster) -> dict[str, Any]:
    return obj("Rollout", dump(cluster.status), generation=cluster.generation, spec=RO_SPEC)


STORIES = ("stable", "analysing", "paused", "stale-requests")


@pytest.mark.parametrize("story", STORIES)
@pytest.mark.parametrize("action", ROLLOUT_ACTIONS)
def test_rollout_action_writes_what_the_cli_writes(action, story):
    live = live_rollout(rollout_story(story))
    key, fields = CLI_REQUESTS[action]
    expected = merge_apply(live, cli.request_patch(key, fields, requested_at=NOW, requested_by="argocd"))
    made = run_action("Rollout", action, live)
    assert made == expected
    # Only the request changes, and only in status: the spec Git owns is never touched.
    assert all(path.startswith(f".status.{key}") for path in changed_paths(live, made)), changed_paths(live, made)
    assert made["status"][key]["requestedAt"] == NOW


def test_request_fields_are_the_status_models_fields():
    for key, model in {"abortRequest": AbortRequest, "promoteRequest": PromoteRequest,
                       "rollbackRequest": RollbackRequest}.items():
        aliases = {field.alias or name for name, field in model.model_fields.items()}
        assert set(cli.REQUEST_FIELDS[key]) == aliases, key


def test_requested_at_is_an_rfc3339_time_the_operator_parses():
    made = run_action("Rollout", "abort", live_rollout(rollout_story("analysing")), now=None)
    written = made["status"]["abortRequest"]["requestedAt"]
    parsed = RolloutStatus.model_validate(made["status"]).abort_request.requested_at
    assert parsed.tzinfo is not None and written.endswith("Z")
    assert abs((datetime.datetime.now(datetime.UTC) - parsed).total_seconds()) < 60


def act(cluster: rf.Cluster, action: str, seconds: float = 30) -> rf.Cluster:
    """Run the action on the live Rollout at `seconds`, store what it wrote, let the operator act."""
    now = rf.at(seconds).strftime("%Y-%m-%dT%H:%M:%SZ")
    made = run_action("Rollout", action, live_rollout(cluster), now=now)
    cluster.status = RolloutStatus.model_validate(made["status"])
    cluster.reconcile(seconds + 1, rf.GOOD)
    return cluster


def test_abort_action_sends_all_traffic_to_stable():
    cluster = act(rollout_story("analysing"), "abort")
    assert (cluster.status.canary_weight or 0) == 0
    assert cluster.status.stable_version == "v1"
    assert cluster.status.history[-1].action == "abort"


def test_promote_action_leaves_the_pause():
    before = rollout_story("paused")
    assert (before.status.current_step_index, before.status.canary_weight) == (1, 10)
    cluster = act(before, "promote")
    # On to setWeight 50, then the next pause step.
    assert (cluster.status.current_step_index, cluster.status.canary_weight) == (3, 50)


def test_promote_full_action_makes_the_candidate_stable():
    cluster = act(rollout_story("analysing"), "promote-full")
    assert cluster.status.stable_version == "v2"
    assert cluster.status.history[-1].action == "promote"


def test_rollback_action_goes_to_the_previous_stable():
    cluster = act(rollout_story("analysing"), "promote-full")
    cluster = act(cluster, "rollback", 40)
    assert cluster.status.stable_version == "v1", cluster.status.message
    assert cluster.status.history[-1].action == "rollback"


@pytest.mark.parametrize(
    ("story", "enabled"),
    [
        pytest.param("stable", {"rollback"}, id="stable-only-rollback"),
        pytest.param("analysing", set(ROLLOUT_ACTIONS), id="canary-everything"),
        pytest.param("paused", set(ROLLOUT_ACTIONS), id="paused-everything"),
    ],
)
def test_rollout_discovery(story, enabled):
    found = discover("Rollout", live_rollout(rollout_story(story)))
    assert set(found) == set(ROLLOUT_ACTIONS)
    assert {name for name, on in found.items() if on} == enabled


def test_rollout_discovery_before_any_status():
    found = discover("Rollout", obj("Rollout", None))
    assert not any(found.values())


# --- FineTuneJobs --------------------------------------------------------------------------------


def live_ftj(phase: str | None, suspend: bool | None) -> dict[str, Any]:
    spec = {**FTJ_SPEC, **({} if suspend is None else {"suspend": suspend})}
    return obj("FineTuneJob", None if phase is None else {"observedGeneration": 2, "phase": phase}, spec=spec)


@pytest.mark.parametrize(
    ("phase", "suspend", "enabled"),
    [
        pytest.param(None, None, {"suspend"}, id="new-job"),
        pytest.param("Training", None, {"suspend"}, id="training"),
        pytest.param("Training", False, {"suspend"}, id="training-resumed-before"),
        pytest.param("Suspended", True, {"resume"}, id="suspended"),
        pytest.param("Succeeded", None, set(), id="succeeded"),
        pytest.param("Failed", None, set(), id="failed"),
    ],
)
def test_finetunejob_discovery(phase, suspend, enabled):
    found = discover("FineTuneJob", live_ftj(phase, suspend))
    assert set(found) == set(FTJ_ACTIONS)
    assert {name for name, on in found.items() if on} == enabled


@pytest.mark.parametrize(("action", "suspend"), [("suspend", True), ("resume", False)])
@pytest.mark.parametrize("before", [None, False, True])
def test_finetunejob_action_writes_what_the_cli_writes(action, suspend, before):
    live = live_ftj("Training", before)
    made = run_action("FineTuneJob", action, live)
    assert made == merge_apply(live, cli.suspend_patch(suspend))
    assert changed_paths(live, made) <= {".spec.suspend"}
    parsed = ftj_logic.parse_spec(made["spec"])
    assert isinstance(parsed, FineTuneJobSpec) and parsed.suspend is suspend


# --- the patch Argo CD reads -----------------------------------------------------------------------


def test_cm_patch_embeds_the_actions_as_argocd_reads_them():
    patch = yaml.safe_load((ARGOCD / "argocd-cm-patch.yaml").read_text(encoding="utf-8"))
    for kind, names in (("Rollout", ROLLOUT_ACTIONS), ("FineTuneJob", FTJ_ACTIONS)):
        config = yaml.safe_load(patch["data"][f"resource.customizations.actions.finetune.ai_{kind}"])
        assert config["discovery.lua"] == render.discovery_script(kind)
        assert [d["name"] for d in config["definitions"]] == list(names)
        for definition in config["definitions"]:
            assert definition["action.lua"] == render.action_script(kind, definition["name"])
