-- Atomic spend reservation: check every window of one budget subject (UTC day, UTC month) and
-- charge the cost to all of them only when each stays within its limit.
-- Mirrors agent_runtime/limits/spend_store.py (MemorySpendStore.reserve_now), integer micro-units.
--
-- KEYS[1] leases of reservations in flight (zset request id -> deadline); KEYS[2..] window totals.
-- ARGV: request id, cost, now (microseconds), lease (microseconds), then per window: limit, ttl (ms).
-- Returns 'refused spent1 spent2 ...': refused is 0 or the 1-based window that refused; the totals
-- are after the charge (or as they stand when refused).

local rid = ARGV[1]
local cost = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local lease = tonumber(ARGV[4])
local spent = {}
local refused = 0
for i = 2, #KEYS do
  local s = tonumber(redis.call('GET', KEYS[i]) or '0')
  spent[i - 1] = s
  if refused == 0 and s + cost > tonumber(ARGV[3 + (i - 1) * 2]) then
    refused = i - 1
  end
end
if refused == 0 then
  for i = 2, #KEYS do
    spent[i - 1] = redis.call('INCRBY', KEYS[i], ARGV[2])
    redis.call('PEXPIRE', KEYS[i], ARGV[4 + (i - 1) * 2])
  end
  -- The lease makes settle idempotent: only the settle that removes it changes the totals.
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now))
  redis.call('ZADD', KEYS[1], string.format('%.0f', now + lease), rid)
  redis.call('PEXPIRE', KEYS[1], math.ceil(lease / 1000) + 1000)
end
local out = {string.format('%d', refused)}
for i = 1, #spent do
  out[#out + 1] = string.format('%.0f', spent[i])
end
return table.concat(out, ' ')
