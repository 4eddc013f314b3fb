-- Rollout (resource.customizations.health.finetune.ai_Rollout), after prelude.lua.
local message = summary_message(status, condition(status, "Ready"))

-- Where a canary stands: "canary v4 at 25% (step 4/7): ".
local function canary()
  local candidate = status.candidateVersion
  if candidate == nil then
    return ""
  end
  local where = "canary " .. candidate .. " at " .. tostring(status.canaryWeight or 0) .. "%"
  local index = status.currentStepIndex
  if index ~= nil then
    local steps = nil
    if obj.spec ~= nil and obj.spec.strategy ~= nil and obj.spec.strategy.canary ~= nil then
      steps = obj.spec.strategy.canary.steps
    end
    if steps ~= nil and #steps > 0 then
      where = where .. " (step " .. tostring(index + 1) .. "/" .. tostring(#steps) .. ")"
    else
      where = where .. " (step " .. tostring(index + 1) .. ")"
    end
  end
  return where .. ": "
end

local phase = status.phase
if phase == "Healthy" or phase == "RolledBack" then
  -- RolledBack: a rollback someone asked for (CLI, or an earlier spec.version) is in place.
  hs.status = "Healthy"
  hs.message = message
elseif phase == "Progressing" then
  hs.status = "Progressing"
  hs.message = canary() .. message
elseif phase == "Paused" then
  -- As Argo CD shows a paused Argo Rollouts Rollout: waiting for a human (promote or abort).
  hs.status = "Suspended"
  hs.message = canary() .. message
elseif phase == "Degraded" then
  hs.status = "Degraded"
  hs.message = message
elseif phase == nil then
  hs.status = "Progressing"
  hs.message = "waiting for the operator to report a phase"
else
  hs.status = "Unknown"
  hs.message = "unknown phase " .. tostring(phase) .. ": " .. message
end
return hs
