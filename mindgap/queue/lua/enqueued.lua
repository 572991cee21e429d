-- KEYS: job, enqueued set.
if redis.call('HGET', KEYS[1], 'enqueued') == '0' then
  redis.call('HSET', KEYS[1], 'enqueued', '1')
end
redis.call('DEL', KEYS[2])
return 1
