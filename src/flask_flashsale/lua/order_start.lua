-- A worker is about to call the hook of an order it claimed (careful mode:
-- one order at a time): count a death in advance.
--
-- KEYS[1] orders stream   KEYS[2] attempts hash   KEYS[3] ticket hash
-- ARGV[1] group   ARGV[2] consumer   ARGV[3] entry id
--
-- The mark is taken back when the worker reports the outcome (confirm,
-- retry, compensate). If the worker dies inside the hook (a segfault, an OOM
-- kill, os._exit), the mark stays: the order was the one in hand when its
-- worker died, and after FLASHSALE_MAX_ATTEMPTS such deaths it is given up
-- without its hook being called again. Orders that were merely claimed
-- alongside it are never marked, so they are never blamed.
-- A ticket already cancelled or failed needs no hook: nothing is marked.
-- Reply: {deaths counted so far, this one included (0: not marked), ticket
-- status ('' once expired)}; {-1, ''} when the entry is not held by this
-- consumer (another worker claimed it).
local mine = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2])
if not mine[1] then return {-1, ''} end
local status = redis.call('HGET', KEYS[3], 's') or ''
if status == 'cancelled' or status == 'failed' then return {0, status} end
return {redis.call('HINCRBY', KEYS[2], ARGV[3] .. ':d', 1), status}
