-- KEYS: the job's keys (Keys.job_keys), tasks, dead.
-- ARGV: group, consumer, task entry id, job id, problem id, error, deliveries seen by the
-- caller, max deliveries, release idle ms (0: keep), problem json, options json,
-- force ('1': dead-letter now).
-- Returns 1 dead-lettered, 2 settled without a dead letter (cancelled job, already done,
-- unknown job), 0 left for redelivery, -1 not pending (settled elsewhere).
local p = redis.call('XPENDING', KEYS[8], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 then return -1 end
local deliveries = math.max(tonumber(p[1][4]), tonumber(ARGV[7]))
local ts = now()
local status = redis.call('HGET', KEYS[1], 'status')
if deliveries < tonumber(ARGV[8]) and ARGV[12] ~= '1' then
  if status then redis.call('HSET', KEYS[1], 'last_error', ARGV[6], 'updated', ts) end
  if tonumber(ARGV[9]) > 0 and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[8], ARGV[1], ARGV[2], 0, ARGV[3], 'IDLE', ARGV[9], 'JUSTID')
  end
  return 0
end
local dead = false
if not status then
  dead = ARGV[12] == '1'
elseif status ~= 'cancelled' and redis.call('SISMEMBER', KEYS[2], ARGV[5]) == 0
    and redis.call('SADD', KEYS[3], ARGV[5]) == 1 then
  dead = true
  redis.call('HINCRBY', KEYS[1], 'failed', 1)
  redis.call('HSET', KEYS[1], 'last_error', ARGV[6])
  settle(status, ts)
end
if dead then
  redis.call('XADD', KEYS[9], '*', 'stream', 'tasks', 'task_id', ARGV[3], 'job', ARGV[4],
    'problem_id', ARGV[5], 'problem', ARGV[10], 'options', ARGV[11], 'error', ARGV[6],
    'deliveries', deliveries, 'consumer', ARGV[2], 'time', ts)
end
local acked = redis.call('XACK', KEYS[8], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[8], ARGV[3])
if status == 'cancelled' and acked == 1 then
  redis.call('HINCRBY', KEYS[1], 'skipped', 1)
end
if dead then return 1 end
return 2
