// Connection-string helpers that need no libpq, so the server can recognise
// and redact a PostgreSQL URL in every build.
#include <string>
#include <string_view>

#include "switchboard/postgres_storage.h"

namespace switchboard {

bool IsPostgresUrl(std::string_view store) {
  return store.rfind("postgres://", 0) == 0 || store.rfind("postgresql://", 0) == 0;
}

std::string RedactPostgresUrl(std::string_view url) {
  std::string out(url);
  // scheme://user:password@host -> scheme://user:***@host
  if (const size_t scheme = out.find("://"); scheme != std::string::npos) {
    const size_t start = scheme + 3;
    const size_t end = out.find_first_of("/?", start);
    const size_t at = out.rfind('@', end == std::string::npos ? std::string::npos : end);
    if (at != std::string::npos && at >= start) {
      const size_t colon = out.find(':', start);
      if (colon != std::string::npos && colon < at) out.replace(colon + 1, at - colon - 1, "***");
    }
  }
  // ...?password=secret&... (URI query) or password=secret (key/value form)
  for (size_t pos = out.find("password="); pos != std::string::npos;
       pos = out.find("password=", pos + 1)) {
    if (pos > 0 && out[pos - 1] != '?' && out[pos - 1] != '&' && out[pos - 1] != ' ') continue;
    const size_t value = pos + 9;
    size_t end = out.find_first_of("& ", value);
    if (end == std::string::npos) end = out.size();
    out.replace(value, end - value, "***");
  }
  return out;
}

}  // namespace switchboard
