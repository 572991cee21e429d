-- Shared Lua: current time (Redis clock, so all workers agree) and the job's settlement.
-- Scripts that may finish a job take its keys first (Keys.job_keys): KEYS[1] the hash,
-- [2] done, [3] failed, [4] results, [5] task list, [6] open index, [7] expiring index.
local function now()
  local t = redis.call('TIME')
  return tostring(tonumber(t[1]) + tonumber(t[2]) / 1000000)
end
local function finish(ts)
  -- The job ended: out of the open index; its keys expire ttl seconds from now (if set).
  local h = redis.call('HMGET', KEYS[1], 'id', 'ttl')
  redis.call('HSET', KEYS[1], 'finished', ts)
  redis.call('SREM', KEYS[6], h[1])
  if h[2] and h[2] ~= '' then
    local ms = math.ceil(tonumber(h[2]) * 1000)
    for i = 1, 5 do redis.call('PEXPIRE', KEYS[i], ms) end
    redis.call('ZADD', KEYS[7], tonumber(ts) + ms / 1000, h[1])
  end
end
local function settle(status, ts)
  local h = redis.call('HMGET', KEYS[1], 'total', 'done', 'failed')
  local total, done, failed = tonumber(h[1]), tonumber(h[2]), tonumber(h[3])
  local new = status
  if done + failed >= total then
    if failed > 0 then new = 'completed_with_failures' else new = 'completed' end
    redis.call('DEL', KEYS[5])
    finish(ts)
  elseif status == 'queued' then
    new = 'running'
  end
  redis.call('HSET', KEYS[1], 'status', new, 'updated', ts)
end
