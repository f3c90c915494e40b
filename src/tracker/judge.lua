-- Judge-and-remember of the shared task memory (tracker.store = "redis"), run by EVALSHA.
--
-- One call per inspected response. KEYS are its tracked records' keys in record order (a task
-- may come twice; each record then sees the one before it). For each key, atomically: read
-- what was last sent, store what this record will send, merged the way the local memory
-- merges, with the TTL renewed, and return both. The sidecar judges the record against the
-- value read. Redis runs one script at a time, so of two replicas answering the same task at
-- once, the second always reads what the first stored.
--
-- A value is "<stage>:<status>:<progress>". Stage and status are codes into the model
-- (65535: absent or unknown, 65534: the failed stage); progress is the number as the sidecar
-- wrote it, empty when none was ever sent. Values are only cut and joined here, never
-- re-formatted, so a number keeps its exact digits.
--
-- ARGV[1]: TTL in ms; ARGV[2]: the rank of the failed stage in the flow; ARGV[3]: "1" if the
-- route holds a stage regression (the engine fixes it), ARGV[4]: the same for a progress
-- regression; then four per key: stage code, status code, progress ("" if absent), "1" if
-- the record is failing (its progress may drop).
-- Returns two per key: the value read (nil if none) and the value stored.

local UNKNOWN = "65535"
local FAILED = "65534"
local ttl = ARGV[1]
local failed_rank = tonumber(ARGV[2])
local hold_stage = ARGV[3] == "1"
local hold_progress = ARGV[4] == "1"

local function rank(stage)
  if stage == UNKNOWN then
    return nil
  elseif stage == FAILED then
    return failed_rank
  end
  return tonumber(stage)
end

local out = {}
for i, key in ipairs(KEYS) do
  local at = 4 + (i - 1) * 4
  local stage, status, progress = ARGV[at + 1], ARGV[at + 2], ARGV[at + 3]
  local failing = ARGV[at + 4] == "1"
  local last = redis.call("GET", key)
  local last_stage, last_status, last_progress
  if last then
    last_stage, last_status, last_progress = string.match(last, "^(%d+):(%d+):(.*)$")
  end
  if last_stage then
    -- What the sidecar will send: the record, with the regressions the route holds undone.
    if hold_stage then
      local before, after = rank(last_stage), rank(stage)
      if before and after and after < before then
        stage = last_stage
      end
    end
    if hold_progress and not failing and progress ~= "" and last_progress ~= ""
        and tonumber(progress) < tonumber(last_progress) then
      progress = last_progress
    end
    -- A field the record lacks keeps its last known value.
    if stage == UNKNOWN then
      stage = last_stage
    end
    if status == UNKNOWN then
      status = last_status
    end
    if progress == "" then
      progress = last_progress
    end
  else
    -- None, or not a value of ours: the task starts afresh.
    last = false
  end
  local value = stage .. ":" .. status .. ":" .. progress
  redis.call("SET", key, value, "PX", ttl)
  out[2 * i - 1] = last
  out[2 * i] = value
end
return out
