// Redis URL helpers that need no hiredis, so the server can redact a Redis
// URL in every build.
#include "redis/redis_url.h"

#include <charconv>
#include <string>
#include <string_view>

#include "switchboard/redis_shared_state.h"

namespace switchboard {
namespace internal {
namespace {

constexpr std::string_view kScheme = "redis://";

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Percent-decodes `in` into `out`; false on a malformed escape.
bool PercentDecode(std::string_view in, std::string& out) {
  out.clear();
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out.push_back(in[i]);
      continue;
    }
    if (i + 2 >= in.size()) return false;
    const int hi = HexValue(in[i + 1]), lo = HexValue(in[i + 2]);
    if (hi < 0 || lo < 0) return false;
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return true;
}

// A decimal number in [min, max]; false otherwise.
bool ParseNumber(std::string_view s, int min, int max, int& out) {
  if (s.empty() || s.size() > 9) return false;
  int value = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc() || end != s.data() + s.size() || value < min || value > max) return false;
  out = value;
  return true;
}

Status Bad(std::string_view why) {
  return InvalidArgumentError(
      "invalid Redis URL (redis://[[user]:password@]host[:port][/db]): " + std::string(why), "url");
}

}  // namespace

std::string RedisUrl::Describe() const {
  const bool v6 = host.find(':') != std::string::npos;
  return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port) + "/" + std::to_string(db);
}

Result<RedisUrl> ParseRedisUrl(std::string_view url) {
  if (url.rfind("rediss://", 0) == 0) return Bad("TLS (rediss://) is not supported");
  if (url.rfind(kScheme, 0) != 0) return Bad("it must start with redis://");
  std::string_view rest = url.substr(kScheme.size());
  if (rest.find_first_of("?#") != std::string_view::npos)
    return Bad("query strings are not supported");
  const size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  const std::string_view path =
      slash == std::string_view::npos ? std::string_view() : rest.substr(slash + 1);

  RedisUrl out;
  if (const size_t at = authority.rfind('@'); at != std::string_view::npos) {
    const std::string_view userinfo = authority.substr(0, at);
    authority = authority.substr(at + 1);
    const size_t colon = userinfo.find(':');
    if (colon == std::string_view::npos) return Bad("the user info must be [user]:password");
    if (!PercentDecode(userinfo.substr(0, colon), out.user) ||
        !PercentDecode(userinfo.substr(colon + 1), out.password)) {
      return Bad("a malformed percent escape in the user info");
    }
    if (out.password.empty()) return Bad("an empty password");
  }

  std::string_view port;
  if (!authority.empty() && authority.front() == '[') {
    const size_t close = authority.find(']');
    if (close == std::string_view::npos) return Bad("an unclosed [ in the host");
    out.host = std::string(authority.substr(1, close - 1));
    const std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return Bad("unexpected characters after the host");
      port = after.substr(1);
      if (port.empty()) return Bad("an empty port");
    }
  } else {
    const size_t colon = authority.find(':');
    out.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) {
      port = authority.substr(colon + 1);
      if (port.empty()) return Bad("an empty port");
    }
  }
  if (out.host.empty()) return Bad("no host");
  if (!port.empty() && !ParseNumber(port, 1, 65535, out.port)) {
    return Bad("the port must be a number from 1 to 65535");
  }
  if (!path.empty() && !ParseNumber(path, 0, 1'000'000, out.db)) {
    return Bad("the database must be a number");
  }
  return out;
}

}  // namespace internal

std::string RedactRedisUrl(std::string_view url) {
  std::string out(url);
  // scheme://user:password@host -> scheme://user:***@host
  if (const size_t scheme = out.find("://"); scheme != std::string::npos) {
    const size_t start = scheme + 3;
    const size_t end = out.find_first_of("/?#", start);
    const size_t at = out.rfind('@', end == std::string::npos ? std::string::npos : end);
    if (at != std::string::npos && at >= start) {
      const size_t colon = out.find(':', start);
      if (colon != std::string::npos && colon < at) {
        out.replace(colon + 1, at - colon - 1, "***");
      } else {
        out.replace(start, at - start, "***");  // a password without "user:"
      }
    }
  }
  return out;
}

}  // namespace switchboard
