-- KEYS: job. Mark a queued job running.
if redis.call('HGET', KEYS[1], 'status') == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'running', 'updated', now())
  return 1
end
return 0
