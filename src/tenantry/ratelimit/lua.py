"""The Lua that Redis runs for the limiter: a GCRA check, an in-flight lease, and both for a whole request.

Each step is a Lua function written once, and every script is built from those functions, so a check
made alone (``RedisStore``), a lease taken alone (``RedisConcurrency``) and a request admitted in one
round trip (``RedisAdmission``) cannot drift apart. Redis's own clock decides "now" (``TIME``, read once
per script), so every process agrees on it.

The admission script names several keys: on a Redis Cluster they would have to share a hash slot.
"""

from __future__ import annotations

CLOCK = """
local function clock()
  local time = redis.call("TIME")
  return tonumber(time[1]) + tonumber(time[2]) / 1000000
end
"""

# GCRA (see tenantry.ratelimit.gcra): allowed, remaining, retry_after, reset_after. The key expires by
# itself once it holds no information (its TAT is in the past). The 1e-9 added before flooring what
# remains is gcra.EPSILON's: (now + interval) - now is not always interval in floats.
GCRA = """
local function gcra(key, interval, tolerance, cost, peek, now)
  local tat = tonumber(redis.call("GET", key))
  if tat == nil or tat < now then tat = now end
  local new_tat = tat + cost * interval
  local allow_at = new_tat - tolerance
  if allow_at - now > 1e-9 then
    local remaining = math.max(0, math.floor((tolerance - (tat - now)) / interval + 1e-9))
    return 0, remaining, tostring(allow_at - now), tostring(tat - now)
  end
  if not peek then
    redis.call("SET", key, tostring(new_tat), "PX", math.max(1, math.ceil((new_tat - now) * 1000)))
  end
  local remaining = math.max(0, math.floor((tolerance - (new_tat - now)) / interval + 1e-9))
  return 1, remaining, "0", tostring(new_tat - now)
end
"""

# A lease: granted, leases held after it. The sorted set scores each lease by its expiry; the key lives at
# least as long as its longest lease (its ttl is only ever extended), so a key whose holders all died
# disappears by itself. Scores are formatted explicitly because Redis turns Lua numbers into strings with 14
# significant digits, which would round away the milliseconds.
LEASE = """
local function lease(key, limit, ttl, lease_id, now)
  redis.call("ZREMRANGEBYSCORE", key, "-inf", string.format("%.6f", now))
  local count = redis.call("ZCARD", key)
  if count >= limit then
    return 0, count
  end
  redis.call("ZADD", key, string.format("%.6f", now + ttl), lease_id)
  local ms = math.ceil(ttl * 1000)
  if count == 0 or redis.call("PTTL", key) < ms then
    redis.call("PEXPIRE", key, ms)
  end
  return 1, count + 1
end
"""

# One check. KEYS: the key. ARGV: interval, tolerance, cost, peek ("1").
GCRA_SCRIPT = (
    CLOCK
    + GCRA
    + """
return {gcra(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4] == "1", clock())}
"""
)

# One lease. KEYS: the key. ARGV: limit, ttl, lease id.
ACQUIRE_SCRIPT = (
    CLOCK
    + LEASE
    + """
return {lease(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], clock())}
"""
)

# A request: its budgets in order, stopping at the first refusal (a budget in shadow mode never stops it),
# then, if none refused, its lease. KEYS: the budgets' keys, then the lease's key if one is asked for.
# ARGV: cost, lease limit, lease ttl, then each budget's interval, tolerance and shadow ("1"), then the lease
# id (last, so that everything before it can be packed once per kind of request).
# Reply: four values per budget judged (as GCRA_SCRIPT's), then two for the lease (as ACQUIRE_SCRIPT's).
ADMIT_SCRIPT = (
    CLOCK
    + GCRA
    + LEASE
    + """
local cost = tonumber(ARGV[1])
local budgets = (#ARGV - 4) / 3
local now = clock()
local reply = {}
for i = 1, budgets do
  local at = 1 + 3 * i
  local allowed, remaining, retry_after, reset_after =
    gcra(KEYS[i], tonumber(ARGV[at]), tonumber(ARGV[at + 1]), cost, false, now)
  local n = #reply
  reply[n + 1], reply[n + 2], reply[n + 3], reply[n + 4] = allowed, remaining, retry_after, reset_after
  if allowed == 0 and ARGV[at + 2] ~= "1" then
    return reply
  end
end
if #KEYS > budgets then
  local granted, held = lease(KEYS[budgets + 1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[#ARGV], now)
  local n = #reply
  reply[n + 1], reply[n + 2] = granted, held
end
return reply
"""
)
