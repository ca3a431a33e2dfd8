// Parsing and redacting "redis://" URLs; needs no hiredis, so every build
// can redact one.
#ifndef SWITCHBOARD_SRC_REDIS_REDIS_URL_H_
#define SWITCHBOARD_SRC_REDIS_REDIS_URL_H_

#include <string>
#include <string_view>

#include "switchboard/status.h"

namespace switchboard::internal {

struct RedisUrl {
  std::string host;  // without brackets for IPv6
  int port = 6379;
  int db = 0;
  std::string user;      // "" for the default user
  std::string password;  // "" for none (no AUTH)

  // "host:port/db", for messages: never the user info.
  std::string Describe() const;
};

// Parses "redis://[[user]:password@]host[:port][/db]". kInvalidArgument
// with a message that never repeats the URL (it may hold the password).
Result<RedisUrl> ParseRedisUrl(std::string_view url);

}  // namespace switchboard::internal

#endif  // SWITCHBOARD_SRC_REDIS_REDIS_URL_H_
