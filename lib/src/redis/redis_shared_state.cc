// RedisSharedState: the SharedState of instances on several machines, over
// Redis with hiredis's synchronous API.
//
// Why the choices below:
// - hiredis contexts are not thread-safe, so commands go through a small pool
//   of blocking contexts, each used by one call at a time, and pub/sub has a
//   context of its own, owned by the subscriber thread.
// - Fail fast, reconnect in the background: a call on the request path never
//   opens a connection. Any I/O error or timeout marks the whole endpoint
//   down at once (every pooled context is dropped: after a restart or a
//   network cut they are all dead) and the maintenance thread opens the pool
//   again, with a backoff bounded by heartbeat_interval. Until then every
//   call answers kUnavailable without touching the network.
// - One connectivity for both connections: the endpoint is up when the pool
//   and the subscription both are. A failure on either drops both (a
//   subscription that silently survived an outage may have missed
//   messages), and listeners hear each transition once, on the subscriber
//   thread, in order with the messages.
// - Limits are changed only by Lua scripts (redis_scripts.h), run with
//   EVALSHA and, when Redis lost its script cache (a restart, SCRIPT FLUSH),
//   EVAL, which caches them again.
// - Pub/sub messages are small JSON objects carrying the publisher's
//   instance id, so an instance drops its own echo.
// - hiredis writes with write(2): on a socket the server closed, that raises
//   SIGPIPE, which would kill a process that does not ignore it. Every
//   command blocks SIGPIPE in its thread and swallows one it raised (as
//   libpq does).
#include "switchboard/redis_shared_state.h"

#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "rapidjson/document.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"
#include "redis/redis_scripts.h"
#include "redis/redis_url.h"
#include "switchboard/clock.h"

namespace switchboard {
namespace {

using internal::RedisScript;
using internal::RedisUrl;
using std::chrono::milliseconds;

// Keys live this long after their last use (at least; see KeyTtlMillis), so
// the buckets of a backend nobody routes to any more vanish by themselves.
constexpr milliseconds kKeyTtl = std::chrono::hours(2);
// The first reconnection attempt waits this long, each next one twice as
// long, up to heartbeat_interval.
constexpr milliseconds kMinBackoff{50};
// An instance that missed this many heartbeats is no longer counted.
constexpr int kHeartbeatsMissed = 3;

struct ContextDeleter {
  void operator()(redisContext* c) const { redisFree(c); }
};
using ContextPtr = std::unique_ptr<redisContext, ContextDeleter>;

struct ReplyDeleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using ReplyPtr = std::unique_ptr<redisReply, ReplyDeleter>;

timeval ToTimeval(milliseconds ms) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(ms.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms.count() % 1000) * 1000);
  return tv;
}

int64_t MicrosSinceEpoch(SystemTime t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}

