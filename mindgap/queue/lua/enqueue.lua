-- KEYS: job, enqueued set, tasks, the job's task list.
-- ARGV: job id, options, then (problem id, problem) pairs.
local h = redis.call('HMGET', KEYS[1], 'enqueued', 'status')
if h[1] ~= '0' or h[2] == 'cancelled' then return 0 end
local n = 0
for i = 3, #ARGV, 2 do
  if redis.call('SADD', KEYS[2], ARGV[i]) == 1 then
    local id = redis.call('XADD', KEYS[3], '*', 'job', ARGV[1], 'problem_id', ARGV[i],
      'problem', ARGV[i + 1], 'options', ARGV[2])
    redis.call('RPUSH', KEYS[4], id)
    n = n + 1
  end
end
return n
