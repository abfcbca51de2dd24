-- open-ethereum-pool's checkPoWExist + WriteShare for a batch of shares, as one atomic step.
-- KEYS[1] pow  KEYS[2] shares:roundCurrent  KEYS[3] hashrate  KEYS[4] stats
-- KEYS[3+2j] hashrate:<login j>  KEYS[4+2j] miners:<login j>     (distinct login j = 1..m)
-- ARGV[1] ms  ARGV[2] ts (seconds)  ARGV[3] hashrate expiration (seconds)  ARGV[4] m
-- ARGV[3+2j] login j, ARGV[4+2j] '1' to refresh its hashrate TTL and lastShare, else '0'
-- ARGV[4+2m+7(i-1) ..] for share i = 1..n: login index j, pow member (nonce:powHash:mix),
--   pow score (height + a growing fraction below 1: see pow_score in mod.rs), sweep bound,
--   diff, hashrate member prefix (diff:login:id:), per-login hashrate member prefix (diff:id:)
-- Returns one integer per share: 1 stored, 0 duplicate (member already in pow).
--
-- TTL and lastShare (whole seconds) are refreshed once per second per login: the proxy sends
-- '1' for a login's first batch in each second, so a repeat in the same second, which could
-- only rewrite the same values, is not made.
--
-- The result equals writing the shares one by one, but each key is written with one variadic
-- command per batch (per login for the per-login keys), and the proxy builds the strings:
-- Redis spends its time in the commands' own work, not in Lua or in one call per share.
local ms_s = ARGV[1]
local ms = tonumber(ms_s)
local ts = ARGV[2]
local expire = ARGV[3]
local nl = tonumber(ARGV[4])
local base = 4 + 2 * nl
local W = 7
local n = (#ARGV - base) / W
local function arg(i, k) return ARGV[base + W * (i - 1) + k] end
local function login(j) return ARGV[3 + 2 * j] end
local function touch(j) return ARGV[4 + 2 * j] == '1' end

-- Sweep the pow backlog below height-8 (3 templates live in the proxy's memory). Shares are
-- swept in arrival order, so a share is checked against the sweep of its own template.
local out, new, pows = {}, {}, {}
for i = 1, n do pows[i] = arg(i, 2) end
local function sweep(bound)
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. bound)
end
local bounds, last = 0, nil
local first_bound
for i = 1, n do
  local b = arg(i, 4)
  if b ~= '' and b ~= last then
    bounds = bounds + 1
    first_bound = first_bound or b
    last = b
  end
end
local scores
if bounds <= 1 then
  if first_bound then sweep(first_bound) end
  scores = redis.call('ZMSCORE', KEYS[1], unpack(pows))
end
local seen = {}
for i = 1, n do
  local p = pows[i]
  local exists
  if scores then
    exists = scores[i]
  else
    -- Several sweep bounds in one batch (a height change): keep the one-by-one order.
    local b = arg(i, 4)
    if b ~= '' and (i == 1 or b ~= arg(i - 1, 4)) then sweep(b) end
    exists = redis.call('ZSCORE', KEYS[1], p)
    if not exists and not seen[p] then redis.call('ZADD', KEYS[1], arg(i, 3), p) end
  end
  if exists or seen[p] then
    out[i] = 0
  else
    seen[p] = true
    out[i] = 1
    new[#new + 1] = i
  end
end
if #new == 0 then return out end
if scores then
  local z = {}
  for _, i in ipairs(new) do z[#z + 1] = arg(i, 3); z[#z + 1] = pows[i] end
  redis.call('ZADD', KEYS[1], unpack(z))
end

-- Hashrate members are diff:login:id:ms; a second share of the same worker in the same
-- millisecond (common in a batch) would overwrite the first, so step ms until unique.
-- used[] remembers the last ms given to a worker in this call, keeping a batch O(n).
local used, members, stamps = {}, {}, {}
-- The first ms a worker's next member may take in this call.
local function next_ms(p)
  local m = used[p]
  if m then return m + 1 end
  return ms
end
local function stamp(m)
  if m == ms then return ms_s end
  return string.format('%.0f', m)
end
for k, i in ipairs(new) do
  local p = arg(i, 6)
  local m = next_ms(p)
  used[p] = m
  stamps[k] = stamp(m)
  members[k] = p .. stamps[k]
end
local taken = redis.call('ZMSCORE', KEYS[3], unpack(members))
local clash = false
for k = 1, #new do if taken[k] then clash = true; break end end
if clash then
  -- An earlier batch used some of these milliseconds: assign one by one, as before.
  used = {}
  for k, i in ipairs(new) do
    local p = arg(i, 6)
    local m = next_ms(p)
    while redis.call('ZADD', KEYS[3], 'NX', ts, p .. stamp(m)) == 0 do
      m = m + 1
    end
    used[p] = m
    stamps[k] = stamp(m)
  end
else
  local z = {}
  for k = 1, #new do
    z[2 * k - 1] = ts
    z[2 * k] = members[k]
  end
  redis.call('ZADD', KEYS[3], unpack(z))
end

-- Per login: round shares, its hashrate zset (diff:id:ms), its TTL and lastShare.
-- Sums stay exact below 2^52; a larger one goes to Redis (64-bit integers) at once.
local sums, hrs, order = {}, {}, {}
local total = 0
-- sum + diff while that stays exact; otherwise diff goes to key.field at once.
local function add(sum, diff, key, field)
  local d = tonumber(diff)
  if d >= 2 ^ 52 or sum + d >= 2 ^ 52 then
    redis.call('HINCRBY', key, field, diff)
    return sum
  end
  return sum + d
end
for k, i in ipairs(new) do
  local j = tonumber(arg(i, 1))
  local hr = hrs[j]
  if not hr then
    hr = {}
    hrs[j] = hr
    sums[j] = 0
    order[#order + 1] = j
  end
  local diff = arg(i, 5)
  sums[j] = add(sums[j], diff, KEYS[2], login(j))
  total = add(total, diff, KEYS[4], 'roundShares')
  hr[#hr + 1] = ts
  hr[#hr + 1] = arg(i, 7) .. stamps[k]
end
for _, j in ipairs(order) do
  if sums[j] > 0 then
    redis.call('HINCRBY', KEYS[2], login(j), string.format('%.0f', sums[j]))
  end
  local hr_login = KEYS[3 + 2 * j]
  redis.call('ZADD', hr_login, unpack(hrs[j]))
  if touch(j) then
    redis.call('EXPIRE', hr_login, expire)
    redis.call('HSET', KEYS[4 + 2 * j], 'lastShare', ts)
  end
end
if total > 0 then
  redis.call('HINCRBY', KEYS[4], 'roundShares', string.format('%.0f', total))
end
return out
