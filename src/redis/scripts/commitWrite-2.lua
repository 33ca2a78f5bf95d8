--[[
Records a successful IAM write of a role's deny list, only if the writer still held the lock when it finished.
Otherwise another writer may have written in between and this older write landed over it: the role is marked
for a rewrite (`lost`), which every revocation waiting on it sees, so the next one writes the whole list again.
KEYS: state, lock
ARGV: token, appliedSeq, cutoffMs, ttlMs, lostAtStart, field...
Answers: ok | lost
]]
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  redis.call('HINCRBY', KEYS[1], 'lost', 1)
  return 'lost'
end
local applied = tonumber(redis.call('HGET', KEYS[1], 'applied') or '0')
if tonumber(ARGV[2]) > applied then redis.call('HSET', KEYS[1], 'applied', ARGV[2]) end
local cleanAt = tonumber(redis.call('HGET', KEYS[1], 'cleanAt') or '0')
if tonumber(ARGV[5]) > cleanAt then redis.call('HSET', KEYS[1], 'cleanAt', ARGV[5]) end
redis.call('HSET', KEYS[1], 'cutoffMs', ARGV[3])
for i = 6, #ARGV do redis.call('HDEL', KEYS[1], ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('DEL', KEYS[2])
return 'ok'
