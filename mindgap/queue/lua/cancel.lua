-- KEYS: the job's keys (Keys.job_keys). Returns 1 cancelled now, 0 already finished,
-- -1 unknown. Its queued tasks are removed afterwards by drop_queued.lua.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return -1 end
if status ~= 'queued' and status ~= 'running' then return 0 end
local ts = now()
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'updated', ts)
finish(ts)
return 1
