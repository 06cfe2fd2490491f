-- Admission: one atomic step per order attempt (one round trip).
--
-- KEYS[1] sale hash      KEYS[2] users hash     KEYS[3] ticket hash
-- KEYS[4] orders stream  KEYS[5] per-user bucket KEYS[6] per-sale bucket
-- KEYS[7] buyers hash (user id -> the buyer's ticket tokens, space-separated, oldest first)
-- ARGV[1] user id        ARGV[2] quantity        ARGV[3] ticket id
-- ARGV[4] ticket ttl (s)
-- ARGV[5] per-user interval ms (0 = off)  ARGV[6] per-user burst
-- ARGV[7] per-sale interval ms (0 = off)  ARGV[8] per-sale burst
-- ARGV[9] events channel ('' = no sold-out event)
-- ARGV[10] given-back tickets the buyer's list keeps beyond the per-user limit
-- ARGV[11] the buyer's waiting-room pass as the web process verified it: '' none,
--          else '<queue epoch> <expiry ms>' ('-' for a pass that failed
--          verification); read only when the sale has a waiting room, whose
--          epoch must match and whose expiry is checked on Redis TIME
-- ARGV[12] the event published on ARGV[9] when this attempt takes the last
--          unit (the sale's 'sold_out' message)
-- ARGV[13] '1' when the ticket token was drawn at random for this attempt (no
--          Idempotency-Key): no ticket can exist under it, so the idempotency
--          lookup is skipped; '' otherwise
-- ARGV[14] the ticket token (the part of ARGV[3] after the sale id; Python
--          formats ticket ids, keys.join_ticket_id)
--
-- Reply: {status, '', remaining or -1, retry after ms}; when rate_limited, the
-- second field names the bucket that refused: user or sale. (The caller knows
-- the ticket id of a queued or duplicate attempt: it is ARGV[3].)
-- Order of checks: sale exists, idempotency (the same ticket again: the same
-- quantity replays it, another one is an idempotency_mismatch), the pass of a
-- sale with a waiting room (its 'queue' epoch field is set), window (on
-- Redis TIME), per-user limit, stock, token buckets (a sold-out answer beats
-- a throttled one: it tells the client not to retry). Only a queued attempt
-- writes anything: a refused one takes no token from any bucket.
--
-- A queued attempt also appends its token to the buyer's list (so a buyer
-- whose answer was lost finds the ticket), keeps only its last
-- limit + ARGV[10] entries (a buyer holds at most `limit` live tickets, so a
-- live one is dropped only after more than ARGV[10] newer ones were given
-- back). The list is a field of the sale's buyers hash (no key and no TTL
-- per buyer: ~100 bytes a buyer), deleted with the sale.

local sale = redis.call('HMGET', KEYS[1], 'remaining', 'starts', 'ends', 'limit', 'price',
                        'queue')
if not sale[1] then return {'not_found', '', -1, 0} end
local remaining = tonumber(sale[1])

local known_qty = ARGV[13] ~= '1' and redis.call('HGET', KEYS[3], 'q')
if known_qty then
  if tonumber(known_qty) ~= tonumber(ARGV[2]) then
    return {'idempotency_mismatch', '', remaining, 0}
  end
  return {'duplicate', '', remaining, 0}
end

local pass_expires
if sale[6] then
  if ARGV[11] == '' then return {'pass_required', '', remaining, 0} end
  local epoch, expires = string.match(ARGV[11], '^(%S+) (%d+)$')
  if epoch ~= sale[6] then return {'pass_invalid', '', remaining, 0} end
  pass_expires = tonumber(expires)
end

local now = now_ms()
if pass_expires and now >= pass_expires then return {'pass_invalid', '', remaining, 0} end
local starts = tonumber(sale[2])
if starts and now < starts then return {'not_started', '', remaining, starts - now} end
local ends = tonumber(sale[3])
if ends and now >= ends then return {'ended', '', remaining, 0} end

local qty = tonumber(ARGV[2])
local limit = tonumber(sale[4])
local held = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if held + qty > limit then return {'limit_reached', '', remaining, 0} end
if remaining < qty then return {'sold_out', '', remaining, 0} end

local user_interval = tonumber(ARGV[5])
local sale_interval = tonumber(ARGV[7])
local user_tat, sale_tat
if user_interval > 0 then
  local wait
  wait, user_tat = gcra_check(KEYS[5], user_interval, tonumber(ARGV[6]), now)
  if wait > 0 then return {'rate_limited', 'user', remaining, wait} end
end
if sale_interval > 0 then
  local wait
  wait, sale_tat = gcra_check(KEYS[6], sale_interval, tonumber(ARGV[8]), now)
  if wait > 0 then return {'rate_limited', 'sale', remaining, wait} end
end

if user_tat then gcra_commit(KEYS[5], user_tat, now) end
if sale_tat then gcra_commit(KEYS[6], sale_tat, now) end
remaining = redis.call('HINCRBY', KEYS[1], 'remaining', -qty)
redis.call('HINCRBY', KEYS[2], ARGV[1], qty)
redis.call('HSET', KEYS[3], 'u', ARGV[1], 'q', qty, 's', 'queued', 'a', now)
redis.call('EXPIRE', KEYS[3], tonumber(ARGV[4]))
redis.call('XADD', KEYS[4], '*', 't', ARGV[3], 'u', ARGV[1], 'q', qty,
           'p', sale[5] or '', 'a', now)
local tokens = redis.call('HGET', KEYS[7], ARGV[1])
local token = ARGV[14]
tokens = tokens and (tokens .. ' ' .. token) or token
local width = (limit + tonumber(ARGV[10])) * (#token + 1) - 1
if #tokens > width then tokens = string.sub(tokens, -width) end
redis.call('HSET', KEYS[7], ARGV[1], tokens)
if remaining == 0 and ARGV[9] ~= '' then
  redis.call('PUBLISH', ARGV[9], ARGV[12])
end
return {'queued', '', remaining, 0}
