-- Atomic spend reservation: check every window of a request's budgets (each a UTC day or month
-- total of one budget subject) and charge each its cost only when all stay within their limits.
-- Mirrors agent_runtime/limits/spend_store.py (MemorySpendStore.reserve_now), integer micro-units.
--
-- KEYS[1] leases of reservations in flight (zset request id -> deadline); KEYS[2..] window totals.
-- ARGV: request id, now (microseconds), lease (microseconds), then per window: limit, ttl (ms), cost.
-- Returns 'refused spent1 spent2 ...': refused is 0 or the 1-based window that refused; the totals
-- are after the charge (or as they stand when refused).

local rid = ARGV[1]
local now = tonumber(ARGV[2])
local lease = tonumber(ARGV[3])
local spent = {}
local refused = 0
for i = 2, #KEYS do
  local at = 4 + (i - 2) * 3
  local s = tonumber(redis.call('GET', KEYS[i]) or '0')
  spent[i - 1] = s
  if refused == 0 and s + tonumber(ARGV[at + 2]) > tonumber(ARGV[at]) then
    refused = i - 1
  end
end
if refused == 0 then
  for i = 2, #KEYS do
    local at = 4 + (i - 2) * 3
    spent[i - 1] = redis.call('INCRBY', KEYS[i], ARGV[at + 2])
    redis.call('PEXPIRE', KEYS[i], ARGV[at + 1])
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
