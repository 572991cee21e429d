-- KEYS: job, tasks. ARGV: group, task entry id. Ack a task of a cancelled/finished/unknown job.
local acked = redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[2], ARGV[2])
if acked == 1 and redis.call('HGET', KEYS[1], 'status') == 'cancelled' then
  redis.call('HINCRBY', KEYS[1], 'skipped', 1)
end
return acked
