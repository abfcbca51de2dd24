-- open-ethereum-pool's checkPoWExist + WriteBlock for one block share, as one atomic step.
-- KEYS[1] pow  KEYS[2] shares:roundCurrent  KEYS[3] hashrate  KEYS[4] stats
-- KEYS[5] hashrate:<login>  KEYS[6] miners:<login>  KEYS[7] finders
-- KEYS[8] shares:round<height>:<nonce>  KEYS[9] blocks:candidates
-- ARGV: ms, ts, expiration, login, id, pow member, diff, height, sweep bound, round difficulty
-- Returns {1, totalShares} when stored, {0, ''} for a duplicate.
local ms, ts, expire, login, id, pow, diff, height, sweep, round_diff =
  tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10]

-- Exact decimal addition: round totals can pass 2^53, where Lua's doubles lose digits.
local function add_dec(a, b)
  local res, carry = {}, 0
  local i, j = #a, #b
  while i > 0 or j > 0 or carry > 0 do
    local da = i > 0 and tonumber(a:sub(i, i)) or 0
    local db = j > 0 and tonumber(b:sub(j, j)) or 0
    local s = da + db + carry
    res[#res + 1] = tostring(s % 10)
    carry = math.floor(s / 10)
    i, j = i - 1, j - 1
  end
  local out = string.reverse(table.concat(res)):gsub('^0+', '')
  if out == '' then return '0' end
  return out
end

if sweep ~= '' then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. sweep)
end
if redis.call('ZADD', KEYS[1], height, pow) == 0 then
  return {0, ''}
end
-- writeShare
redis.call('HINCRBY', KEYS[2], login, diff)
local m = ms
local member = diff .. ':' .. login .. ':' .. id .. ':' .. string.format('%.0f', m)
while redis.call('ZSCORE', KEYS[3], member) do
  m = m + 1
  member = diff .. ':' .. login .. ':' .. id .. ':' .. string.format('%.0f', m)
end
redis.call('ZADD', KEYS[3], ts, member)
redis.call('ZADD', KEYS[5], ts, diff .. ':' .. id .. ':' .. string.format('%.0f', m))
redis.call('EXPIRE', KEYS[5], expire)
redis.call('HSET', KEYS[6], 'lastShare', ts)
-- the block itself
redis.call('HSET', KEYS[4], 'lastBlockFound', ts)
redis.call('HDEL', KEYS[4], 'roundShares')
redis.call('ZINCRBY', KEYS[7], 1, login)
redis.call('HINCRBY', KEYS[6], 'blocksFound', 1)
redis.call('RENAME', KEYS[2], KEYS[8])
local fields = redis.call('HGETALL', KEYS[8])
local total = '0'
for k = 2, #fields, 2 do
  -- Like the Go code's ParseInt-or-0: only plain non-negative integers count.
  if string.match(fields[k], '^%d+$') then
    total = add_dec(total, fields[k])
  end
end
redis.call('ZADD', KEYS[9], height, pow .. ':' .. ts .. ':' .. round_diff .. ':' .. total)
return {1, total}
