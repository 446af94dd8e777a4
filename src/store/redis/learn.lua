-- One lesson on Redis's clock. KEYS[1]: the block key (`block`), the log (`remaining`,
-- `late`, `usage`, `rejected`) or the daily hash; KEYS[2]: the log's outside-use hash
-- (`usage`, `rejected`). ARGV: op, then `delay_us` | `limit, capacity, span_us, reported`
-- | `held_at_ago_us, by_ago_us, span_us` | `limit, capacity, span_us, hub_used,
-- reported_max, admitted_ago_us` | `capacity, span_us` | `limit, offset_ms, reported` |
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
-- The outside-use hash holds the engine's WindowMax of another client's calls (`bs` the
-- current bucket's start, `ba` its index, `b0`..`b4` the buckets, `j0`..`j4` their largest
-- rises, `lv` the latest reading, `r` the bucket's 429s)
-- and its EpochMax of the gap to a lower tier (`ge`, `gc`, `gp`);
-- and for the probe after a quiet spell: `lc` (count last read), `os` (another client last
-- seen) and `pr` (the probe's admission, written by the reservation script).
local function roll(h, e, c, p, span)
  local start = tonumber(h[e])
  if start ~= nil and now < start + span then return false end
  if start ~= nil and now < start + 2 * span then
    h[e], h[p] = start + span, tonumber(h[c]) or 0
  else
    h[e], h[p] = now, 0
  end
  h[c] = 0
  return true
end
-- Records a reading in the current bucket: its value and its rise over the last (`lv`).
local function record(h, v)
  local b, j = 'b' .. h.ba, 'j' .. h.ba
  h[b] = math.max(h[b] or 0, v)
  h[j] = math.max(h[j] or 0, v - (h.lv or 0))
  h.lv = v
end
-- Moves the current quarter-window bucket forward to cover now; true when a new one began.
local function advance(h, span)
  local q = math.max(math.floor(span / 4), 1)
  if h.bs == nil then
    h.bs, h.ba, h.lv = now, 0, 0
    for i = 0, 4 do
      h['b' .. i] = 0
      h['j' .. i] = 0
    end
    return true
  end
  local behind = math.floor((now - h.bs) / q)
  if behind <= 0 then return false end
  for _ = 1, math.min(behind, 5) do
    h.ba = (h.ba + 1) % 5
    h['b' .. h.ba] = 0
    h['j' .. h.ba] = 0
  end
  h.bs = h.bs + behind * q
  return true
end
local function read_hash(key)
  local raw = redis.call('HGETALL', key)
  local h = {}
  for i = 1, #raw, 2 do h[raw[i]] = tonumber(raw[i + 1]) end
  return h
end
local function write_hash(key, h, span)
  local flat = {}
  for f, v in pairs(h) do
    flat[#flat + 1] = f
    flat[#flat + 1] = fmt(v)
  end
  redis.call('HSET', key, unpack(flat))
  redis.call('PEXPIRE', key, math.floor(4 * span / 1000) + 1000)
end
if op == 'usage' then
  local limit, cap, span = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
  local hub_used, reported_max = tonumber(ARGV[5]), tonumber(ARGV[6])
  local admitted = now - tonumber(ARGV[7])
  -- Ours as HubSpot can have counted them (see `SlidingLog::observe_usage`): every send
  -- whose hold had not ended when the call was admitted.
  local log = redis.call('LRANGE', KEYS[1], 0, -1)
  local ours = 0
  for i = 1, #log do
    if tonumber(log[i]) + span > admitted then ours = ours + 1 end
  end
  local calls = math.min(math.max(hub_used - ours, 0), cap)
  local gap = math.min(math.max(limit - reported_max, 0), cap)
  local h = read_hash(KEYS[2])
  if advance(h, span) then h.r = 0 end
  record(h, calls)
  roll(h, 'ge', 'gc', 'gp', span)
  h.gc = math.max(h.gc, gap)
  h.lc = now
  if calls > 0 then h.os = now end
  write_hash(KEYS[2], h, span)
  return 1
end
if op == 'rejected' then
  local cap, span = tonumber(ARGV[2]), tonumber(ARGV[3])
  local h = read_hash(KEYS[2])
  if advance(h, span) then h.r = 0 end
  h.r = math.min((h.r or 0) + 1, cap)
  record(h, h.r)
  h.os = now
  write_hash(KEYS[2], h, span)
  return 1
end
if op == 'late' then
  local held_at, sent, span = now - tonumber(ARGV[2]), now - tonumber(ARGV[3]), tonumber(ARGV[4])
  local log = redis.call('LRANGE', KEYS[1], 0, -1)
  local at = nil
  for i = #log, 1, -1 do
    if tonumber(log[i]) <= held_at then at = i break end
  end
  if at == nil or tonumber(log[at]) >= sent then return 0 end
  -- Shift the sends between the old place and the new one down by one, in place: an
  -- answer's send moves only past the few sent while it was on its way.
  local j = at
  while j < #log and tonumber(log[j + 1]) <= sent do
    redis.call('LSET', KEYS[1], j - 1, log[j + 1])
    j = j + 1
  end
  redis.call('LSET', KEYS[1], j - 1, fmt(sent))
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
