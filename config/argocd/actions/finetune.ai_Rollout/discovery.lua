-- Which Rollout actions Argo CD offers: promote, promote-full and abort while a canary runs,
-- rollback once a version is stable. Argo CD still runs a disabled action if asked through its
-- API; the operator then records the request and finds nothing to do.
local actions = {}
local status = obj.status or {}
local canary = status.candidateVersion ~= nil
local paused = status.phase == "Paused"
actions["promote"] = {["disabled"] = not canary, ["iconClass"] = "fa fa-fw fa-forward",
                      ["displayName"] = paused and "Promote (leave the pause)" or "Promote (next step)"}
actions["promote-full"] = {["disabled"] = not canary, ["iconClass"] = "fa fa-fw fa-fast-forward",
                           ["displayName"] = "Promote to 100% (skip steps and analysis)"}
actions["abort"] = {["disabled"] = not canary, ["iconClass"] = "fa fa-fw fa-times-circle",
                    ["displayName"] = "Abort (all traffic to stable)"}
actions["rollback"] = {["disabled"] = status.stableVersion == nil, ["iconClass"] = "fa fa-fw fa-undo",
                       ["displayName"] = "Roll back to the previous stable version"}
return actions
