// The Lua scripts RedisSharedState runs in Redis. Each runs atomically (Redis
// runs one script at a time), which is what makes a check-and-take hold
// across instances. They mirror InProcessSharedState (lib/src/shared_state.cc)
// step for step; keep the two in agreement.
//
// Numbers: Redis runs Lua 5.1, whose numbers are doubles, exact for integers
// below 2^53. Bucket levels are fixed point (60,000,000 units a token), so a
// level stays exact up to about 150 million tokens, and times are Unix
// microseconds (exact until the year 2255).
#ifndef SWITCHBOARD_SRC_REDIS_REDIS_SCRIPTS_H_
#define SWITCHBOARD_SRC_REDIS_REDIS_SCRIPTS_H_

#include <string>
#include <string_view>

namespace switchboard::internal {

// Shared by the bucket scripts. KEYS[1] is the limits hash of one backend
// (fields requests, tokens, refilled_us, rpm, tpm), KEYS[2] its leases
// (a sorted set: lease id scored by its expiry in microseconds).
inline constexpr std::string_view kRedisBucketLib = R"lua(
local U = 60000000
local function num(x) return string.format('%.0f', x) end
-- ceil(a / b) for integers a >= 1, b >= 1, exactly.
local function ceildiv(a, b)
  local q = math.floor(a / b)
  while q * b > a do q = q - 1 end
  while (q + 1) * b <= a do q = q + 1 end
  if q * b < a then q = q + 1 end
  return q
end
-- The bucket refilled to `now` at the limits it was last used with, then
-- capped at the capacities of the limits given now. A bucket seen first
-- starts full.
local function load_bucket(key, now, rpm, tpm)
  local h = redis.call('HMGET', key, 'requests', 'tokens', 'refilled_us', 'rpm', 'tpm')
  local b = {}
  if not h[1] or not h[2] or not h[3] or not h[4] or not h[5] then
    b.requests = rpm * U
    b.tokens = tpm * U
    b.refilled = now
    return b
  end
  b.requests = tonumber(h[1])
  b.tokens = tonumber(h[2])
  b.refilled = tonumber(h[3])
  if now > b.refilled then
    -- An hour of refill at most: a bucket in debt for longer is forgiven.
    local micros = math.min(now - b.refilled, 3600000000)
    b.requests = b.requests + micros * tonumber(h[4])
    b.tokens = b.tokens + micros * tonumber(h[5])
    b.refilled = now
  end
  b.requests = math.min(b.requests, rpm * U)
  b.tokens = math.min(b.tokens, tpm * U)
  return b
end
local function save_bucket(key, b, rpm, tpm, ttl_ms)
  redis.call('HSET', key, 'requests', num(b.requests), 'tokens', num(b.tokens),
             'refilled_us', num(b.refilled), 'rpm', num(rpm), 'tpm', num(tpm))
  redis.call('PEXPIRE', key, ttl_ms)
end
)lua";

// TryAcquire. ARGV: now_us, rpm, tpm, max_concurrency, lease_ttl_us,
// lease_id, key_ttl_ms. Returns {admitted 0|1, limit 0|1 rpm|2 tpm|3
// concurrency, available_at_us}.
inline constexpr std::string_view kRedisTryAcquireBody = R"lua(
local now = tonumber(ARGV[1])
local rpm, tpm, maxc = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local b = load_bucket(KEYS[1], now, rpm, tpm)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
local admitted, limit, at = 0, 0, now
if rpm > 0 and b.requests < U then
  limit = 1
  at = now + ceildiv(U - b.requests, rpm)
elseif tpm > 0 and b.tokens <= 0 then
  limit = 2
  at = now + ceildiv(1 - b.tokens, tpm)
elseif maxc > 0 and redis.call('ZCARD', KEYS[2]) >= maxc then
  limit = 3
else
  admitted = 1
  if rpm > 0 then b.requests = b.requests - U end
  if maxc > 0 then
    redis.call('ZADD', KEYS[2], num(now + tonumber(ARGV[5])), ARGV[6])
    redis.call('PEXPIRE', KEYS[2], ARGV[7])
  end
end
save_bucket(KEYS[1], b, rpm, tpm, ARGV[7])
return {admitted, limit, num(at)}
)lua";

// Refund. ARGV: now_us, rpm, tpm, lease_id ("" for none), key_ttl_ms.
inline constexpr std::string_view kRedisRefundBody = R"lua(
local now = tonumber(ARGV[1])
local rpm, tpm = tonumber(ARGV[2]), tonumber(ARGV[3])
local b = load_bucket(KEYS[1], now, rpm, tpm)
if ARGV[4] ~= '' then redis.call('ZREM', KEYS[2], ARGV[4]) end
if rpm > 0 then b.requests = math.min(b.requests + U, rpm * U) end
save_bucket(KEYS[1], b, rpm, tpm, ARGV[5])
return 1
)lua";

// ChargeTokens. ARGV: now_us, rpm, tpm, tokens, key_ttl_ms.
inline constexpr std::string_view kRedisChargeTokensBody = R"lua(
local now = tonumber(ARGV[1])
local rpm, tpm, tokens = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local b = load_bucket(KEYS[1], now, rpm, tpm)
if tpm > 0 and tokens > 0 then b.tokens = b.tokens - tokens * U end
save_bucket(KEYS[1], b, rpm, tpm, ARGV[5])
return 1
)lua";

// The instance heartbeat, on Redis's own clock (so instances' clocks need
// not agree for it). KEYS[1]: the instances sorted set (instance id scored
// by its last heartbeat, Unix ms). ARGV: instance_id, window_ms, key_ttl_ms.
// Returns how many instances beat within the window.
inline constexpr std::string_view kRedisHeartbeat = R"lua(
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], string.format('%.0f', now_ms), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now_ms - tonumber(ARGV[2])))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return redis.call('ZCARD', KEYS[1])
)lua";

enum class RedisScript { kTryAcquire, kRefund, kChargeTokens, kHeartbeat };
inline constexpr int kRedisScriptCount = 4;

// The full source of `script`.
inline std::string RedisScriptSource(RedisScript script) {
  switch (script) {
    case RedisScript::kTryAcquire:
      return std::string(kRedisBucketLib) + std::string(kRedisTryAcquireBody);
    case RedisScript::kRefund:
      return std::string(kRedisBucketLib) + std::string(kRedisRefundBody);
    case RedisScript::kChargeTokens:
      return std::string(kRedisBucketLib) + std::string(kRedisChargeTokensBody);
    case RedisScript::kHeartbeat:
      return std::string(kRedisHeartbeat);
  }
  return "";
}

}  // namespace switchboard::internal

#endif  // SWITCHBOARD_SRC_REDIS_REDIS_SCRIPTS_H_
