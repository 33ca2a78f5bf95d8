--[[
Creates a task unless it exists (a CI job's task has a deterministic id: the first of concurrent creators wins),
within its identity's quota of open tasks. The identity's open tasks are a sorted set scored by each task's
expiry: the ones past it are pruned here first, so an expired task holds no place; completeTask takes a
completed one out. The set expires with its latest task, so an identity that stops declaring leaves nothing.
KEYS: task, identityOpenTasks
ARGV: quota (0 = none), nowMs, taskId, expiresAtMs, expireAtSeconds, field, value, ...
Answers: created | exists | task_quota
]]
if redis.call('EXISTS', KEYS[1]) == 1 then return 'exists' end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[2])
local quota = tonumber(ARGV[1])
if quota > 0 and redis.call('ZCARD', KEYS[2]) >= quota then return 'task_quota' end
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
redis.call('EXPIREAT', KEYS[1], ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
local latest = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')[2]
redis.call('PEXPIREAT', KEYS[2], latest)
return 'created'
