-- KEYS: the job's keys (Keys.job_keys), then the jobs index.
-- ARGV: job id, total, options, feed_trainer, fingerprint (of the problem ids), digest (of
-- the whole request), ttl seconds after it ends ('': never expires), most open jobs ('': no
-- limit).
-- Returns 1 created, 0 exists and fully enqueued, 2 exists and enqueueing must resume,
-- -1 exists with other problems, -2 exists with another body, -3 too many open jobs.
local h = redis.call('HMGET', KEYS[1], 'fingerprint', 'digest', 'enqueued')
if h[1] then
  if h[1] ~= ARGV[5] then return -1 end
  if h[2] and h[2] ~= ARGV[6] then return -2 end
  if h[3] == '1' then return 0 end
  return 2
end
local ts = now()
local gone = redis.call('ZRANGEBYSCORE', KEYS[7], '-inf', ts, 'LIMIT', 0, 100)
if #gone > 0 then
  redis.call('ZREM', KEYS[8], unpack(gone))
  redis.call('ZREM', KEYS[7], unpack(gone))
end
local total = tonumber(ARGV[2])
if total > 0 and ARGV[8] ~= '' and redis.call('SCARD', KEYS[6]) >= tonumber(ARGV[8]) then
  return -3
end
local status = 'queued'
if total == 0 then status = 'completed' end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'status', status, 'total', total, 'done', 0,
  'failed', 0, 'skipped', 0, 'self', 0, 'guided', 0, 'expert', 0, 'created', ts,
  'updated', ts, 'options', ARGV[3], 'feed_trainer', ARGV[4], 'fingerprint', ARGV[5],
  'digest', ARGV[6], 'ttl', ARGV[7], 'enqueued', '0')
redis.call('ZADD', KEYS[8], ts, ARGV[1])
if total == 0 then finish(ts) else redis.call('SADD', KEYS[6], ARGV[1]) end
return 1
