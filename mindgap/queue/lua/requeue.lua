-- A trainer drops a stale example and re-queues its problem for rewriting, once per problem.
-- KEYS: the job's keys (Keys.job_keys), tasks, aligned, staleness counters.
-- ARGV: trainers group, aligned entry id, problem id, source of the stale example.
-- Returns 1 re-queued (the entry acknowledged, the job's result of it deleted, the job
-- reopened if it had finished), 0 not re-queued: train on it (its problem was re-queued
-- before, its job is unknown, or the entry does not carry its problem), -1 the entry is not
-- pending (re-queued already: drop it), -2 its job was cancelled (acknowledged: drop it).
if #redis.call('XPENDING', KEYS[9], ARGV[1], ARGV[2], ARGV[2], 1) == 0 then return -1 end
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 0 end
local function drop()
  redis.call('XACK', KEYS[9], ARGV[1], ARGV[2])
  redis.call('HINCRBY', KEYS[10], 'dropped', 1)
end
if status == 'cancelled' then drop() return -2 end
local entry = redis.call('XRANGE', KEYS[9], ARGV[2], ARGV[2])
if #entry == 0 then drop() return -1 end
local f, e = entry[1][2], {}
for i = 1, #f, 2 do e[f[i]] = f[i + 1] end
if not e.problem or e.problem == '' then return 0 end
if redis.call('HSETNX', KEYS[1], 'requeued:' .. ARGV[3], '1') == 0 then return 0 end
local ts = now()
if redis.call('SREM', KEYS[2], ARGV[3]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'done', -1)
  redis.call('HINCRBY', KEYS[1], ARGV[4], -1)
end
redis.call('HINCRBY', KEYS[1], 'requeued', 1)
if e.result_id and e.result_id ~= '' then redis.call('XDEL', KEYS[4], e.result_id) end
if status ~= 'queued' and status ~= 'running' then
  -- A finished job is open again until the re-queued problem is settled.
  local id = redis.call('HGET', KEYS[1], 'id')
  redis.call('HSET', KEYS[1], 'status', 'running')
  redis.call('HDEL', KEYS[1], 'finished')
  redis.call('SADD', KEYS[6], id)
  redis.call('ZREM', KEYS[7], id)
  for i = 1, 5 do redis.call('PERSIST', KEYS[i]) end
end
local task = redis.call('XADD', KEYS[8], '*', 'job', e.job, 'problem_id', ARGV[3],
  'problem', e.problem, 'options', e.options)
redis.call('RPUSH', KEYS[5], task)
redis.call('HSET', KEYS[1], 'updated', ts)
redis.call('HINCRBY', KEYS[10], 'requeued', 1)
drop()
return 1
