--[[
Creates a task unless it exists (a CI job's task has a deterministic id: the first of concurrent creators wins).
KEYS: task
ARGV: expireAtSeconds, field, value, ...
Answers: created | exists
]]
if redis.call('EXISTS', KEYS[1]) == 1 then return 'exists' end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('EXPIREAT', KEYS[1], ARGV[1])
return 'created'
