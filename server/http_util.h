// server/http_util.h
// Small helpers shared by the server's handlers.
#ifndef SWITCHBOARD_SERVER_HTTP_UTIL_H_
#define SWITCHBOARD_SERVER_HTTP_UTIL_H_

#include <httplib.h>
#include <sodium.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <string>
#include <string_view>

#include "errors.h"

namespace switchboard::server {

// Replaces any header `name` (httplib's set_header adds one more).
inline void SetHeader(httplib::Response& res, const std::string& name, const std::string& value) {
  res.headers.erase(name);
  res.set_header(name, value);
}

// An error response in the shape a client of `api` expects.
inline void SendError(httplib::Response& res, Api api, int status, std::string_view message,
                      std::string_view code = "", std::string_view param = "") {
  res.status = status;
  res.body = ErrorBody(api, status, message, code, param);
  SetHeader(res, "Content-Type", "application/json");
}

inline bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

inline std::array<unsigned char, 32> Sha256(std::string_view text) {
  std::array<unsigned char, 32> out{};
  crypto_hash_sha256(out.data(), reinterpret_cast<const unsigned char*>(text.data()), text.size());
  return out;
}

// The token of "Authorization: Bearer TOKEN", or "" when there is none.
inline std::string BearerToken(const httplib::Request& req) {
  const std::string auth = req.get_header_value("Authorization");
  if (auth.size() <= 7 || !EqualsIgnoreCase(std::string_view(auth).substr(0, 7), "bearer ")) {
    return "";
  }
  std::string_view token = std::string_view(auth).substr(7);
  while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
  return std::string(token);
}

}  // namespace switchboard::server

#endif  // SWITCHBOARD_SERVER_HTTP_UTIL_H_
