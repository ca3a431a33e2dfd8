// switchboard/redis_shared_state.h
// A SharedState over Redis, for gateway instances on several machines: the
// buckets and leases live in Redis and change only inside Lua scripts (so
// every check-and-take is atomic across instances), backend health and
// change announcements travel over Redis pub/sub. Built when the library was
// configured with SWITCHBOARD_WITH_REDIS (hiredis); otherwise
// OpenRedisSharedState() answers kFailedPrecondition.
//
//   auto shared = switchboard::OpenRedisSharedState({.url = "redis://:secret@redis:6379/0"});
//   if (!shared.ok()) return shared.status();   // a bad URL; never the password
//   (*shared)->SetListener(&listener);
//   auto got = (*shared)->TryAcquire(backend.id, limits, clock.WallNow(), 60s);
//   if (got.status().code() == StatusCode::kUnavailable) { /* decide alone */ }
//
// See docs/scale-out.md ("Redis shared state") for the keys, the scripts and
// what happens while Redis is unreachable.
#ifndef SWITCHBOARD_REDIS_SHARED_STATE_H_
#define SWITCHBOARD_REDIS_SHARED_STATE_H_

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include "switchboard/shared_state.h"
#include "switchboard/status.h"

namespace switchboard {

struct RedisSharedStateOptions {
  // "redis://[[user]:password@]host[:port][/db]"; port 6379 and db 0 by
  // default, user and password percent-decoded, an IPv6 host in brackets.
  std::string url;
  // Every key and the pub/sub channel start with it: instances that share
  // state use the same prefix, unrelated deployments different ones.
  std::string key_prefix = "switchboard:";
  // How long opening one connection may take.
  std::chrono::milliseconds connect_timeout{500};
  // A command slower than this counts as Redis being unreachable: the call
  // answers kUnavailable and the connections are opened again.
  std::chrono::milliseconds command_timeout{250};
  // The instance heartbeat (instances()) and the longest wait between two
  // reconnection attempts.
  std::chrono::milliseconds heartbeat_interval{1000};
  // Connections for commands, each used by one call at a time; callers
  // beyond wait for one (within command_timeout). Pub/sub has one more.
  int max_connections = 4;
};

// Opens an endpoint on the Redis at options.url. Redis being down is not an
// error: the endpoint starts disconnected (connected() false, every call
// kUnavailable) and connects in the background, every heartbeat_interval at
// most. kInvalidArgument for a bad URL, an empty key_prefix or a
// non-positive timeout or pool size; kFailedPrecondition when the library
// was built without Redis support. Messages never contain the password.
//
// The endpoint is thread-safe. Its calls never wait for a connection to be
// opened, and never longer than command_timeout for Redis to answer.
// instances() asks Redis (one ZCARD) while connected, so that instances that
// just started or stopped count at once; while disconnected it answers the
// last count seen.
Result<std::unique_ptr<SharedState>> OpenRedisSharedState(RedisSharedStateOptions options);

// Whether this build includes the Redis shared state.
bool RedisSupported();

// `url` with the password of its user-info part replaced by "***", for logs.
std::string RedactRedisUrl(std::string_view url);

}  // namespace switchboard

#endif  // SWITCHBOARD_REDIS_SHARED_STATE_H_
