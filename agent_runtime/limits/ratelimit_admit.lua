-- Atomic admission: check requests (rolling minute), burst (GCRA), tokens (rolling minute)
-- and concurrency together, and charge all of them only when every one passes.
-- Gives the answers of agent_runtime/limits/memory.py (integer microseconds; property tests compare both).
--
-- KEYS[1] request window (hash bucket -> count, and its running sum: see load_window)
-- KEYS[2] burst TAT (string)
-- KEYS[3] token window (hash bucket -> tokens, and its running sum)
-- KEYS[4] leases of admissions in flight (zset LEASE_MARK .. id -> deadline)
-- A lease is taken whenever concurrency or tokens are limited: it is the concurrency slot, and
-- it makes settle idempotent on the server (only the settle that removes the lease refunds).
-- ARGV[1]: 'rpm tpm burst concurrency tokens now lease' (numbers separated by spaces; limits 0 = not
--          set; now in microseconds or '-' for Redis TIME; lease in microseconds)
-- ARGV[2]: request id
-- KEYS[5..] and ARGV[3..]: settles of earlier admissions riding with this one (see
--          ratelimit_settles.lua, prepended when the script is loaded), applied first, in order.
-- Returns one string 'allowed refusal retry_us req_remaining|-1 req_reset_us tok_remaining|-1
--          tok_reset_us bucket now_us': one bulk reply parses far faster than nine integers.

settle_all(5, 3)

local BUCKET = 1000000
local WB = 60
local NEVER = (WB + 1) * BUCKET
local CONC_RETRY = 1000000
local WINDOW_TTL_MS = (WB + 2) * 1000
local WINDOW_RECOUNT = '-3'

