-- Settles, shared by ratelimit_settle.lua and ratelimit_admit.lua (which applies the settles
-- that ride with an admission before admitting it). Mirrors MemoryBackend.settle_now.
--
-- Each settle is a pair of KEYS (token window: hash bucket -> tokens; leases: zset id -> deadline)
-- and one ARGV 'request_id admission_bucket refund track now': refund negative charges more,
-- track 1|0 (tokens are limited), now in microseconds or '-' for Redis TIME.
-- Atomic and idempotent: only the settle that removes the lease refunds, so a repeated settle
-- (client retry after a lost reply, replay after an outage) changes nothing.
--
-- A window also keeps its running sum and its oldest bucket holding usage (WINDOW_SUM and
-- WINDOW_OLDEST, negative field names no bucket can have; see ratelimit_admit.lua): a settle that
-- changes a bucket changes the sum with it, or drops the sum (the next admission recounts) when
-- it emptied the oldest bucket. A lease of this layout is named LEASE_MARK .. request id.

local SETTLE_BUCKET = 1000000
local SETTLE_WB = 60
local SETTLE_TTL_MS = (SETTLE_WB + 2) * 1000
local WINDOW_SUM = '-1'
local WINDOW_OLDEST = '-2'
local LEASE_MARK = '+'

local function settle(tokens_key, leases_key, spec)
  local rid, b_field, refund_s, track, now_s = string.match(spec, '^(%S+) (%S+) (%S+) (%S+) (%S+)$')
  if rid == nil then
    error('malformed settle: ' .. spec)
  end
  if redis.call('ZREM', leases_key, LEASE_MARK .. rid) == 0 then
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
    local got = redis.call('HMGET', tokens_key, b_field, WINDOW_SUM, WINDOW_OLDEST)
    local held = got[1]
    if held and tonumber(b_field) >= current - SETTLE_WB then
      local h = tonumber(held)
      local v = h - refund
      if v < 0 then v = 0 end
      redis.call('HSET', tokens_key, b_field, string.format('%d', v))
      if got[2] then
        if v == 0 and tonumber(got[3]) == tonumber(b_field) then
          redis.call('HDEL', tokens_key, WINDOW_SUM)
        else
          redis.call('HINCRBY', tokens_key, WINDOW_SUM, string.format('%.0f', v - h))
        end
      end
    end
  else
    local field = string.format('%d', current)
    redis.call('HINCRBY', tokens_key, field, -refund)
    local meta = redis.call('HMGET', tokens_key, WINDOW_SUM, WINDOW_OLDEST)
    if meta[1] then
      redis.call('HINCRBY', tokens_key, WINDOW_SUM, string.format('%.0f', -refund))
      local oldest = tonumber(meta[2])
      if oldest == nil or current < oldest then
        redis.call('HSET', tokens_key, WINDOW_OLDEST, field)
      end
    end
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
