-- The waiting room's shared part, prepended to queue_join.lua and
-- queue_poll.lua by scripts.py (after clock.lua, for now_ms).
--
-- KEYS[1] sale hash   KEYS[2] queue hash   KEYS[3] places hash
--
-- The sale hash holds the settings: 'fair' (fifo | lottery), 'rate' (buyers
-- let through per second), 'qopen' (ms) and 'queue', the queue's epoch, set
-- only on a sale with a waiting room (admission.lua reads it too). The queue
-- hash holds:
--   epoch   the sale's 'queue' it belongs to (another one: the queue starts over)
--   n       places given so far: join indexes 1..n (a buyer whose pass lapsed
--           and who joins again takes a new one, at the back)
--   tat     the outflow's theoretical arrival time (GCRA, ms)
--   last    the ready time (ms) of the last place given
--   early, dstart, drate, seed
--           the lottery draw (empty until then): how many joined before the
--           start, the start and the rate it was drawn with, and the seed the
--           web processes shuffle the early places with
-- The places hash maps a buyer to "<join index> <ready ms>" (just "<join
-- index>" for a lottery's early joiner: the draw decides).
--
-- Outflow: a place given at time J (never before the start) is ready at
--   R = max(J, tat - (burst - 1) * interval), then tat = max(tat, J) + interval
-- (GCRA with interval = 1000 / rate ms and burst = max(1, floor(rate)): at
-- most rate * t + burst places become ready in any t seconds, and a quiet
-- queue banks no more than the burst). R is fixed when the place is given, so
-- whether a buyer is ready is a function of Redis time alone: web processes
-- decide it without Redis, and a buyer who stops polling or never orders
-- holds back nobody. The k-th drawn place of a lottery is ready at
-- dstart + max(0, k - burst) * interval: the same schedule, as if the early
-- joiners had joined at the start in the drawn order.

local function fmt(x) return string.format('%.17g', x) end

local function queue_burst(rate) return math.max(1, math.floor(rate)) end

-- The settings and the queue's state after bringing it up to date: a new epoch
-- resets the queue, and a lottery whose start has passed is drawn, with
-- `seed` (random bytes from the caller; only the first draw keeps its seed).
-- Returns nil and 'not_found' or 'no_queue' when there is no waiting room.
local function queue_state(seed)
  local s = redis.call('HMGET', KEYS[1], 'stock', 'queue', 'fair', 'rate', 'starts', 'ends',
                       'remaining', 'qopen')
  if not s[1] then return nil, 'not_found' end
  if not s[2] then return nil, 'no_queue' end
  local now = now_ms()
  local q = redis.call('HMGET', KEYS[2], 'epoch', 'n', 'tat', 'last', 'early', 'dstart',
                       'drate', 'seed')
  if q[1] ~= s[2] then
    redis.call('DEL', KEYS[2], KEYS[3])
    redis.call('HSET', KEYS[2], 'epoch', s[2], 'n', 0)
    q = {s[2], '0', false, false, false, false, false, false}
  end
  local st = {
    epoch = s[2], fair = s[3], rate = tonumber(s[4]), starts = tonumber(s[5]),
    ends = tonumber(s[6]), remaining = tonumber(s[7]), qopen = tonumber(s[8]),
    n = tonumber(q[2]), tat = tonumber(q[3]) or 0, last = tonumber(q[4]) or 0,
    early = tonumber(q[5]), dstart = q[6] or '', drate = q[7] or '', seed = q[8] or '',
    now = now,
  }
  if st.fair == 'lottery' and not st.early and st.starts and now >= st.starts then
    local interval = 1000 / st.rate
    st.early, st.dstart, st.drate, st.seed = st.n, s[5], s[4], seed
    st.tat = math.max(st.tat, st.starts) + st.n * interval
    if st.n > 0 then
      st.last = math.ceil(st.starts + math.max(0, st.n - queue_burst(st.rate)) * interval)
    end
    redis.call('HSET', KEYS[2], 'early', st.n, 'dstart', st.dstart, 'drate', st.drate,
               'seed', seed, 'tat', fmt(st.tat), 'last', fmt(st.last))
  end
  return st
end

local function opt(x)
  if x == nil or x == false then return '' end
  if type(x) == 'number' then return fmt(x) end
  return x
end

-- Reply: {outcome, epoch, fair, rate, starts, ends, remaining, qopen, n, tat,
-- last, early, dstart, drate, seed, now, the buyer's place or ''}.
local function queue_reply(outcome, st, record)
  return {outcome, st.epoch, st.fair, opt(st.rate), opt(st.starts), opt(st.ends),
          opt(st.remaining), opt(st.qopen), opt(st.n), opt(st.tat), opt(st.last),
          opt(st.early), st.dstart, st.drate, st.seed, opt(st.now), record or ''}
end
