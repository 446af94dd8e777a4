-- One lesson on Redis's clock. KEYS[1]: the block key (`block`), the log (`remaining`,
-- `late`) or the daily hash. ARGV: op, then `delay_us` | `limit, capacity, span_us,
-- reported` | `admitted_ago_us, sent_ago_us, span_us` | `limit, offset_ms, reported` |
-- `0, offset_ms`.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now_ms = math.floor(now / 1000)
local DAY = 86400000
local function fmt(x) return string.format('%d', x) end
local op = ARGV[1]
if op == 'block' then
  local delay = tonumber(ARGV[2])
  local untl = now + delay
  local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
  if untl > cur then
    redis.call('SET', KEYS[1], fmt(untl), 'PX', math.floor(delay / 1000) + 1000)
  end
  return 1
end
if op == 'remaining' then
  local limit, cap, span, reported = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
  local hub_used = math.min(math.max(limit - reported, 0), cap)
  local log = redis.call('LRANGE', KEYS[1], 0, -1)
  local eff = now
  if #log > 0 and tonumber(log[#log]) > eff then eff = tonumber(log[#log]) end
  local used = 0
  for i = 1, #log do
    if tonumber(log[i]) + span > eff then used = used + 1 end
  end
  if hub_used > used and cap > 0 then
    for i = used + 1, hub_used do redis.call('RPUSH', KEYS[1], fmt(eff)) end
    local len = redis.call('LLEN', KEYS[1])
    if len > cap then redis.call('LTRIM', KEYS[1], len - cap, -1) end
    redis.call('PEXPIRE', KEYS[1], math.floor(span / 1000) + 1000)
  end
  return 1
end
if op == 'late' then
  local admitted, sent, span = now - tonumber(ARGV[2]), now - tonumber(ARGV[3]), tonumber(ARGV[4])
  local log = redis.call('LRANGE', KEYS[1], 0, -1)
  local at = nil
  for i = #log, 1, -1 do
    if tonumber(log[i]) <= admitted then at = i break end
  end
  if at == nil or tonumber(log[at]) >= sent then return 0 end
  table.remove(log, at)
  local to = #log + 1
  for i = 1, #log do
    if tonumber(log[i]) > sent then to = i break end
  end
  table.insert(log, to, fmt(sent))
  redis.call('DEL', KEYS[1])
  for i = 1, #log, 1000 do
    redis.call('RPUSH', KEYS[1], unpack(log, i, math.min(i + 999, #log)))
  end
  redis.call('PEXPIRE', KEYS[1], math.floor(span / 1000) + 1000)
  return 1
end
local limit, offset = tonumber(ARGV[2]), tonumber(ARGV[3])
local h = redis.call('HMGET', KEYS[1], 'day', 'used', 'exhausted')
local day = tonumber(h[1])
local used = tonumber(h[2]) or 0
local exhausted = h[3] or '0'
local today = math.floor((now_ms + offset) / DAY)
if day == nil or today > day then
  day, used, exhausted = today, 0, '0'
end
if op == 'daily_exhausted' then
  exhausted = '1'
elseif op == 'daily_remaining' and limit > 0 then
  used = math.max(used, limit - tonumber(ARGV[4]))
end
redis.call('HSET', KEYS[1], 'day', fmt(day), 'used', fmt(used), 'exhausted', exhausted)
redis.call('PEXPIRE', KEYS[1], math.max((day + 1) * DAY - offset - now_ms, 0) + 60000)
return 1
