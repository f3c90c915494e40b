-- Judge-and-remember of the shared task memory (tracker.store = "redis"), run by EVALSHA.
--
-- One call per inspected response. KEYS are its tracked records' keys in record order (a task
-- may come twice; each record then sees the one before it). For each key, atomically: read
-- what was last sent, store what this record will send, merged the way the local memory
-- merges, with the TTL renewed, and return both. The sidecar judges the record against the
-- value read. Redis runs one script at a time, so of two replicas answering the same task at
-- once, the second always reads what the first stored.
--
-- A value is "<stage>:<status>:<first>:<changed>:<since>:<stalled>:<progress>". Stage and
-- status are codes into the model (65535: absent or unknown, 65534: the failed stage); first,
-- changed and since are when the task was first seen, when its state (status, stage or
-- progress) last changed and when its stage last changed, in Unix ms by the clock of the
-- replica that saw it; stalled is 1 while the task is stalled; progress is the number as the
-- sidecar wrote it, empty when none was ever sent. Values are only cut and joined here, never
-- re-formatted, so a number keeps its exact digits.
--
-- Beside the tasks, two indexes per route, so that any replica can answer for every task:
-- "<prefix><route>.polled:<fp>", the non-terminal tasks by when they were last polled (for
-- the abandonment sweep of upkeep.lua), and "<prefix><route>.stalled.<stage>:<fp>", the
-- stalled tasks of a stage by when their state last changed. Members are task ids.
--
-- ARGV[1]: TTL in ms; ARGV[2]: the rank of the failed stage in the flow; ARGV[3]: "1" if the
-- route holds a stage regression (the engine fixes it), ARGV[4]: the same for a progress
-- regression; ARGV[5]: now, in Unix ms; ARGV[6]: the stall limits in ms, comma-separated, by
-- stage code, then the one of any other stage; ARGV[7]: the terminal status codes,
-- comma-separated; ARGV[8], ARGV[9]: the route's index names before and after "polled" or
-- "stalled.<stage>" ("" for none: the probe); ARGV[10]: the length of the keys' part before
-- the task id; then four per key: stage code, status code, progress ("" if absent), "1" if
-- the record is failing (its progress may drop).
-- Returns three per key: the value read (nil if none), the value stored, and what the poll
-- did: "<stalled in stage>,<recovered from stage>,<left stage>,<ms in it>", each empty if not.

local UNKNOWN = "65535"
local FAILED = "65534"
local ttl = ARGV[1]
local failed_rank = tonumber(ARGV[2])
local hold_stage = ARGV[3] == "1"
local hold_progress = ARGV[4] == "1"
local now = tonumber(ARGV[5])
local limits = {}
for limit in string.gmatch(ARGV[6], "%d+") do
  limits[#limits + 1] = tonumber(limit)
end
local terminal = {}
for code in string.gmatch(ARGV[7], "%d+") do
  terminal[code] = true
end
local head, tail = ARGV[8], ARGV[9]
local id_from = tonumber(ARGV[10]) + 1

local function rank(stage)
  if stage == UNKNOWN then
    return nil
  elseif stage == FAILED then
    return failed_rank
  end
  return tonumber(stage)
end

-- The stall limit of a stage code; codes past the model's stages take the last one.
local function stall_limit(stage)
  return limits[tonumber(stage) + 1] or limits[#limits]
end

local function stalled_index(stage)
  return head .. "stalled." .. stage .. tail
end

local out = {}
for i, key in ipairs(KEYS) do
  local at = 10 + (i - 1) * 4
  local stage, status, progress = ARGV[at + 1], ARGV[at + 2], ARGV[at + 3]
  local failing = ARGV[at + 4] == "1"
  local id = string.sub(key, id_from)
  local last = redis.call("GET", key)
  local last_stage, last_status, last_first, last_changed, last_since, last_stalled, last_progress
  if last then
    last_stage, last_status, last_first, last_changed, last_since, last_stalled, last_progress =
      string.match(last, "^(%d+):(%d+):(%d+):(%d+):(%d+):([01]):(.*)$")
  end
  -- A task seen for the first time: first seen, changed and in its stage since now.
  local first, changed, since, stalled = now, now, now, "0"
  local became, recovered, left, left_ms = "", "", "", ""
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
    first, changed, since, stalled = last_first, last_changed, last_since, last_stalled
    if stage == last_stage and status == last_status and progress == last_progress then
      -- Unchanged: stalled once its stage's limit has passed, unless it has ended.
      local still = not terminal[status] and now - tonumber(last_changed) >= stall_limit(stage)
      if still and stalled == "0" and head ~= "" then
        became = stage
        redis.call("ZADD", stalled_index(stage), last_changed, id)
        redis.call("PEXPIRE", stalled_index(stage), ttl)
      elseif not still and stalled == "1" and head ~= "" then
        -- A reload raised the limit: no longer stalled, without having moved.
        redis.call("ZREM", stalled_index(stage), id)
      end
      stalled = still and "1" or "0"
    else
      changed = now
      if stage ~= last_stage then
        if last_stage ~= UNKNOWN then
          -- Replicas' clocks differ by a little: never a negative duration.
          left, left_ms = last_stage, tostring(math.max(0, now - tonumber(last_since)))
        end
        since = now
      end
      if stalled == "1" then
        recovered = last_stage
        stalled = "0"
        if head ~= "" then
          redis.call("ZREM", stalled_index(last_stage), id)
        end
      end
    end
  else
    -- None, or not a value of ours: the task starts afresh.
    last = false
  end
  local value = table.concat({ stage, status, first, changed, since, stalled, progress }, ":")
  redis.call("SET", key, value, "PX", ttl)
  if head ~= "" then
    local polled = head .. "polled" .. tail
    if terminal[status] then
      redis.call("ZREM", polled, id)
    else
      redis.call("ZADD", polled, now, id)
      redis.call("PEXPIRE", polled, ttl)
    end
  end
  out[3 * i - 2] = last
  out[3 * i - 1] = value
  out[3 * i] = table.concat({ became, recovered, left, left_ms }, ",")
end
return out
