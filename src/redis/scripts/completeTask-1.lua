--[[
Closes an open task once.
KEYS: task
ARGV: outcome, summary, nowMs
Answers: completed | already | missing
]]
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 'missing' end
if state ~= 'open' then return 'already' end
redis.call('HSET', KEYS[1], 'state', 'completed', 'outcome', ARGV[1], 'summary', ARGV[2], 'completedAtMs', ARGV[3])
return 'completed'
