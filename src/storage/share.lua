-- open-ethereum-pool's checkPoWExist + WriteShare for a batch of shares, as one atomic step.
-- KEYS[1] pow  KEYS[2] shares:roundCurrent  KEYS[3] hashrate  KEYS[4] stats
-- KEYS[3+2i] hashrate:<login>  KEYS[4+2i] miners:<login>        (share i = 1..n)
-- ARGV[1] ms  ARGV[2] ts (seconds)  ARGV[3] hashrate expiration (seconds)
-- ARGV[4+6(i-1) ..] login, worker id, pow member (nonce:powHash:mix), diff, height, sweep bound
-- Returns one integer per share: 1 stored, 0 duplicate (member already in pow).
local ms = tonumber(ARGV[1])
local ts = ARGV[2]
local expire = ARGV[3]
local out = {}
local last_sweep = nil
local used = {}
-- stats.roundShares is added once per batch (exact as long as the sum stays below 2^52).
local round_sum = 0
local function flush_round()
  if round_sum > 0 then
    redis.call('HINCRBY', KEYS[4], 'roundShares', string.format('%.0f', round_sum))
    round_sum = 0
  end
end
local n = (#ARGV - 3) / 6
for i = 1, n do
  local a = 3 + 6 * (i - 1)
  local login, id, pow, diff, height, sweep =
    ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6]
  -- Sweep the pow backlog below height-8 (3 templates live in the proxy's memory).
  if sweep ~= '' and sweep ~= last_sweep then
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. sweep)
    last_sweep = sweep
  end
  if redis.call('ZADD', KEYS[1], height, pow) == 0 then
    out[i] = 0
  else
    local hr_login, miner = KEYS[3 + 2 * i], KEYS[4 + 2 * i]
    redis.call('HINCRBY', KEYS[2], login, diff)
    -- Members are diff:login:id:ms; a second share of the same worker in the same
    -- millisecond (common in a batch) would overwrite the first, so step ms until unique.
    -- used[] remembers the last ms given to a worker in this call, keeping a batch O(n).
    local p = diff .. ':' .. login .. ':' .. id .. ':'
    local m = ms
    if used[p] and used[p] >= m then m = used[p] + 1 end
    local member = p .. string.format('%.0f', m)
    while redis.call('ZADD', KEYS[3], 'NX', ts, member) == 0 do
      m = m + 1
      member = p .. string.format('%.0f', m)
    end
    used[p] = m
    redis.call('ZADD', hr_login, ts, diff .. ':' .. id .. ':' .. string.format('%.0f', m))
    redis.call('EXPIRE', hr_login, expire)
    redis.call('HSET', miner, 'lastShare', ts)
    local d = tonumber(diff)
    if d >= 2 ^ 52 or round_sum + d >= 2 ^ 52 then
      flush_round()
    end
    if d >= 2 ^ 52 then
      redis.call('HINCRBY', KEYS[4], 'roundShares', diff)
    else
      round_sum = round_sum + d
    end
    out[i] = 1
  end
end
flush_round()
return out
