--[[
Releases a lock only if the caller still holds it (its token), so a holder whose lock lapsed and was taken by
another never deletes the other's lock.
KEYS: lock
ARGV: token
Answers: 1 (released) | 0 (not held by this token)
]]
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
