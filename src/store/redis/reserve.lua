-- A lane's reservations, each "check all, then commit all" (see `book` in the hubgate-engine
-- crate), in order, on Redis's clock: each one checks against what the ones before it
-- committed, and the first refused ends the batch (the ones after it are not tried).
--
-- KEYS: per window budget its log, its block key and its outside-use hash (see learn.lua);
-- per daily budget its hash; reservation after reservation.
-- ARGV[1]: number of reservations; then per reservation its number of budgets and per
-- window `w, capacity, span_us, learn_first`, per daily `d, limit, offset_ms`. Returns
-- `{granted}`, or `{granted, 2, delay_us | -1, index}` (not before; `index` among the refused
-- reservation's budgets) or `{granted, 3, reset_unix_ms}` (daily budget spent) for the
-- reservation after the `granted` first ones; when all were granted, that refusal is what
-- one more reservation like the last would meet now (nothing is spent for it). Timestamps are
-- written with `%d`: Lua's default number formatting would round 16-digit microseconds.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now_ms = math.floor(now / 1000)
local DAY = 86400000
local function fmt(x) return string.format('%d', x) end
-- A value kept per span-long epoch (`SlidingLog`'s EpochMax): current and previous epoch.
local function remembered(h, e, c, p, span)
  local start = h[e]
  if start == nil then return 0 end
  local age = now - start
  local cur, prev = h[c] or 0, h[p] or 0
  if age < span then return math.max(cur, prev) end
  if age < 2 * span then return cur end
  return 0
end
-- The engine's `WindowMax::value_at`: the largest of the quarter-window buckets within
-- reach, or of the last two when the readings rose smoothly all window and lately.
local function window_max(f, span)
  if f.bs == nil then return 0 end
  local behind = math.floor((now - f.bs) / math.max(math.floor(span / 4), 1))
  local peak, jump, recent = 0, 0, 0
  for back = 0, 4 do
    if back + behind < 5 then
      local i = (f.ba - back) % 5
      peak = math.max(peak, f['b' .. i] or 0)
      jump = math.max(jump, f['j' .. i] or 0)
      if back + behind < 2 then recent = math.max(recent, f['b' .. i] or 0) end
    end
  end
  if jump <= 1 + math.floor(peak / 16) and behind < 2 then return recent end
  return peak
end
local function fields(key)
  local h = redis.call('HGETALL', key)
  local f = {}
  for i = 1, #h, 2 do f[h[i]] = tonumber(h[i + 1]) end
  return f
end
-- Slots held for another client (its use and headroom) and a lower tier, as the engine's
-- `Outside::held`.
local function held(f, span)
  local calls = window_max(f, span)
  local headroom = 0
  if calls > 0 then headroom = 1 + math.floor(calls / 16) end
  return calls + headroom + remembered(f, 'ge', 'gc', 'gp', span)
end
-- Whether a send now ends a quiet spell (`SlidingLog::ends_quiet_spell`): `lc` is when
-- HubSpot's count was last read, `os` when another client was last seen.
local function quiet(f, span)
  if f.lc == nil or now >= f.lc + 4 * span then return true end
  return f.os ~= nil and now < f.os + 4 * span and now > f.lc + math.floor(span / 10)
end
local k, a = 1, 2
-- The next reservation's budgets from KEYS and ARGV.
local function parse()
  local n = tonumber(ARGV[a])
  a = a + 1
  local b = {}
  for i = 1, n do
    if ARGV[a] == 'w' then
      b[i] = {w = true, log = KEYS[k], blk = KEYS[k + 1], out = KEYS[k + 2], cap = tonumber(ARGV[a + 1]), span = tonumber(ARGV[a + 2]), lf = ARGV[a + 3] == '1'}
      k = k + 3
      a = a + 4
    else
      b[i] = {w = false, key = KEYS[k], limit = tonumber(ARGV[a + 1]), offset = tonumber(ARGV[a + 2])}
      k = k + 1
      a = a + 3
    end
  end
  return b, n
end
-- Nothing when every budget of `b` has a slot now (and what to commit is kept in `b`),
-- or the refusal: `{2, delay_us | -1, index}` or `{3, reset_unix_ms}`.
local function check(b, n)
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
        local f = fields(x.out)
        x.probe = x.lf and quiet(f, x.span)
        -- A probe out and unanswered holds the rest back (the engine's `probe_out_until`,
        -- with its timeout for a delay not yet measured: a twentieth of a span, at most
        -- 250 ms), and no new probe starts while one is unanswered.
        x.unanswered = f.pr ~= nil and (f.lc == nil or f.lc < f.pr)
        if x.probe and x.unanswered then
          local untl = f.pr + math.min(math.floor(x.span / 20), 250000)
          if untl > free then free = untl end
        end
        local len = redis.call('LLEN', x.log)
        local cap = math.max(x.cap - held(f, x.span), 1)
        -- Sends spaced a span over the slots left apart while another client is held for
        -- (the engine's `spaced_from`); `la` is the latest admission.
        if x.lf and window_max(f, x.span) > 0 and f.la ~= nil then
          local spaced = f.la + math.floor(x.span / cap)
          if spaced > free then free = spaced end
        end
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
  return nil
end
-- Spends one slot of every budget of `b`.
local function commit(b, n)
  for i = 1, n do
    local x = b[i]
    if x.w then
      local len = redis.call('RPUSH', x.log, fmt(x.eff))
      if len > x.cap then redis.call('LTRIM', x.log, len - x.cap, -1) end
      redis.call('PEXPIRE', x.log, math.floor(x.span / 1000) + 1000)
      if x.lf then
        if x.probe and not x.unanswered then redis.call('HSET', x.out, 'pr', fmt(x.eff)) end
        redis.call('HSET', x.out, 'la', fmt(x.eff))
        redis.call('PEXPIRE', x.out, math.floor(4 * x.span / 1000) + 1000)
      end
    else
      redis.call('HSET', x.key, 'day', fmt(x.day), 'used', fmt(x.used + 1), 'exhausted', x.exhausted)
      local reset = (x.day + 1) * DAY - x.offset
      redis.call('PEXPIRE', x.key, math.max(reset - now_ms, 0) + 60000)
    end
  end
end
local function answer(granted, refusal)
  if refusal == nil then return {granted} end
  if refusal[1] == 2 then return {granted, 2, refusal[2], refusal[3]} end
  return {granted, 3, refusal[2]}
end
local m = tonumber(ARGV[1])
local b, n
for r = 1, m do
  b, n = parse()
  local refusal = check(b, n)
  if refusal then return answer(r - 1, refusal) end
  commit(b, n)
end
-- All granted: whether one more like the last would wait too, and how long (a probe just
-- sent holds the rest until its answer), so the lane need not ask only to hear it.
if m > 0 then return answer(m, check(b, n)) end
return {0}
