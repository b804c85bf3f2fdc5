-- Atomic, idempotent spend settle: give back the unused part of a reservation (or charge usage
-- above it) on every window the reservation charged. Mirrors MemorySpendStore.settle_now.
--
-- KEYS[1] leases (zset); KEYS[2..] window totals, as at the reservation.
-- ARGV: request id, then per window: refund in micro-units (negative: charge more), ttl (ms).
-- Returns 'spent1 spent2 ...' after the settle, or '' when this reservation was already settled.

if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then
  return ''
end
local out = {}
for i = 2, #KEYS do
  local at = 2 + (i - 2) * 2
  local v = tonumber(redis.call('INCRBY', KEYS[i], string.format('%.0f', -tonumber(ARGV[at]))))
  if v < 0 then
    -- The window's key expired meanwhile: nothing to give back.
    redis.call('SET', KEYS[i], '0')
    v = 0
  end
  redis.call('PEXPIRE', KEYS[i], ARGV[at + 1])
  out[#out + 1] = string.format('%.0f', v)
end
return table.concat(out, ' ')
