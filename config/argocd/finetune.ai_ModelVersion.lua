-- Argo CD health check for finetune.ai ModelVersion (resource.customizations.health.finetune.ai_ModelVersion).
-- Argo CD runs it in gopher-lua (Lua 5.1) with only the base and table libraries: no string or
-- math functions here. argocd-cm-patch.yaml embeds this file; regenerate it with render.py.
local hs = {}

local function condition(status, type)
  for _, c in ipairs(status.conditions or {}) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local status = obj.status
local generation = obj.metadata.generation
if status == nil or status.observedGeneration == nil
    or (generation ~= nil and status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "waiting for the operator to observe generation " .. tostring(generation or 1)
  return hs
end

local ready = condition(status, "Ready")
local message = status.message
if (message == nil or message == "") and ready ~= nil then
  message = ready.message
end
if message == nil then
  message = ""
end

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
