-- KEYS: job, its task list, tasks. ARGV: group, chunk size.
-- Delete up to a chunk of a cancelled job's undelivered tasks (counted skipped); delivered
-- ones stay for their workers to acknowledge. Returns how many ids it looked at (0: none
-- left, or the job is not cancelled).
if redis.call('HGET', KEYS[1], 'status') ~= 'cancelled' then return 0 end
local ids = redis.call('LRANGE', KEYS[2], 0, tonumber(ARGV[2]) - 1)
if #ids == 0 then return 0 end
redis.call('LTRIM', KEYS[2], #ids, -1)
local n = 0
for _, id in ipairs(ids) do
  local p = redis.pcall('XPENDING', KEYS[3], ARGV[1], id, id, 1)
  if p.err or #p == 0 then  -- no group yet: nothing was delivered
    n = n + redis.call('XDEL', KEYS[3], id)
  end
end
if n > 0 then redis.call('HINCRBY', KEYS[1], 'skipped', n) end
return #ids
