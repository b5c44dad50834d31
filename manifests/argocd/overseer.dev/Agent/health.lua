-- Argo CD health of an Overseer Agent or Capability, from its Ready condition (Argo CD runs
-- this without Lua's string library: only base, table and package).
local hs = {}
local status = obj.status
local ready = nil
if status ~= nil then
  for _, c in ipairs(status.conditions or {}) do
    if c.type == "Ready" then
      ready = c
    end
  end
end
local generation = obj.metadata.generation
if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Overseer operator to check the " .. obj.kind
elseif status.observedGeneration ~= nil and generation ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the Overseer operator to check generation " .. generation
elseif ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or ""
else
  hs.status = "Degraded"
  hs.message = (ready.reason or "NotReady") .. ": " .. (ready.message or "")
end
return hs
