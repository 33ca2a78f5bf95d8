--[[
Appends an audit seal only if the newest seal is still the one the sealer read (compare-and-set), so two
sealers can never both seal the same events: the loser's seal is dropped and it reads again.
KEYS: auditSeals
ARGV: previousSealId ('' = none yet), sealId, jws
Answers: 1 (appended) | 0 (another sealer was first)
]]
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local newestId = ''
if #newest > 0 then newestId = newest[1][1] end
if newestId ~= ARGV[1] then return 0 end
redis.call('XADD', KEYS[1], ARGV[2], 'seal', ARGV[3])
return 1
