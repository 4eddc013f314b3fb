-- ModelVersion (resource.customizations.health.finetune.ai_ModelVersion), after prelude.lua.
local ready = condition(status, "Ready")
local message = summary_message(status, ready)

-- An invalid spec keeps whatever phase there was (often none): the version cannot be used.
if ready ~= nil and ready.status == "False" and ready.reason == "InvalidSpec" then
  hs.status = "Degraded"
  hs.message = ready.message or message
  return hs
end

local phase = status.phase
if phase == "Approved" or phase == "Production" then
  hs.status = "Healthy"
  hs.message = phase .. ": " .. message
elseif phase == "Deprecated" then
  hs.status = "Healthy"
  hs.message = "deprecated: replaced in production by a newer version"
elseif phase == "Rejected" then
  hs.status = "Degraded"
  hs.message = message
elseif phase == "Candidate" then
  hs.status = "Progressing"
  hs.message = "Candidate: " .. message
elseif phase == nil then
  hs.status = "Progressing"
  hs.message = "waiting for the operator to report a phase"
else
  hs.status = "Unknown"
  hs.message = "unknown phase " .. tostring(phase) .. ": " .. message
end
return hs
