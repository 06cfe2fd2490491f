-- The clock every script judges time on: Redis TIME, never the caller's
-- (app servers' clocks drift). Prepended by scripts.py to the scripts that
-- need it, since Redis scripts cannot include one another.

-- Redis TIME in integer milliseconds.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
