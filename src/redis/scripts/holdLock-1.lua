--[[
Extends a lock the caller still holds.
KEYS: lock
ARGV: token, ms
Answers: 1 (held, extended) | 0 (no longer held)
]]
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
