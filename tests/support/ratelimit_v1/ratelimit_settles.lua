-- The rate-limit scripts of the earlier key layout (before the running window sums), frozen
-- here so that tests can run old and new replicas side by side on one Redis. Never edit.
-- Settles, shared by ratelimit_settle.lua and ratelimit_admit.lua (which applies the settles
-- that ride with an admission before admitting it). Mirrors MemoryBackend.settle_now.
--
-- Each settle is a pair of KEYS (token window: hash bucket -> tokens; leases: zset id -> deadline)
-- and one ARGV 'request_id admission_bucket refund track now': refund negative charges more,
-- track 1|0 (tokens are limited), now in microseconds or '-' for Redis TIME.
-- Atomic and idempotent: only the settle that removes the lease refunds, so a repeated settle
-- (client retry after a lost reply, replay after an outage) changes nothing.

local SETTLE_BUCKET = 1000000
local SETTLE_WB = 60
local SETTLE_TTL_MS = (SETTLE_WB + 2) * 1000

local function settle(tokens_key, leases_key, spec)
  local rid, b_field, refund_s, track, now_s = string.match(spec, '^(%S+) (%S+) (%S+) (%S+) (%S+)$')
  if rid == nil then
    error('malformed settle: ' .. spec)
  end
  if redis.call('ZREM', leases_key, rid) == 0 then
    return 0
  end
  local refund = tonumber(refund_s)
  if track ~= '1' or refund == 0 then
    return 1
  end
  local now
  if now_s == '-' then
    local t = redis.call('TIME')
    now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  else
    now = tonumber(now_s)
  end
  local current = math.floor(now / SETTLE_BUCKET)
  if refund > 0 then
    -- A refund only matters while the admission's bucket is still counted.
    local held = redis.call('HGET', tokens_key, b_field)
    if held and tonumber(b_field) >= current - SETTLE_WB then
      local v = tonumber(held) - refund
      if v < 0 then v = 0 end
      redis.call('HSET', tokens_key, b_field, string.format('%d', v))
    end
  else
    redis.call('HINCRBY', tokens_key, string.format('%d', current), -refund)
    redis.call('PEXPIRE', tokens_key, SETTLE_TTL_MS)
  end
  return 1
end

-- Every settle whose keys start at KEYS[first_key] and whose arguments start at ARGV[first_arg].
local function settle_all(first_key, first_arg)
  local k = first_key
  for a = first_arg, #ARGV do
    settle(KEYS[k], KEYS[k + 1], ARGV[a])
    k = k + 2
  end
end
