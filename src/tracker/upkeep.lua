-- Upkeep of the shared task memory (tracker.store = "redis"), run by EVALSHA from every
-- replica about once a second: forgets the abandoned tasks, then reads the stalled ones.
--
-- Abandoned: a non-terminal task nobody polled for tracker.abandon_after, found in the route's
-- "polled" index (see judge.lua). Its key and index entries are removed in the same atomic
-- call that reports it, so of all the replicas sweeping, exactly one counts it.
--
-- ARGV[1]: now, in Unix ms; ARGV[2]: abandon_after in ms; ARGV[3]: how many stalled tasks of
-- each stage to return (the longest stalled); ARGV[4]: the terminal status codes,
-- comma-separated; ARGV[5]: the stage codes a task may stall in, comma-separated; then three
-- per route: its index names before and after "polled" or "stalled.<stage>", and its keys'
-- part before the task id.
-- Returns strings, space-separated fields, the route as its position among the routes (1..):
--   "a <route> <stage>"   a task abandoned (and forgotten) now;
--   "c <route> <stage> <tasks>"   how many are stalled in a stage (only where some are);
--   "t <route> <stage> <changed> <polled> <first> <progress> <id>"   a stalled task.

local now = tonumber(ARGV[1])
local abandon = tonumber(ARGV[2])
local keep = tonumber(ARGV[3])
local terminal = {}
for code in string.gmatch(ARGV[4], "%d+") do
  terminal[code] = true
end
local stages = {}
for code in string.gmatch(ARGV[5], "%d+") do
  stages[#stages + 1] = code
end
local PATTERN = "^(%d+):(%d+):(%d+):(%d+):(%d+):([01]):(.*)$"
-- At most this many abandoned per route and call: a backlog drains over a few seconds
-- rather than holding Redis in one long script.
local SWEEP = 1000

local out = {}
local routes = (#ARGV - 5) / 3
for r = 1, routes do
  local head, tail, keys = ARGV[3 * r + 3], ARGV[3 * r + 4], ARGV[3 * r + 5]
  local polled = head .. "polled" .. tail
  local idle = redis.call("ZRANGEBYSCORE", polled, "-inf", now - abandon, "LIMIT", 0, SWEEP)
  for _, id in ipairs(idle) do
    redis.call("ZREM", polled, id)
    local value = redis.call("GET", keys .. id)
    local stage, status, stalled
    if value then
      stage, status, _, _, _, stalled = string.match(value, PATTERN)
    end
    -- A key gone (its TTL) or ended since is only dropped from the index.
    if stage and not terminal[status] then
      redis.call("DEL", keys .. id)
      if stalled == "1" then
        redis.call("ZREM", head .. "stalled." .. stage .. tail, id)
      end
      out[#out + 1] = "a " .. r .. " " .. stage
    end
  end
  for _, stage in ipairs(stages) do
    local index = head .. "stalled." .. stage .. tail
    local tasks = redis.call("ZCARD", index)
    if tasks > 0 then
      out[#out + 1] = "c " .. r .. " " .. stage .. " " .. tasks
      if keep > 0 then
        local oldest = redis.call("ZRANGE", index, 0, keep - 1, "WITHSCORES")
        for j = 1, #oldest, 2 do
          local id, changed = oldest[j], oldest[j + 1]
          local value = redis.call("GET", keys .. id)
          local first, progress
          if value then
            _, _, first, _, _, _, progress = string.match(value, PATTERN)
          end
          if first then
            local seen = redis.call("ZSCORE", polled, id) or ""
            out[#out + 1] = table.concat({ "t", r, stage, changed, seen, first, progress, id }, " ")
          else
            -- Forgotten by its TTL while stalled: not stalled any more.
            redis.call("ZREM", index, id)
          end
        end
      end
    end
  end
end
return out
