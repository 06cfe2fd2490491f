-- The host's hook succeeded: acknowledge the order and confirm its ticket, atomically.
--
-- KEYS[1] orders stream   KEYS[2] ticket hash   KEYS[3] retry schedule
-- ARGV[1] group   ARGV[2] entry id
--
-- XACK decides: only the first worker to settle an entry gets 1, so the
-- ticket is confirmed (and order_confirmed sent) once. The ticket only moves
-- queued -> confirmed: one cancelled meanwhile stays cancelled (its stock is
-- already back), so a late hook result never resurrects it.
--
-- Trimming: the entry is deleted (XDEL) right after its XACK, here. That
-- removes exactly the entry just settled and nothing else, so an undelivered
-- or still-pending entry is never trimmed, whatever the number of workers and
-- the order in which they finish. (XTRIM MAXLEN could drop unprocessed
-- entries; XTRIM MINID would need the oldest id that is pending on any
-- consumer or not yet delivered, which cannot be read atomically with the
-- trim outside a script and costs a scan inside one.) So the stream holds
-- exactly the orders not yet settled (XLEN - pending is the backlog), and
-- Redis frees each stream node once all its entries are gone.
--
-- Reply: {outcome, ticket status}: 'confirmed' when this call confirmed the
-- ticket; 'settled' when the entry was acknowledged but the ticket was no
-- longer queued (cancelled, failed, expired); 'stale' when the entry was not
-- pending any more (another worker settled it, or the sale was deleted).
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return {'stale', redis.call('HGET', KEYS[2], 's') or ''}
end
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[2])
local status = redis.call('HGET', KEYS[2], 's')
if status == 'queued' then
  redis.call('HSET', KEYS[2], 's', 'confirmed')
  return {'confirmed', 'confirmed'}
end
return {'settled', status or ''}
