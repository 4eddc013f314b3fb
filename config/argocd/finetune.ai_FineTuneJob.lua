-- FineTuneJob (resource.customizations.health.finetune.ai_FineTuneJob), after prelude.lua.
local function percent(n)
  local tenths = n * 10 + 0.5
  return tostring((tenths - tenths % 1) / 10) .. "%"
end

local message = summary_message(status, condition(status, "Succeeded"))
local phase = status.phase

if phase == "Succeeded" then
  hs.status = "Healthy"
  local gates = condition(status, "GatesPassed")
  local mv = status.modelVersion
  if mv == nil then
    hs.message = "succeeded: " .. message
  elseif gates ~= nil and gates.status == "False" then
    -- The run did its job; the version it produced did not pass its blocking gates.
    hs.message = "succeeded, but ModelVersion " .. mv .. " was rejected; " .. (gates.message or "")
  elseif gates ~= nil and gates.status == "True" then
    hs.message = "succeeded; ModelVersion " .. mv .. " approved: " .. (gates.message or "")
  else
    hs.message = "succeeded; ModelVersion " .. mv .. ": " .. message
  end
  return hs
end

if phase == "Failed" then
  hs.status = "Degraded"
  hs.message = message
  return hs
end

if phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = message
  return hs
end

if phase == nil or phase == "Pending" or phase == "Preparing" or phase == "Training" or phase == "Evaluating" then
  hs.status = "Progressing"
  if phase == nil then
    hs.message = "waiting for the operator to report a phase"
    return hs
  end
  local done = ""
  if status.progress ~= nil and status.progress.percent ~= nil and phase ~= "Evaluating" then
    done = ", " .. percent(status.progress.percent) .. " done"
  end
  hs.message = phase .. done .. ": " .. message
  return hs
end

hs.status = "Unknown"
hs.message = "unknown phase " .. tostring(phase) .. ": " .. message
return hs
