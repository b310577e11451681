-- llmux rate limit, v1: GCRA on Redis's clock, all-or-nothing over KEYS.
-- ARGV: mode ("check" | "adjust"), then per key: period (µs), limit, cost (adjust: signed delta).
-- Returns {all_allowed, then per key: allowed, remaining, reset (µs), retry_after (µs)}.
-- Each key holds its theoretical arrival time (µs since the epoch) and expires when drained.
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local mode = ARGV[1]
local n = #KEYS
local out = {1}
local news = {}
local all = 1
for i = 1, n do
  local period = tonumber(ARGV[3 * i - 1])
  local limit = tonumber(ARGV[3 * i])
  local cost = tonumber(ARGV[3 * i + 1])
  local interval = math.max(math.floor(period / limit), 1)
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  if mode == 'adjust' then
    -- Debt capped at two periods, as in the in-process limiter.
    news[i] = math.max(math.min(tat + cost * interval, now + 2 * period), now)
  else
    if cost > limit then cost = limit end
    local new_tat = tat + cost * interval
    local allow_at = new_tat - period
    if allow_at <= now then
      news[i] = new_tat
      local used = new_tat - now
      table.insert(out, 1)
      table.insert(out, math.floor(math.max(period - used, 0) / interval))
      table.insert(out, used)
      table.insert(out, 0)
    else
      all = 0
      local used = tat - now
      table.insert(out, 0)
      table.insert(out, math.floor(math.max(period - used, 0) / interval))
      table.insert(out, used)
      table.insert(out, allow_at - now)
    end
  end
end
out[1] = all
if all == 1 then
  for i = 1, n do
    local ttl = math.floor((news[i] - now) / 1000) + 1
    redis.call('SET', KEYS[i], string.format('%.0f', news[i]), 'PX', ttl)
  end
end
return out
