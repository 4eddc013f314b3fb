-- Which FineTuneJob actions Argo CD offers: suspend while the job can still run, resume once
-- suspended. Both set spec.suspend, as `kubectl finetune suspend|resume` does; the Application
-- ignores that field (examples/gitops/) so a sync does not undo the action.
local actions = {}
local suspended = obj.spec ~= nil and obj.spec.suspend == true
local phase = obj.status ~= nil and obj.status.phase or nil
local finished = phase == "Succeeded" or phase == "Failed"
actions["suspend"] = {["disabled"] = suspended or finished, ["iconClass"] = "fa fa-fw fa-pause",
                      ["displayName"] = "Suspend (stop its Pods)"}
actions["resume"] = {["disabled"] = not suspended, ["iconClass"] = "fa fa-fw fa-play",
                     ["displayName"] = "Resume (from the latest checkpoint)"}
return actions
