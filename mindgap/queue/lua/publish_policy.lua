-- Publish a policy version if it is newer than the published one.
-- KEYS: policy hash, policy log stream; ARGV: version, path, step, published_at.
-- Returns -1 when published, else the newer version already there.
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if tonumber(ARGV[1]) <= current then return current end
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'path', ARGV[2], 'step', ARGV[3],
           'published_at', ARGV[4])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', 10000, '*', 'version', ARGV[1], 'path', ARGV[2],
           'step', ARGV[3], 'published_at', ARGV[4])
return -1
