-- Shared Lua: current time (Redis clock, so all workers agree) and the job's settlement.
local function now()
  local t = redis.call('TIME')
  return tostring(tonumber(t[1]) + tonumber(t[2]) / 1000000)
end
local function settle(job, status, ts)
  local h = redis.call('HMGET', job, 'total', 'done', 'failed')
  local total, done, failed = tonumber(h[1]), tonumber(h[2]), tonumber(h[3])
  local new = status
  if done + failed >= total then
    if failed > 0 then new = 'completed_with_failures' else new = 'completed' end
    redis.call('HSET', job, 'finished', ts)
  elseif status == 'queued' then
    new = 'running'
  end
  redis.call('HSET', job, 'status', new, 'updated', ts)
end
