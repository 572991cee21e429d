-- KEYS: job, jobs index. ARGV: job id, total, options, feed_trainer, fingerprint.
-- Returns 1 created, 0 exists and fully enqueued, 2 exists and enqueueing must resume,
-- -1 exists with other problems.
local fp = redis.call('HGET', KEYS[1], 'fingerprint')
if fp then
  if fp ~= ARGV[5] then return -1 end
  if redis.call('HGET', KEYS[1], 'enqueued') == '1' then return 0 end
  return 2
end
local ts = now()
local total = tonumber(ARGV[2])
local status = 'queued'
if total == 0 then status = 'completed' end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'status', status, 'total', total, 'done', 0,
  'failed', 0, 'skipped', 0, 'self', 0, 'guided', 0, 'expert', 0, 'created', ts,
  'updated', ts, 'options', ARGV[3], 'feed_trainer', ARGV[4], 'fingerprint', ARGV[5],
  'enqueued', '0')
if total == 0 then redis.call('HSET', KEYS[1], 'finished', ts) end
redis.call('ZADD', KEYS[2], ts, ARGV[1])
return 1
