--[[
Moves an active (or irrevocable) lease to revoking and makes it due now, so the sweeper re-queues it if the
revocation job is lost. With force ('1'), the lease (also one already revoking) is marked so the worker
force-closes it if the backend refuses.
KEYS: lease, due
ARGV: id, nowMs, reason, force
Answers: started | forced | missing | the state that prevented it
]]
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 'missing' end
if ARGV[4] == '1' and (state == 'active' or state == 'irrevocable' or state == 'revoking') then
  redis.call('HSET', KEYS[1], 'forced', '1')
end
if state == 'revoking' and ARGV[4] == '1' then return 'forced' end
if state ~= 'active' and state ~= 'irrevocable' then return state end
redis.call('HSET', KEYS[1], 'state', 'revoking', 'revokeReason', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 'started'
