-- Argo CD custom health check for finetune.eft.dev/EmbeddingFinetune.
-- Reads the status the operator writes (kstatus conventions): status.observedGeneration and the
-- conditions Ready, Reconciling and Stalled; while a run is under way, its progress (status.trainerStatus).
--   Progressing: the operator has not acted on the latest generation yet, or a run is under way
--                (with its phase, percentage and estimated time left when the trainer reported them).
--   Degraded:    Stalled=True for the latest generation (the run failed; it needs a change of spec).
--   Healthy:     Ready=True for the latest generation (the run succeeded and its model is published).
--   Suspended:   spec.runPolicy.suspend is true and the latest generation has not finished.
-- Written for Lua 5.1 (gopher-lua, as embedded in Argo CD).
local hs = {}

local function find_condition(conditions, type_)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == type_ then
      return c
    end
  end
  return nil
end

local function describe(c, fallback)
  if c == nil then
    return fallback
  end
  local reason = c.reason or ""
  local message = c.message or ""
  if reason ~= "" and message ~= "" then
    return reason .. ": " .. message
  end
  if reason ~= "" then
    return reason
  end
  if message ~= "" then
    return message
  end
  return fallback
end

-- " (Training 57%, about 62 s left)" from status.trainerStatus, or "" before the trainer reported any.
local function progress(ts)
  if ts == nil or type(ts.progressPercentage) ~= "number" then
    return ""
  end
  local text = string.format("%d%%", math.floor(ts.progressPercentage))
  if type(ts.phase) == "string" and ts.phase ~= "" then
    text = ts.phase .. " " .. text
  end
  local left = ts.estimatedRemainingSeconds
  if type(left) == "number" and left > 0 then
    text = text .. string.format(", about %d s left", math.floor(left))
  end
  return " (" .. text .. ")"
end

local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end

local suspended = obj.spec ~= nil and obj.spec.runPolicy ~= nil and obj.spec.runPolicy.suspend == true

if obj.status == nil or obj.status.observedGeneration == nil then
  if suspended then
    hs.status = "Suspended"
    hs.message = "Runs are suspended (spec.runPolicy.suspend)"
    return hs
  end
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe the resource"
  return hs
end

local observed = obj.status.observedGeneration
if generation ~= nil and observed < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to act on generation " .. tostring(generation) ..
    " (observed " .. tostring(observed) .. ")"
  return hs
end

-- A condition set for an older generation says nothing about the latest spec.
local function current(c)
  if c == nil then
    return nil
  end
  if generation ~= nil and c.observedGeneration ~= nil and c.observedGeneration < generation then
    return nil
  end
  return c
end

local conditions = obj.status.conditions
local stalled = current(find_condition(conditions, "Stalled"))
local ready = current(find_condition(conditions, "Ready"))
local reconciling = current(find_condition(conditions, "Reconciling"))

if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(stalled, "The run failed")
  return hs
end

if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready, "The fine-tuned model is published")
  return hs
end

if suspended then
  hs.status = "Suspended"
  hs.message = "Runs are suspended (spec.runPolicy.suspend)"
  return hs
end

hs.status = "Progressing"
if reconciling ~= nil and reconciling.status == "True" then
  hs.message = describe(reconciling, "A run is under way") .. progress(obj.status.trainerStatus)
else
  hs.message = describe(ready, "Waiting for the run to start")
end
return hs
