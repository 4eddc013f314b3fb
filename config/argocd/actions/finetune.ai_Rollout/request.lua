-- Rollout actions (resource.customizations.actions.finetune.ai_Rollout), shared part: render.py
-- puts it in front of each action.lua of this kind. An action writes a request into the
-- Rollout's status, as `kubectl finetune` does (operator/finetune_operator/cli.py,
-- request_patch): Argo CD sends a change to status to the status subresource, so the spec that
-- Git owns is never touched. The new request replaces the previous one whole, so an earlier
-- toVersion, force or reason never carries over. Argo CD runs actions in gopher-lua (Lua 5.1)
-- with its safe os library: os.date gives the time.
local function request(key, fields)
  if obj.status == nil then
    obj.status = {}
  end
  local made = {}
  for k, v in pairs(fields) do
    made[k] = v
  end
  made.requestedAt = os.date("!%Y-%m-%dT%H:%M:%SZ")
  made.requestedBy = "argocd"
  obj.status[key] = made
  return obj
end
