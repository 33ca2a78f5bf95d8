--[[
Closes an open task once, and takes it out of its identity's open tasks (its place in the quota is free).
KEYS: task, identityOpenTasks
ARGV: outcome, summary, nowMs, taskId
Answers: completed | already | missing
]]
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 'missing' end
if state ~= 'open' then return 'already' end
redis.call('HSET', KEYS[1], 'state', 'completed', 'outcome', ARGV[1], 'summary', ARGV[2], 'completedAtMs', ARGV[3])
redis.call('ZREM', KEYS[2], ARGV[4])
return 'completed'
