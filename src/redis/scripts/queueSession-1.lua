--[[
Queues an STS session for a role's deny list unless a cut-off already covers it.
Fields of the role's state hash: `s:<session id>` = `<seq>|<notAfterMs>|<issuedAtMs>`, `seq`, `applied` (the
highest seq IAM has), `cutoffMs` (the cut-off IAM has), `lost` (writes that lost the lock and may have landed
late, over a newer write) and `cleanAt` (the `lost` count a later complete write started from). IAM's policy is
trusted only while `cleanAt >= lost`.
KEYS: state
ARGV: field, notAfterMs, issuedAtMs, ttlMs
Answers: {'covered', cutoffMs} | {'queued', seq}
]]
local cutoff = tonumber(redis.call('HGET', KEYS[1], 'cutoffMs') or '0')
local clean = tonumber(redis.call('HGET', KEYS[1], 'cleanAt') or '0') >= tonumber(redis.call('HGET', KEYS[1], 'lost') or '0')
if clean and tonumber(ARGV[3]) > 0 and cutoff > tonumber(ARGV[3]) then return {'covered', tostring(cutoff)} end
local existing = redis.call('HGET', KEYS[1], ARGV[1])
local seq
if existing then
  seq = string.match(existing, '^(%d+)')
else
  seq = tostring(redis.call('HINCRBY', KEYS[1], 'seq', 1))
  redis.call('HSET', KEYS[1], ARGV[1], seq .. '|' .. ARGV[2] .. '|' .. ARGV[3])
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {'queued', seq}
