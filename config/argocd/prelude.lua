-- Argo CD health check for a finetune.ai kind. Argo CD runs it in gopher-lua (Lua 5.1) with only
-- the base and table libraries: no string or math functions here. render.py puts this prelude
-- (config/argocd/prelude.lua) in front of each finetune.ai_<Kind>.lua and embeds the result in
-- argocd-cm-patch.yaml.
local hs = {}

local function condition(status, type)
  for _, c in ipairs(status.conditions or {}) do
    if c.type == type then
      return c
    end
  end
  return nil
end

-- status.message, else the message of the summary condition, else "".
local function summary_message(status, summary)
  local message = status.message
  if (message == nil or message == "") and summary ~= nil then
    message = summary.message
  end
  return message or ""
end

-- A status the operator wrote for an older generation says nothing about this one.
local status = obj.status
local generation = obj.metadata.generation
if status == nil or status.observedGeneration == nil
    or (generation ~= nil and status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "waiting for the operator to observe generation " .. tostring(generation or 1)
  return hs
end
