-- Correction of the shared task memory (tracker.store = "redis"), run by EVALSHA.
--
-- judge.lua stores what a record will be sent as, predicting that the engine applies the
-- fixes the route holds. When a single-record rule vetoed such a fix, the record went out
-- unfixed, and the sidecar puts what was really sent in its place, unless another response
-- has written the key since (then that newer value stands).
--
-- ARGV[1]: TTL in ms; then two per key: the value judge.lua stored, the value to store.
-- Returns how many keys were corrected.

local corrected = 0
for i, key in ipairs(KEYS) do
  if redis.call("GET", key) == ARGV[2 * i] then
    redis.call("SET", key, ARGV[2 * i + 1], "PX", ARGV[1])
    corrected = corrected + 1
  end
end
return corrected
