-- KEYS: the job's keys (Keys.job_keys), tasks, aligned.
-- ARGV: group, task entry id, job id, problem id, source, example json, example id.
-- Returns 1 written, 0 duplicate, -1 unknown job, -2 cancelled job.
-- The trainers' entry also carries the task's problem and options and the id of the job's
-- result, so that a trainer can re-queue a problem whose example is too stale (requeue.lua).
local function ack()
  local n = redis.call('XACK', KEYS[8], ARGV[1], ARGV[2])
  redis.call('XDEL', KEYS[8], ARGV[2])
  return n
end
local status = redis.call('HGET', KEYS[1], 'status')
if not status then ack() return -1 end
if status == 'cancelled' then
  if ack() == 1 then redis.call('HINCRBY', KEYS[1], 'skipped', 1) end
  return -2
end
if redis.call('SISMEMBER', KEYS[3], ARGV[4]) == 1 then ack() return 0 end
if redis.call('SADD', KEYS[2], ARGV[4]) == 0 then ack() return 0 end
local result_id = redis.call('XADD', KEYS[4], '*', 'example', ARGV[6])
if redis.call('HGET', KEYS[1], 'feed_trainer') == '1' then
  local task = redis.call('XRANGE', KEYS[8], ARGV[2], ARGV[2])
  local problem, options = '', ''
  if #task == 1 then
    local f = task[1][2]
    for i = 1, #f, 2 do
      if f[i] == 'problem' then problem = f[i + 1] elseif f[i] == 'options' then options = f[i + 1] end
    end
  end
  redis.call('XADD', KEYS[9], '*', 'job', ARGV[3], 'example_id', ARGV[7], 'example', ARGV[6],
    'problem', problem, 'options', options, 'result_id', result_id)
end
redis.call('HINCRBY', KEYS[1], ARGV[5], 1)
redis.call('HINCRBY', KEYS[1], 'done', 1)
settle(status, now())
ack()
return 1
