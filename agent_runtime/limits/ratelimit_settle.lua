-- Atomic, idempotent settle: free the concurrency slot and refund unused reserved tokens to the
-- bucket that was charged (or charge usage above the reservation to the current bucket).
-- Mirrors MemoryBackend.settle_now.
--
-- KEYS[1] token window (hash bucket -> tokens)   KEYS[2] concurrency leases (zset)
-- ARGV: request id, admission bucket, refund (negative: charge more), track tokens (1|0),
--       now in microseconds ('' = Redis TIME)

local BUCKET = 1000000
local WB = 60
local WINDOW_TTL_MS = (WB + 2) * 1000

-- Only the settle that removes the lease refunds: a repeated settle (client retry after a lost
-- reply, replay after an outage) changes nothing.
if redis.call('ZREM', KEYS[2], ARGV[1]) == 0 then
  return 0
end
local refund = tonumber(ARGV[3])
if ARGV[4] ~= '1' or refund == 0 then
  return 0
end
local now
if ARGV[5] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[5])
end
local current = math.floor(now / BUCKET)
local b = tonumber(ARGV[2])
if refund > 0 then
  -- A refund only matters while the admission's bucket is still counted.
  local held = redis.call('HGET', KEYS[1], ARGV[2])
  if held and b >= current - WB then
    local v = tonumber(held) - refund
    if v < 0 then v = 0 end
    redis.call('HSET', KEYS[1], ARGV[2], string.format('%d', v))
  end
else
  redis.call('HINCRBY', KEYS[1], string.format('%d', current), -refund)
  redis.call('PEXPIRE', KEYS[1], WINDOW_TTL_MS)
end
return 1
