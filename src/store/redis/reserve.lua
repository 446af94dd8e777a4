-- One reservation, "check all, then commit all" (see `book` in the hubgate-engine crate), on Redis's clock.
--
-- KEYS: per window budget its log, its block key and its outside-use hash (see learn.lua);
-- per daily budget its hash.
-- ARGV[1]: number of budgets; then per window `w, capacity, span_us`, per daily
-- `d, limit, offset_ms`. Returns `{1}` granted, `{2, delay_us | -1, index}` not before,
-- `{3, reset_unix_ms}` daily budget spent. Timestamps are written with `%d`: Lua's
-- default number formatting would round 16-digit microseconds.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now_ms = math.floor(now / 1000)
local DAY = 86400000
local function fmt(x) return string.format('%d', x) end
-- A value kept per span-long epoch (`SlidingLog`'s EpochMax): current and previous epoch.
local function remembered(h, e, c, p, span)
  local start = tonumber(h[e])
  if start == nil then return 0 end
  local age = now - start
  local cur, prev = tonumber(h[c]) or 0, tonumber(h[p]) or 0
  if age < span then return math.max(cur, prev) end
  if age < 2 * span then return cur end
  return 0
end
-- Slots held for another client and a lower tier, as the engine's `Outside::held`.
local function held(key, span)
  local h = redis.call('HGETALL', key)
  local f = {}
  for i = 1, #h, 2 do f[h[i]] = h[i + 1] end
  local calls = remembered(f, 'e', 'c', 'p', span)
  local headroom = 0
  if calls > 0 then headroom = 1 + math.floor(calls / 8) end
  return calls + headroom + remembered(f, 'ge', 'gc', 'gp', span)
end
local n = tonumber(ARGV[1])
local b = {}
local k, a = 1, 2
for i = 1, n do
  if ARGV[a] == 'w' then
    b[i] = {w = true, log = KEYS[k], blk = KEYS[k + 1], out = KEYS[k + 2], cap = tonumber(ARGV[a + 1]), span = tonumber(ARGV[a + 2])}
    k = k + 3
  else
    b[i] = {w = false, key = KEYS[k], limit = tonumber(ARGV[a + 1]), offset = tonumber(ARGV[a + 2])}
    k = k + 1
  end
  a = a + 3
end
local worst, worst_i, never = -1, 0, false
for i = 1, n do
  local x = b[i]
  if x.w then
    if x.cap <= 0 then
      never = true
      worst_i = i
    else
      local eff = now
      local last = redis.call('LINDEX', x.log, -1)
      if last then
        last = tonumber(last)
        if last > eff then eff = last end
      end
      x.eff = eff
      local free = eff
      local blk = redis.call('GET', x.blk)
      if blk then
        blk = tonumber(blk)
        if blk > free then free = blk end
      end
      local len = redis.call('LLEN', x.log)
      local cap = math.max(x.cap - held(x.out, x.span), 1)
      if len >= cap then
        local oldest = tonumber(redis.call('LINDEX', x.log, len - cap))
        if oldest + x.span > free then free = oldest + x.span end
      end
      if free > eff and not never and free > worst then
        worst = free
        worst_i = i
      end
    end
  else
    local h = redis.call('HMGET', x.key, 'day', 'used', 'exhausted')
    local day = tonumber(h[1])
    local used = tonumber(h[2]) or 0
    local exhausted = h[3] == '1'
    local today = math.floor((now_ms + x.offset) / DAY)
    local stale = (day == nil) or (today > day)
    local current = today
    if day and day > current then current = day end
    local left
    if (not stale) and exhausted then
      left = 0
    elseif x.limit == 0 then
      left = 1
    elseif stale then
      left = x.limit
    else
      left = x.limit - used
    end
    if left <= 0 then
      return {3, (current + 1) * DAY - x.offset}
    end
    if stale then
      x.day, x.used, x.exhausted = today, 0, '0'
    else
      x.day, x.used, x.exhausted = day, used, h[3] or '0'
    end
  end
end
if never then return {2, -1, worst_i} end
if worst >= 0 then return {2, worst - now, worst_i} end
for i = 1, n do
  local x = b[i]
  if x.w then
    local len = redis.call('RPUSH', x.log, fmt(x.eff))
    if len > x.cap then redis.call('LTRIM', x.log, len - x.cap, -1) end
    redis.call('PEXPIRE', x.log, math.floor(x.span / 1000) + 1000)
  else
    redis.call('HSET', x.key, 'day', fmt(x.day), 'used', fmt(x.used + 1), 'exhausted', x.exhausted)
    local reset = (x.day + 1) * DAY - x.offset
    redis.call('PEXPIRE', x.key, math.max(reset - now_ms, 0) + 60000)
  end
end
return {1}
