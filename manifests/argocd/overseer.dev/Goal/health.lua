-- Argo CD health of an Overseer Goal, from status.phase (Argo CD runs this without Lua's
-- string library: only base, table and package).
local hs = {}
local status = obj.status
local generation = obj.metadata.generation
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Overseer operator to pick the goal up"
  return hs
end
local phase = status.phase
local message = status.message or phase
if phase == "Succeeded" then
  hs.status = "Healthy"
elseif phase == "Failed" or phase == "Cancelled" then
  hs.status = "Degraded"
  message = phase .. ": " .. message
elseif status.observedGeneration ~= nil and generation ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  message = "Waiting for the Overseer operator to act on generation " .. generation
elseif phase == "AwaitingApproval" then
  hs.status = "Suspended"
  local decided = {}
  for _, d in ipairs(status.decisions or {}) do
    decided[d.id] = true
  end
  local waiting = {}
  for _, p in ipairs(status.pendingApprovals or {}) do
    if not decided[p.id] then
      table.insert(waiting, p)
    end
  end
  if #waiting > 0 then
    local first = waiting[1]
    message = #waiting .. " approval(s) pending; " .. (first.summary or first.kind or first.id) ..
      " -- approve with: kubectl annotate goal/" .. obj.metadata.name .. " overseer.dev/approve=" .. first.id ..
      " (or overseer.dev/deny=" .. first.id .. ")"
  end
elseif phase == "Pending" or phase == "Blocked" or phase == "Queued" or phase == "Running" then
  hs.status = "Progressing"
else
  hs.status = "Unknown"
  message = "Unknown phase " .. phase
end
hs.message = message
return hs
