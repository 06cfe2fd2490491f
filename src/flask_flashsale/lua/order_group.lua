-- Create the workers' consumer group on a sale's orders stream, if the sale exists.
--
-- KEYS[1] sale hash   KEYS[2] orders stream   ARGV[1] group name
--
-- The group starts at id 0, so orders admitted before any worker ran are read
-- too. A sale deleted meanwhile gets no stream (MKSTREAM would leave an orphan).
-- (tostring: fakeredis hands pcall's error message over as a Python object.)
-- Reply: 1 when the group exists, 0 when the sale does not.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local reply = redis.pcall('XGROUP', 'CREATE', KEYS[2], ARGV[1], '0', 'MKSTREAM')
if type(reply) == 'table' and reply.err and not string.find(tostring(reply.err), 'BUSYGROUP') then
  return redis.error_reply(reply.err)
end
return 1