// Blocks SIGPIPE in this thread while alive; a SIGPIPE raised meanwhile is
// consumed before it is unblocked.
class SigpipeGuard {
 public:
  SigpipeGuard() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_, &old_);
    sigset_t pending;
    sigemptyset(&pending);
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
  }
  ~SigpipeGuard() {
    if (!was_pending_) {
      sigset_t pending;
      sigemptyset(&pending);
      sigpending(&pending);
      if (sigismember(&pending, SIGPIPE) == 1) {
        const timespec zero{};
        while (sigtimedwait(&pipe_, nullptr, &zero) < 0 && errno == EINTR) {
        }
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  SigpipeGuard(const SigpipeGuard&) = delete;
  SigpipeGuard& operator=(const SigpipeGuard&) = delete;

 private:
  sigset_t pipe_;
  sigset_t old_;
  bool was_pending_ = false;
};

// Sends one command and reads its reply; nullptr on an I/O error or timeout
// (then c->errstr says which).
ReplyPtr Command(redisContext* c, const std::vector<std::string>& args) {
  std::vector<const char*> argv;
  std::vector<size_t> lengths;
  argv.reserve(args.size());
  lengths.reserve(args.size());
  for (const std::string& a : args) {
    argv.push_back(a.data());
    lengths.push_back(a.size());
  }
  SigpipeGuard guard;
  return ReplyPtr(static_cast<redisReply*>(
      redisCommandArgv(c, static_cast<int>(args.size()), argv.data(), lengths.data())));
}

std::string_view ReplyText(const redisReply& r) {
  return r.str == nullptr ? std::string_view() : std::string_view(r.str, r.len);
}

bool StartsWith(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

std::string RandomInstanceId() {
  std::random_device rd;
  const uint64_t value = (uint64_t{rd()} << 32) ^ rd();
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(16, '0');
  for (int i = 0; i < 16; ++i) out[i] = kHex[(value >> (60 - 4 * i)) & 0xf];
  return out;
}

// --- Pub/sub messages --------------------------------------------------------

// Opens a message object with the fields every message has.
void StartMessage(rapidjson::Writer<rapidjson::StringBuffer>& w, const std::string& from,
                  const char* kind) {
  w.StartObject();
  w.Key("from");
  w.String(from);
  w.Key("kind");
  w.String(kind);
}

std::string EncodeChange(const std::string& from) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> w(buffer);
  StartMessage(w, from, "change");
  w.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

std::string EncodeState(const std::string& from, const BackendState& s) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> w(buffer);
  StartMessage(w, from, "state");
  w.Key("id");
  w.String(s.backend_id);
  w.Key("status");
  const std::string_view status = BackendStatusName(s.status);
  w.String(status.data(), static_cast<rapidjson::SizeType>(status.size()));
  w.Key("cooldown_until_ms");
  if (s.cooldown_until) {
    w.Int64(std::chrono::duration_cast<milliseconds>(s.cooldown_until->time_since_epoch()).count());
  } else {
    w.Null();
  }
  w.Key("consecutive_429_count");
  w.Int(s.consecutive_429_count);
  w.Key("consecutive_failures");
  w.Int(s.consecutive_failures);
  w.Key("last_error");
  w.String(s.last_error);
  w.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

// A message another instance published; kind "" when it is malformed.
struct Message {
  std::string from;
  std::string kind;  // "state" | "change"
  BackendState state;
};

Message DecodeMessage(std::string_view payload) {
  Message out;
  rapidjson::Document doc;
  doc.Parse(payload.data(), payload.size());
  if (doc.HasParseError() || !doc.IsObject()) return out;
  const auto text = [&doc](const char* name, std::string& into) {
    const auto it = doc.FindMember(name);
    if (it == doc.MemberEnd() || !it->value.IsString()) return false;
    into.assign(it->value.GetString(), it->value.GetStringLength());
    return true;
  };
  const auto integer = [&doc](const char* name, int& into) {
    const auto it = doc.FindMember(name);
    if (it == doc.MemberEnd() || !it->value.IsInt()) return false;
    into = it->value.GetInt();
    return true;
  };
  std::string kind;
  if (!text("from", out.from) || !text("kind", kind)) return out;
  if (kind == "change") {
    out.kind = kind;
    return out;
  }
  if (kind != "state") return out;
  std::string status;
  if (!text("id", out.state.backend_id) || !text("status", status) ||
      !integer("consecutive_429_count", out.state.consecutive_429_count) ||
      !integer("consecutive_failures", out.state.consecutive_failures) ||
      !text("last_error", out.state.last_error)) {
    return out;
  }
  const std::optional<BackendStatus> parsed = ParseBackendStatus(status);
  if (!parsed) return out;
  out.state.status = *parsed;
  const auto until = doc.FindMember("cooldown_until_ms");
  if (until == doc.MemberEnd()) return out;
  if (until->value.IsInt64()) {
    out.state.cooldown_until = SystemTime(milliseconds(until->value.GetInt64()));
  } else if (!until->value.IsNull()) {
    return out;
  }
  out.kind = kind;
  return out;
}

// --- RedisSharedState --------------------------------------------------------

class RedisSharedState final : public SharedState {
 public:
  RedisSharedState(RedisSharedStateOptions options, RedisUrl url, int wake_read, int wake_write)
      : options_(std::move(options)),
        url_(std::move(url)),
        instance_id_(RandomInstanceId()),
        channel_(options_.key_prefix + "events"),
        instances_key_(options_.key_prefix + "instances"),
        wake_read_(wake_read),
        wake_write_(wake_write) {
    for (int i = 0; i < internal::kRedisScriptCount; ++i) {
      sources_[i] = internal::RedisScriptSource(static_cast<RedisScript>(i));
    }
  }

  ~RedisSharedState() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    Wake();
    if (subscriber_.joinable()) subscriber_.join();
    if (maintainer_.joinable()) maintainer_.join();
    // Leave the instance set at once, so the others' count drops now rather
    // than after kHeartbeatsMissed heartbeats.
    ContextPtr ctx;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (cmd_ok_ && !idle_.empty()) {
        ctx = std::move(idle_.back());
        idle_.pop_back();
      }
    }
    if (ctx) (void)Command(ctx.get(), {"ZREM", instances_key_, instance_id_});
    ::close(wake_read_);
    ::close(wake_write_);
  }

  RedisSharedState(const RedisSharedState&) = delete;
  RedisSharedState& operator=(const RedisSharedState&) = delete;

  // Tries Redis once on the caller's thread (so that a reachable Redis is in
  // use, subscribed to and counting this instance when Open returns), then
  // starts the background threads.
  void Start() {
    ContextPtr sub;
    if (OpenPool()) {
      Result<ContextPtr> opened = OpenSubscriber();
      std::lock_guard<std::mutex> lock(mu_);
      if (opened.ok()) {
        sub = std::move(*opened);
        sub_ok_ = true;
      } else {
        last_error_ = opened.status().message();
      }
    }
    bool up;
    {
      std::lock_guard<std::mutex> lock(mu_);
      up = cmd_ok_ && sub_ok_;
      // The state we start in is no transition.
      reported_ = up;
      connected_.store(up);
      pending_connectivity_.clear();
    }
    if (up) Heartbeat();
    subscriber_ = std::thread([this, s = std::move(sub)]() mutable { Subscribe(std::move(s)); });
    maintainer_ = std::thread([this] { Maintain(); });
  }

  Result<SharedAdmission> TryAcquire(std::string_view backend_id, const RateLimits& limits,
                                     SystemTime now, Duration lease_ttl) override {
    if (!connected_.load()) return Unreachable();
    std::string lease;
    if (limits.max_concurrency > 0) {
      lease = instance_id_ + "-" + std::to_string(next_lease_.fetch_add(1) + 1);
    }
    const int64_t ttl_us = std::chrono::duration_cast<std::chrono::microseconds>(lease_ttl).count();
    Result<ReplyPtr> reply =
        RunScript(RedisScript::kTryAcquire,
                  {LimitsKey(backend_id), LeasesKey(backend_id),
                   std::to_string(MicrosSinceEpoch(now)), std::to_string(limits.rpm),
                   std::to_string(limits.tpm), std::to_string(limits.max_concurrency),
                   std::to_string(ttl_us), lease, KeyTtlMillis(lease_ttl)});
    if (!reply.ok()) return reply.status();
    const redisReply& r = **reply;
    int64_t at_us = 0;
    if (r.type != REDIS_REPLY_ARRAY || r.elements != 3 ||
        r.element[0]->type != REDIS_REPLY_INTEGER || r.element[1]->type != REDIS_REPLY_INTEGER ||
        r.element[2]->type != REDIS_REPLY_STRING || !ParseInt(ReplyText(*r.element[2]), at_us)) {
      return InternalError("unexpected answer from the Redis TryAcquire script");
    }
    SharedAdmission out;
    out.admitted = r.element[0]->integer == 1;
    out.available_at = now;
    switch (r.element[1]->integer) {
      case 1:
        out.limited_by = LimitKind::kRequests;
        out.available_at = SystemTime(std::chrono::microseconds(at_us));
        break;
      case 2:
        out.limited_by = LimitKind::kTokens;
        out.available_at = SystemTime(std::chrono::microseconds(at_us));
        break;
      case 3:
        out.limited_by = LimitKind::kConcurrency;
        break;
      default:
        break;
    }
    if (out.admitted) out.lease = std::move(lease);
    return out;
  }

  Status Release(std::string_view backend_id, std::string_view lease) override {
    if (!connected_.load()) return Unreachable();
    if (lease.empty()) return Status();
    Result<ReplyPtr> reply = Run({"ZREM", LeasesKey(backend_id), std::string(lease)});
    return reply.ok() ? Status() : reply.status();
  }

  Status Refund(std::string_view backend_id, const RateLimits& limits, std::string_view lease,
                SystemTime now) override {
    if (!connected_.load()) return Unreachable();
    Result<ReplyPtr> reply =
        RunScript(RedisScript::kRefund,
                  {LimitsKey(backend_id), LeasesKey(backend_id),
                   std::to_string(MicrosSinceEpoch(now)), std::to_string(limits.rpm),
                   std::to_string(limits.tpm), std::string(lease), KeyTtlMillis(Duration::zero())});
    return reply.ok() ? Status() : reply.status();
  }

  Status ChargeTokens(std::string_view backend_id, const RateLimits& limits, int64_t tokens,
                      SystemTime now) override {
    if (!connected_.load()) return Unreachable();
    Result<ReplyPtr> reply = RunScript(
        RedisScript::kChargeTokens,
        {LimitsKey(backend_id), LeasesKey(backend_id), std::to_string(MicrosSinceEpoch(now)),
         std::to_string(limits.rpm), std::to_string(limits.tpm), std::to_string(tokens),
         KeyTtlMillis(Duration::zero())});
    return reply.ok() ? Status() : reply.status();
  }

  Status PublishBackendState(const BackendState& state) override {
    if (!connected_.load()) return Unreachable();
    Result<ReplyPtr> reply = Run({"PUBLISH", channel_, EncodeState(instance_id_, state)});
    return reply.ok() ? Status() : reply.status();
  }

  Status AnnounceChange() override {
    if (!connected_.load()) return Unreachable();
    Result<ReplyPtr> reply = Run({"PUBLISH", channel_, EncodeChange(instance_id_)});
    return reply.ok() ? Status() : reply.status();
  }

  // Asks Redis while connected (one ZCARD), so that an instance that just
  // started or stopped counts at once; otherwise the last count seen.
  int instances() const override {
    if (connected_.load()) {
      Result<ReplyPtr> reply = Run({"ZCARD", instances_key_});
      if (reply.ok() && (*reply)->type == REDIS_REPLY_INTEGER) {
        instances_.store(std::max<int>(1, static_cast<int>((*reply)->integer)));
      }
    }
    return instances_.load();
  }

  bool connected() const override { return connected_.load(); }

  void SetListener(SharedStateListener* listener) override {
    std::unique_lock<std::mutex> lock(mu_);
    // The subscriber may be calling the old listener right now; from within
    // a callback, there is nothing to wait for.
    if (std::this_thread::get_id() != subscriber_id_) {
      cv_.wait(lock, [this] { return !delivering_; });
    }
    listener_ = listener;
  }

 private:
  // A pooled context, checked out for one call.
  struct Checkout {
    ContextPtr ctx;
    uint64_t generation = 0;
    bool shortened = false;  // its timeout was cut to what the wait left
  };

  static bool ParseInt(std::string_view s, int64_t& out) {
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc() && end == s.data() + s.size();
  }

  std::string LimitsKey(std::string_view backend_id) const {
    return options_.key_prefix + "limits:{" + std::string(backend_id) + "}";
  }
  std::string LeasesKey(std::string_view backend_id) const {
    return options_.key_prefix + "leases:{" + std::string(backend_id) + "}";
  }
  // Long enough that the leases set outlives its longest lease.
  static std::string KeyTtlMillis(Duration lease_ttl) {
    const milliseconds lease = std::chrono::ceil<milliseconds>(lease_ttl);
    return std::to_string(std::max(kKeyTtl, lease + milliseconds(60'000)).count());
  }

  // `message` with the password replaced, should Redis ever repeat it.
  std::string Scrub(std::string message) const {
    if (url_.password.empty()) return message;
    for (size_t pos = message.find(url_.password); pos != std::string::npos;
         pos = message.find(url_.password, pos + 3)) {
      message.replace(pos, url_.password.size(), "***");
    }
    return message;
  }

  Status Unreachable() const {
    std::lock_guard<std::mutex> lock(mu_);
    return UnreachableLocked();
  }
  // REQUIRES: mu_ held
  Status UnreachableLocked() const {
    std::string message = "Redis at " + url_.Describe() + " is unreachable";
    if (!last_error_.empty()) message += " (" + last_error_ + ")";
    return UnavailableError(std::move(message));
  }

  // Wakes the subscriber thread out of poll().
  void Wake() const {
    const char byte = 1;
    (void)!::write(wake_write_, &byte, 1);  // a full pipe is awake already
  }

  // REQUIRES: mu_ held
  void UpdateConnectivityLocked() const {
    const bool up = cmd_ok_ && sub_ok_;
    connected_.store(up);
    if (up != reported_) {
      reported_ = up;
      pending_connectivity_.push_back(up);
      Wake();
    }
  }

  // Drops every pooled context and the subscription; the background
  // threads open them again.
  // REQUIRES: mu_ held
  void MarkDownLocked(std::string reason) const {
    last_error_ = Scrub(std::move(reason));
    if (cmd_ok_) {
      cmd_ok_ = false;
      ++generation_;
      idle_.clear();
    }
    resubscribe_ = true;
    UpdateConnectivityLocked();
    cv_.notify_all();
    Wake();
  }

  // A context for one call, waiting for one (within command_timeout) when
  // all are busy. `require_subscribed`: only while fully connected (the
  // request path), else while the pool is up (the heartbeat).
  Result<Checkout> CheckoutContext(bool require_subscribed) const {
    std::unique_lock<std::mutex> lock(mu_);
    const auto usable = [&] { return cmd_ok_ && !stop_ && (sub_ok_ || !require_subscribed); };
    if (!usable()) return UnreachableLocked();
    Checkout out;
    if (idle_.empty()) {
      const SteadyTime start = Clock::Real().Now();
      cv_.wait_for(lock, options_.command_timeout, [&] { return !idle_.empty() || !usable(); });
      if (!usable()) return UnreachableLocked();
      if (idle_.empty()) {
        return UnavailableError("every connection to Redis at " + url_.Describe() +
                                " stayed busy for " +
                                std::to_string(options_.command_timeout.count()) + " ms");
      }
      const auto left = options_.command_timeout -
                        std::chrono::duration_cast<milliseconds>(Clock::Real().Now() - start);
      out.shortened = true;
      out.ctx = std::move(idle_.back());
      idle_.pop_back();
      out.generation = generation_;
      lock.unlock();
      redisSetTimeout(out.ctx.get(), ToTimeval(std::max(milliseconds(1), left)));
      return out;
    }
    out.ctx = std::move(idle_.back());
    idle_.pop_back();
    out.generation = generation_;
    return out;
  }

  // Gives a context back; a broken one (I/O error, timeout) takes the
  // endpoint down, unless it was from before the last reconnection.
  void Return(Checkout c, bool broken) const {
    if (!broken && c.shortened) {
      if (redisSetTimeout(c.ctx.get(), ToTimeval(options_.command_timeout)) != REDIS_OK) {
        broken = true;
      }
    }
    std::string reason;
    if (broken) reason = c.ctx->errstr[0] != '\0' ? c.ctx->errstr : "connection lost";
    ContextPtr dead;  // freed after the lock is released
    std::lock_guard<std::mutex> lock(mu_);
    if (broken) {
      dead = std::move(c.ctx);
      if (c.generation == generation_ && cmd_ok_) MarkDownLocked(std::move(reason));
    } else if (c.generation == generation_ && cmd_ok_ && !stop_) {
      idle_.push_back(std::move(c.ctx));
      cv_.notify_all();
    } else {
      dead = std::move(c.ctx);
    }
  }

  Status ErrorReplyStatus(const redisReply& r) const {
    const std::string text = Scrub(std::string(ReplyText(r)));
    // Redis is there but cannot serve now (loading its data, a long script,
    // out of memory, a read-only replica): the caller falls back as for an
    // outage. Anything else is a bug.
    for (std::string_view transient : {"LOADING", "BUSY", "OOM", "READONLY", "MASTERDOWN",
                                       "TRYAGAIN", "CLUSTERDOWN", "NOREPLICAS", "MISCONF"}) {
      if (StartsWith(text, transient)) {
        return UnavailableError("Redis at " + url_.Describe() + " cannot serve now: " + text);
      }
    }
    return InternalError("Redis at " + url_.Describe() + " answered: " + text);
  }

  // Runs one command on a pooled context. Error replies become a Status.
  Result<ReplyPtr> Run(const std::vector<std::string>& args, bool require_subscribed = true) const {
    Result<Checkout> c = CheckoutContext(require_subscribed);
    if (!c.ok()) return c.status();
    ReplyPtr reply = Command(c->ctx.get(), args);
    const bool broken = reply == nullptr;
    Return(std::move(*c), broken);
    if (broken) return Unreachable();
    if (reply->type == REDIS_REPLY_ERROR) return ErrorReplyStatus(*reply);
    return reply;
  }

  // Runs a script: EVALSHA, and EVAL when Redis does not have it (any more).
  // `keys_and_args` starts with its two keys (one for the heartbeat).
  Result<ReplyPtr> RunScript(RedisScript script, std::vector<std::string> keys_and_args,
                             bool require_subscribed = true) const {
    const int index = static_cast<int>(script);
    const int num_keys = script == RedisScript::kHeartbeat ? 1 : 2;
    Result<Checkout> c = CheckoutContext(require_subscribed);
    if (!c.ok()) return c.status();
    // shas_ was written once, before the first checkout could succeed.
    std::vector<std::string> args;
    args.reserve(keys_and_args.size() + 3);
    args.push_back("EVALSHA");
    args.push_back(shas_[index]);
    args.push_back(std::to_string(num_keys));
    for (std::string& a : keys_and_args) args.push_back(std::move(a));
    ReplyPtr reply = Command(c->ctx.get(), args);
    if (reply != nullptr && reply->type == REDIS_REPLY_ERROR &&
        StartsWith(ReplyText(*reply), "NOSCRIPT")) {
      args[0] = "EVAL";
      args[1] = sources_[index];
      reply = Command(c->ctx.get(), args);
    }
    const bool broken = reply == nullptr;
    Return(std::move(*c), broken);
    if (broken) return Unreachable();
    if (reply->type == REDIS_REPLY_ERROR) return ErrorReplyStatus(*reply);
    return reply;
  }

  // Opens a context on the URL: connected, logged in, database selected,
  // command timeout set.
  Result<ContextPtr> OpenContext() const {
    const std::string where = "Redis at " + url_.Describe();
    ContextPtr ctx(
        redisConnectWithTimeout(url_.host.c_str(), url_.port, ToTimeval(options_.connect_timeout)));
    if (ctx == nullptr) return UnavailableError("cannot connect to " + where);
    if (ctx->err != 0) {
      return UnavailableError("cannot connect to " + where + ": " + Scrub(ctx->errstr));
    }
    if (redisSetTimeout(ctx.get(), ToTimeval(options_.command_timeout)) != REDIS_OK) {
      return UnavailableError("cannot set timeouts on the connection to " + where);
    }
    (void)redisEnableKeepAlive(ctx.get());
    std::vector<std::vector<std::string>> setup;
    if (!url_.password.empty()) {
      setup.push_back(url_.user.empty()
                          ? std::vector<std::string>{"AUTH", url_.password}
                          : std::vector<std::string>{"AUTH", url_.user, url_.password});
    }
    if (url_.db != 0) setup.push_back({"SELECT", std::to_string(url_.db)});
    for (const std::vector<std::string>& command : setup) {
      ReplyPtr reply = Command(ctx.get(), command);
      if (reply == nullptr) {
        return UnavailableError("lost the connection to " + where + ": " + Scrub(ctx->errstr));
      }
      if (reply->type == REDIS_REPLY_ERROR) {
        return UnavailableError(where + " refused " +
                                (command[0] == "AUTH" ? "the login" : "SELECT") + ": " +
                                Scrub(std::string(ReplyText(*reply))));
      }
    }
    return ctx;
  }

  // Opens every pooled context and loads the scripts; true when the pool is
  // up (then cmd_ok_ is set).
  bool OpenPool() {
    std::vector<ContextPtr> fresh;
    std::string error;
    for (int i = 0; i < options_.max_connections; ++i) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (stop_) return false;
      }
      Result<ContextPtr> ctx = OpenContext();
      if (!ctx.ok()) {
        error = ctx.status().message();
        break;
      }
      fresh.push_back(std::move(*ctx));
    }
    std::array<std::string, internal::kRedisScriptCount> shas;
    for (int i = 0; error.empty() && i < internal::kRedisScriptCount; ++i) {
      ReplyPtr reply = Command(fresh.front().get(), {"SCRIPT", "LOAD", sources_[i]});
      if (reply == nullptr) {
        error = "lost the connection to Redis at " + url_.Describe() + ": " +
                Scrub(fresh.front()->errstr);
      } else if (reply->type != REDIS_REPLY_STRING) {
        error = "Redis at " + url_.Describe() +
                " did not load a script: " + Scrub(std::string(ReplyText(*reply)));
      } else {
        shas[i] = std::string(ReplyText(*reply));
      }
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (!error.empty() || stop_) {
      if (!error.empty()) last_error_ = std::move(error);
      return false;
    }
    // The same sources always have the same digests: written once, read
    // by calls only after a checkout (under mu_) from an open pool.
    if (shas_[0].empty()) shas_ = shas;
    idle_ = std::move(fresh);
    ++generation_;
    cmd_ok_ = true;
    last_error_.clear();
    UpdateConnectivityLocked();
    cv_.notify_all();
    return true;
  }

  // Registers this instance and counts the live ones.
  void Heartbeat() {
    const int64_t interval = options_.heartbeat_interval.count();
    Result<ReplyPtr> reply =
        RunScript(RedisScript::kHeartbeat,
                  {instances_key_, instance_id_, std::to_string(kHeartbeatsMissed * interval),
                   std::to_string(std::max<int64_t>(kKeyTtl.count(), 10 * interval))},
                  /*require_subscribed=*/false);
    if (reply.ok() && (*reply)->type == REDIS_REPLY_INTEGER) {
      instances_.store(std::max<int>(1, static_cast<int>((*reply)->integer)));
    }
  }

  // The maintenance thread: heartbeats, and opens the pool again after it
  // went down.
  void Maintain() {
    milliseconds backoff = std::min(kMinBackoff, options_.heartbeat_interval);
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      if (!cmd_ok_) {
        lock.unlock();
        const bool opened = OpenPool();
        if (opened) Heartbeat();
        lock.lock();
        if (!opened) {
          cv_.wait_for(lock, backoff, [this] { return stop_; });
          backoff = std::min(backoff * 2, options_.heartbeat_interval);
          continue;
        }
        backoff = std::min(kMinBackoff, options_.heartbeat_interval);
      }
      // Until the next heartbeat, or at once when the pool went down.
      if (cv_.wait_for(lock, options_.heartbeat_interval, [this] { return stop_ || !cmd_ok_; })) {
        continue;
      }
      lock.unlock();
      Heartbeat();
      lock.lock();
    }
  }

  Result<ContextPtr> OpenSubscriber() const {
    Result<ContextPtr> ctx = OpenContext();
    if (!ctx.ok()) return ctx.status();
    ReplyPtr reply = Command(ctx->get(), {"SUBSCRIBE", channel_});
    if (reply == nullptr) {
      return UnavailableError("lost the connection to Redis at " + url_.Describe() + ": " +
                              Scrub((*ctx)->errstr));
    }
    if (reply->type != REDIS_REPLY_ARRAY) {
      return UnavailableError("Redis at " + url_.Describe() + " refused SUBSCRIBE");
    }
    return ctx;
  }

  // Calls the listener (if any) with `deliver`, on this (the subscriber)
  // thread, without holding mu_.
  void Deliver(const std::function<void(SharedStateListener&)>& deliver) {
    SharedStateListener* listener;
    {
      std::lock_guard<std::mutex> lock(mu_);
      listener = listener_;
      if (listener == nullptr) return;
      delivering_ = true;
    }
    deliver(*listener);
    {
      std::lock_guard<std::mutex> lock(mu_);
      delivering_ = false;
    }
    cv_.notify_all();
  }

  void HandleReply(const redisReply& r) {
    if (r.type == REDIS_REPLY_ARRAY && r.elements >= 1 &&
        r.element[0]->type == REDIS_REPLY_STRING && ReplyText(*r.element[0]) == "pong") {
      pong_ = true;
      return;
    }
    if (r.type != REDIS_REPLY_ARRAY || r.elements != 3 ||
        r.element[0]->type != REDIS_REPLY_STRING || ReplyText(*r.element[0]) != "message" ||
        r.element[2]->type != REDIS_REPLY_STRING) {
      return;  // subscribe confirmations
    }
    Message m = DecodeMessage(ReplyText(*r.element[2]));
    if (m.from == instance_id_ || m.kind.empty()) return;
    if (m.kind == "change") {
      Deliver([](SharedStateListener& l) { l.OnRemoteChange(); });
    } else {
      Deliver([&m](SharedStateListener& l) { l.OnRemoteBackendState(m.state); });
    }
  }

  // Handles every complete reply hiredis has read; false when the stream is
  // broken.
  bool HandleBufferedReplies(redisContext* sub) {
    for (;;) {
      void* raw = nullptr;
      if (redisGetReplyFromReader(sub, &raw) != REDIS_OK) return false;
      if (raw == nullptr) return true;
      ReplyPtr reply(static_cast<redisReply*>(raw));
      HandleReply(*reply);
    }
  }

  // The subscriber thread: reads the channel, delivers messages and
  // connectivity changes, and subscribes again after a failure.
  void Subscribe(ContextPtr sub) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      subscriber_id_ = std::this_thread::get_id();
    }
    milliseconds backoff = std::min(kMinBackoff, options_.heartbeat_interval);
    SteadyTime next_attempt = Clock::Real().Now();
    // A subscription hears nothing while nobody publishes, so it is PINGed
    // every heartbeat: a connection that died silently (a network cut, no
    // FIN) is noticed within a heartbeat and a command timeout.
    const Duration pong_within = options_.heartbeat_interval + options_.command_timeout;
    SteadyTime next_ping = Clock::Real().Now() + options_.heartbeat_interval;
    bool awaiting_pong = false;
    SteadyTime ping_sent{};
    const auto drop = [&](const std::string& reason) {
      sub.reset();
      std::lock_guard<std::mutex> lock(mu_);
      sub_ok_ = false;
      MarkDownLocked("subscription: " + reason);
    };
    for (;;) {
      bool reset;
      std::deque<bool> changes;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (stop_) return;
        reset = resubscribe_;
        resubscribe_ = false;
        changes.swap(pending_connectivity_);
      }
      for (const bool up : changes) {
        Deliver([up](SharedStateListener& l) { l.OnConnectivity(up); });
      }
      if (reset && sub != nullptr) {
        sub.reset();
        std::lock_guard<std::mutex> lock(mu_);
        sub_ok_ = false;
        UpdateConnectivityLocked();
      }
      if (sub == nullptr && Clock::Real().Now() >= next_attempt) {
        Result<ContextPtr> opened = OpenSubscriber();
        std::lock_guard<std::mutex> lock(mu_);
        if (opened.ok()) {
          sub = std::move(*opened);
          next_ping = Clock::Real().Now() + options_.heartbeat_interval;
          awaiting_pong = false;
          backoff = std::min(kMinBackoff, options_.heartbeat_interval);
          sub_ok_ = true;
          UpdateConnectivityLocked();
          continue;  // deliver what that changed
        }
        if (cmd_ok_) last_error_ = opened.status().message();
        next_attempt = Clock::Real().Now() + backoff;
        backoff = std::min(backoff * 2, options_.heartbeat_interval);
      }

      // hiredis may hold messages that came with the SUBSCRIBE answer: poll()
      // would not report those.
      if (sub != nullptr && !HandleBufferedReplies(sub.get())) {
        drop("unreadable answer");
        continue;
      }
      if (sub != nullptr) {
        if (pong_) awaiting_pong = false;
        pong_ = false;
        const SteadyTime now = Clock::Real().Now();
        if (awaiting_pong && now - ping_sent > pong_within) {
          drop("no answer to PING");
          continue;
        }
        if (!awaiting_pong && now >= next_ping) {
          if (!SendPing(sub.get())) {
            drop(sub->errstr[0] != '\0' ? sub->errstr : "connection lost");
            continue;
          }
          awaiting_pong = true;
          ping_sent = now;
          next_ping = now + options_.heartbeat_interval;
        }
      }
      pollfd fds[2] = {{wake_read_, POLLIN, 0}, {sub ? sub->fd : -1, POLLIN, 0}};
      const SteadyTime deadline =
          sub == nullptr ? next_attempt : (awaiting_pong ? ping_sent + pong_within : next_ping);
      const auto left = std::chrono::ceil<milliseconds>(deadline - Clock::Real().Now());
      const int timeout_ms = static_cast<int>(std::max<int64_t>(0, left.count()));
      if (::poll(fds, 2, timeout_ms) < 0) continue;  // EINTR
      if (fds[0].revents != 0) {
        char drain[64];
        while (::read(wake_read_, drain, sizeof(drain)) > 0) {
        }
      }
      if (sub != nullptr && fds[1].revents != 0) {
        if (redisBufferRead(sub.get()) != REDIS_OK || !HandleBufferedReplies(sub.get())) {
          drop(sub->errstr[0] != '\0' ? sub->errstr : "connection lost");
        }
      }
    }
  }

  // Sends PING on the subscription without waiting for the answer.
  static bool SendPing(redisContext* c) {
    SigpipeGuard guard;
    if (redisAppendCommand(c, "PING") != REDIS_OK) return false;
    int done = 0;
    while (done == 0) {
      if (redisBufferWrite(c, &done) != REDIS_OK) return false;
    }
    return true;
  }

  const RedisSharedStateOptions options_;
  const RedisUrl url_;
  const std::string instance_id_;  // random, so lease ids are unique across instances
  const std::string channel_;
  const std::string instances_key_;
  const int wake_read_, wake_write_;  // a pipe that wakes the subscriber
  std::array<std::string, internal::kRedisScriptCount> sources_;
  std::atomic<int64_t> next_lease_{0};
  mutable std::atomic<bool> connected_{false};  // cmd_ok_ && sub_ok_, readable without mu_
  mutable std::atomic<int> instances_{1};
  std::thread subscriber_;
  std::thread maintainer_;

  mutable std::mutex mu_;
  mutable std::condition_variable cv_;             // idle_, cmd_ok_, stop_, delivering_ changed
  mutable bool cmd_ok_ = false;                    // guarded by mu_: the pool is open
  mutable bool sub_ok_ = false;                    // guarded by mu_: subscribed
  mutable uint64_t generation_ = 0;                // guarded by mu_: pool reopenings
  mutable std::vector<ContextPtr> idle_;           // guarded by mu_
  mutable bool resubscribe_ = false;               // guarded by mu_: the subscriber must reconnect
  mutable bool reported_ = false;                  // guarded by mu_: last connectivity queued
  mutable std::deque<bool> pending_connectivity_;  // guarded by mu_: for the subscriber to deliver
  mutable std::string last_error_;                 // guarded by mu_: why it went down
  std::array<std::string, internal::kRedisScriptCount> shas_;  // guarded by mu_ (see OpenPool)
  SharedStateListener* listener_ = nullptr;                    // guarded by mu_
  bool delivering_ = false;                                    // guarded by mu_: calling listener_
  std::thread::id subscriber_id_;                              // guarded by mu_
  bool stop_ = false;                                          // guarded by mu_
  bool pong_ = false;  // the subscriber thread's only: a PING was answered
};

}  // namespace

Result<std::unique_ptr<SharedState>> OpenRedisSharedState(RedisSharedStateOptions options) {
  Result<RedisUrl> url = internal::ParseRedisUrl(options.url);
  if (!url.ok()) return url.status();
  if (options.key_prefix.empty()) {
    return InvalidArgumentError("key_prefix must not be empty", "key_prefix");
  }
  if (options.connect_timeout.count() <= 0 || options.command_timeout.count() <= 0 ||
      options.heartbeat_interval.count() <= 0) {
    return InvalidArgumentError("timeouts and the heartbeat interval must be positive");
  }
  if (options.max_connections < 1 || options.max_connections > 64) {
    return InvalidArgumentError("max_connections must be from 1 to 64", "max_connections");
  }
  int wake[2];
  if (::pipe2(wake, O_NONBLOCK | O_CLOEXEC) != 0) {
    return UnavailableError("cannot create a pipe for the Redis subscriber");
  }
  auto state =
      std::make_unique<RedisSharedState>(std::move(options), std::move(*url), wake[0], wake[1]);
  state->Start();
  return std::unique_ptr<SharedState>(std::move(state));
}

bool RedisSupported() { return true; }

}  // namespace switchboard
