--[[
An on-call "retry now" of an irrevocable lease: it stays irrevocable (its reason and actor untouched, and a
retry that fails again does not page again) and becomes due now, so the sweeper re-queues its job if the one
queued with this call is lost.
KEYS: lease, due
ARGV: id, nowMs
Answers: retrying | missing | the state that prevented it
]]
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 'missing' end
if state ~= 'irrevocable' then return state end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 'retrying'
