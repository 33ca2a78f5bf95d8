--[[
Moves an active (or irrevocable) lease to revoking and makes it due now, so the sweeper re-queues it if the
revocation job is lost. With force ('1'), the lease (also one already revoking) is marked so the worker
force-closes it if the backend refuses. The request's audit entry (`lease.revoke_requested`) is appended in
the same step, only when this call changed the lease (started, or newly forced): a lease is never revoking
without it, and a request repeated (a retry, a replay after a failover) appends nothing.
KEYS: lease, due, audit
ARGV: id, nowMs, reason, force, auditEntry
Answers: started | forced (newly) | missing | the state that prevented it (`revoking` when already forced)
]]
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 'missing' end
if state == 'revoking' then
  if ARGV[4] ~= '1' or redis.call('HGET', KEYS[1], 'forced') == '1' then return state end
  redis.call('XADD', KEYS[3], '*', 'event', ARGV[5])
  redis.call('HSET', KEYS[1], 'forced', '1')
  return 'forced'
end
if state ~= 'active' and state ~= 'irrevocable' then return state end
-- The audit entry first: should it fail (an argument missing), nothing else has been written.
redis.call('XADD', KEYS[3], '*', 'event', ARGV[5])
if ARGV[4] == '1' then redis.call('HSET', KEYS[1], 'forced', '1') end
redis.call('HSET', KEYS[1], 'state', 'revoking', 'revokeReason', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 'started'