local a = {}
for v in string.gmatch(ARGV[1], '%S+') do
  a[#a + 1] = v
end
local rpm = tonumber(a[1])
local tpm = tonumber(a[2])
local burst = tonumber(a[3])
local conc = tonumber(a[4])
local cost = tonumber(a[5])
local rid = ARGV[2]
local now
if a[6] == '-' then
  -- One clock for every replica: the server's.
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(a[6])
end
local lease = tonumber(a[7])
local bucket = math.floor(now / BUCKET)
local bucket_field = string.format('%d', bucket)

-- A window keeps, next to its buckets, its running sum (WINDOW_SUM) and the oldest bucket
-- holding usage (WINDOW_OLDEST): an admission reads those two fields instead of every bucket.
-- They are recounted from the buckets (stale buckets dropped) when the oldest bucket has left
-- the window (once a second under steady traffic), when the sum is missing (a new window, a
-- settle that emptied the oldest bucket, or a script of the earlier layout, which drops these
-- negative fields as stale buckets) and, for the token window, while a lease of the earlier
-- layout is in flight (its settle would change a bucket without the sum: WINDOW_RECOUNT says
-- so until no such lease is left).
local function old_lease(leases_key)
  local ids = redis.call('ZRANGE', leases_key, 0, -1)
  for i = 1, #ids do
    if string.sub(ids[i], 1, 1) ~= LEASE_MARK then
      return true
    end
  end
  return false
end

local function recount(key, leases_key)
  local low = bucket - WB
  local raw = redis.call('HGETALL', key)
  local used, oldest, stale = 0, nil, nil
  for i = 1, #raw, 2 do
    local b = tonumber(raw[i])
    if b >= low then
      local v = tonumber(raw[i + 1])
      used = used + v
      if v > 0 and (oldest == nil or b < oldest) then
        oldest = b
      end
    elseif b >= 0 then
      if stale == nil then stale = {} end
      stale[#stale + 1] = raw[i]
    end
  end
  if stale ~= nil then
    redis.call('HDEL', key, unpack(stale))
  end
  local oldest_field = ''
  if oldest ~= nil then oldest_field = string.format('%d', oldest) end
  redis.call('HSET', key, WINDOW_SUM, string.format('%.0f', used), WINDOW_OLDEST, oldest_field)
  if leases_key ~= nil and old_lease(leases_key) then
    redis.call('HSET', key, WINDOW_RECOUNT, '1')
  else
    redis.call('HDEL', key, WINDOW_RECOUNT)
  end
  redis.call('PEXPIRE', key, WINDOW_TTL_MS)
  return used, oldest
end

-- The usage of a window and its oldest bucket holding usage (nil: none).
local function load_window(key, leases_key)
  local meta = redis.call('HMGET', key, WINDOW_SUM, WINDOW_OLDEST, WINDOW_RECOUNT)
  if not meta[1] or meta[3] then
    return recount(key, leases_key)
  end
  local oldest = tonumber(meta[2])
  if oldest ~= nil and oldest < bucket - WB then
    return recount(key, leases_key)
  end
  return tonumber(meta[1]), oldest
end

-- Charge c to the current bucket, keeping the sum and the oldest bucket. The window's time to
-- live is renewed by the first charge of each bucket, which is enough: a bucket counts for 61 s
-- from its start, the key lives 62 s from its first charge.
local function charge(key, c, oldest)
  local held = redis.call('HINCRBY', key, bucket_field, c)
  redis.call('HINCRBY', key, WINDOW_SUM, c)
  if oldest == nil or bucket < oldest then
    redis.call('HSET', key, WINDOW_OLDEST, bucket_field)
  end
  if held == c then
    redis.call('PEXPIRE', key, WINDOW_TTL_MS)
  end
end

local function check(key, oldest, used, limit, c)
  if used + c <= limit then
    if oldest == nil and c > 0 then
      oldest = bucket
    end
    local reset = 0
    if oldest ~= nil then
      reset = (oldest + WB + 1) * BUCKET - now
    end
    return 0, limit - used - c, reset
  end
  if c > limit then
    return NEVER, math.max(0, limit - used), NEVER
  end
  -- The buckets still in the window, oldest first (a refusal alone needs them).
  local raw, low = redis.call('HGETALL', key), bucket - WB
  local bs, vs = {}, {}
  for i = 1, #raw, 2 do
    local b = tonumber(raw[i])
    if b >= low then
      bs[#bs + 1] = b
      vs[#vs + 1] = tonumber(raw[i + 1])
    end
  end
  local order = {}
  for i = 1, #bs do
    order[i] = i
  end
  table.sort(order, function(x, y) return bs[x] < bs[y] end)
  local need = used + c - limit
  local freed = 0
  for _, i in ipairs(order) do
    freed = freed + vs[i]
    if freed >= need then
      local r = (bs[i] + WB + 1) * BUCKET - now
      return r, math.max(0, limit - used), r
    end
  end
  return NEVER, 0, NEVER
end

local refusal = 0
local retry = 0
local function refuse(code, after)
  if after > retry or refusal == 0 then
    refusal = code
    retry = math.max(retry, after)
  end
end

local leased = conc > 0 or tpm > 0
if leased then
  -- Before the token window is read: only a lease still in flight can be settled.
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', string.format('%.0f', now))
end

local req_remaining = -1
local req_reset = 0
local req_oldest = nil
if rpm > 0 then
  local used
  used, req_oldest = load_window(KEYS[1], nil)
  local after
  after, req_remaining, req_reset = check(KEYS[1], req_oldest, used, rpm, 1)
  if after > 0 then refuse(1, after) end
end

local new_tat = nil
if burst > 0 and rpm > 0 then
  local raw = redis.call('GET', KEYS[2])
  local tat = nil
  if raw then tat = tonumber(raw) end
  local interval = math.ceil(60000000 / rpm)
  local base = now
  if tat ~= nil and tat >= now then base = tat end
  new_tat = base + interval
  local allow_at = new_tat - burst * interval
  if allow_at > now then refuse(2, allow_at - now) end
end

local tok_remaining = -1
local tok_reset = 0
local tok_oldest = nil
if tpm > 0 then
  local used
  used, tok_oldest = load_window(KEYS[3], KEYS[4])
  local after
  after, tok_remaining, tok_reset = check(KEYS[3], tok_oldest, used, tpm, cost)
  if after > 0 then refuse(3, after) end
end

if conc > 0 then
  if redis.call('ZCARD', KEYS[4]) >= conc then refuse(4, CONC_RETRY) end
end

local function reply(ok)
  return string.format('%d %d %.0f %.0f %.0f %.0f %.0f %.0f %.0f', ok, refusal, retry, req_remaining,
    req_reset, tok_remaining, tok_reset, bucket, now)
end

if refusal ~= 0 then
  return reply(0)
end

if rpm > 0 then
  charge(KEYS[1], 1, req_oldest)
end
if new_tat ~= nil then
  redis.call('SET', KEYS[2], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
end
if tpm > 0 and cost > 0 then
  charge(KEYS[3], cost, tok_oldest)
end
if leased then
  redis.call('ZADD', KEYS[4], string.format('%.0f', now + lease), LEASE_MARK .. rid)
  redis.call('PEXPIRE', KEYS[4], math.ceil(lease / 1000) + 1000)
end
return reply(1)
