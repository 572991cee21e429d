-- KEYS: job. Returns 1 cancelled now, 0 already finished, -1 unknown.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return -1 end
if status ~= 'queued' and status ~= 'running' then return 0 end
local ts = now()
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'updated', ts, 'finished', ts)
return 1
