--[[
An on-call "retry now" of an irrevocable lease: it stays irrevocable (its reason and actor untouched, and a
retry that fails again does not page again) and becomes due now, so the sweeper re-queues its job if the one
queued with this call is lost. Its audit entry (`lease.retry_requested`) is appended in the same step, only
when the lease was irrevocable.
KEYS: lease, due, audit
ARGV: id, nowMs, auditEntry
Answers: retrying | missing | the state that prevented it
]]
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 'missing' end
if state ~= 'irrevocable' then return state end
-- The audit entry first: should it fail (an argument missing), nothing else has been written.
redis.call('XADD', KEYS[3], '*', 'event', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 'retrying'
