-- View rate limits: every bucket a request must pass, checked and taken in one
-- atomic step (one round trip). gcra.lua is prepended by scripts.py.
--
-- KEYS[i]                bucket i: one key holding its TAT in ms (expires when full)
-- ARGV[1]                now in ms, or '' for Redis TIME (tests pass a clock)
-- ARGV[2i], ARGV[2i+1]   emission interval (ms) and burst of bucket i
--
-- Reply: {allowed (1|0), index of the reported bucket, its burst, tokens left,
--         ms until it is full again, ms until the next token (0 if allowed)}
-- A request passes only if every bucket has a token; then each bucket gives
-- one and the reply reports the one with the fewest tokens left. Otherwise
-- nothing is written and the reply reports the bucket that makes it wait longest.

local now = tonumber(ARGV[1]) or now_ms()
local n = #KEYS
local tats = {}
local worst, worst_wait = 0, 0
for i = 1, n do
  local wait, tat = gcra_check(KEYS[i], tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1]), now)
  tats[i] = tat
  if wait > worst_wait then worst, worst_wait = i, wait end
end

if worst > 0 then
  return {0, worst, tonumber(ARGV[2 * worst + 1]), 0,
          math.ceil(tats[worst] - now), worst_wait}
end

local best, best_left, best_reset = 0, 0, 0
for i = 1, n do
  gcra_commit(KEYS[i], tats[i], now)
  local interval, burst = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  -- Tokens still in the bucket: how many more requests would pass right now.
  local left = math.floor(burst - (tats[i] - now) / interval + 1e-6)
  if best == 0 or left < best_left then
    best, best_left, best_reset = i, left, tats[i] - now
  end
end
return {1, best, tonumber(ARGV[2 * best + 1]), math.max(0, best_left),
        math.ceil(best_reset), 0}
