--[[
Counts leases by state inside Redis, so a poll over 10,000 leases sends back a few numbers instead of 10,000
replies for the API to parse. A missing lease counts as `purged`: only settled leases are ever deleted.
KEYS: lease keys (any number)
ARGV: how many irrevocable leases to name at most
Answers: {{state, count, ...}, retrying (active or revoking after a failed attempt), {irrevocable KEYS index, ...}}
]]
local counts, order, irrevocable, retrying = {}, {}, {}, 0
local limit = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  local f = redis.call('HMGET', key, 'state', 'attempts')
  local state = f[1] or 'purged'
  if not counts[state] then counts[state] = 0; table.insert(order, state) end
  counts[state] = counts[state] + 1
  if (state == 'active' or state == 'revoking') and tonumber(f[2] or '0') > 0 then retrying = retrying + 1 end
  if state == 'irrevocable' and #irrevocable < limit then table.insert(irrevocable, i) end
end
local flat = {}
for _, state in ipairs(order) do table.insert(flat, state); table.insert(flat, counts[state]) end
return {flat, retrying, irrevocable}
