#include "switchboard/types.h"

#include <sodium.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdio>
#include <cstdlib>

#include "json/json_depth.h"
#include "rapidjson/document.h"
#include "rapidjson/error/en.h"

namespace switchboard {
namespace {

bool HasControlChar(std::string_view s) {
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) return true;
  }
  return false;
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

constexpr size_t kMaxUrlLength = 2048;
constexpr size_t kMaxLabelLength = 256;
constexpr size_t kMaxModelNameLength = 256;
constexpr size_t kMaxMetadataBytes = 16 * 1024;
constexpr int kMaxWeight = 1000;
// Metadata is re-serialized with rapidjson, which recurses once per level.
// Keep in step with json.cc.
constexpr int kMaxMetadataDepth = 32;

// The inside of a bracketed IPv6 host ("::1"): hex digits, ':' and '.' (an
// embedded IPv4), with at least one ':'.
bool IsValidIpv6Literal(std::string_view inside) {
  if (inside.find(':') == std::string_view::npos) return false;
  for (unsigned char c : inside) {
    if (!(std::isxdigit(c) || c == ':' || c == '.')) return false;
  }
  return true;
}

}  // namespace

std::string_view ApiName(Api api) {
  return api == Api::kAnthropic ? "anthropic" : "openai";
}

std::string_view BackendStatusName(BackendStatus s) {
  switch (s) {
    case BackendStatus::kHealthy: return "healthy";
    case BackendStatus::kCooling: return "cooling";
    case BackendStatus::kError: return "error";
    case BackendStatus::kDisabled: return "disabled";
  }
  return "healthy";
}

std::string_view BackendSourceName(BackendSource s) {
  switch (s) {
    case BackendSource::kManual: return "manual";
    case BackendSource::kImport: return "import";
    case BackendSource::kDemo: return "demo";
  }
  return "manual";
}

std::optional<Api> ParseApi(std::string_view name) {
  if (name == "openai") return Api::kOpenAI;
  if (name == "anthropic") return Api::kAnthropic;
  return std::nullopt;
}

std::optional<BackendStatus> ParseBackendStatus(std::string_view name) {
  for (auto s : {BackendStatus::kHealthy, BackendStatus::kCooling, BackendStatus::kError,
                 BackendStatus::kDisabled}) {
    if (name == BackendStatusName(s)) return s;
  }
  return std::nullopt;
}

std::optional<BackendSource> ParseBackendSource(std::string_view name) {
  for (auto s : {BackendSource::kManual, BackendSource::kImport, BackendSource::kDemo}) {
    if (name == BackendSourceName(s)) return s;
  }
  return std::nullopt;
}

const ModelMapping* Backend::FindMapping(std::string_view model) const {
  if (auto it = model_mappings.find(std::string(model)); it != model_mappings.end()) {
    return &it->second;
  }
  if (auto it = model_mappings.find(std::string(kWildcardModel)); it != model_mappings.end()) {
    return &it->second;
  }
  return nullptr;
}

std::string Backend::UpstreamModelFor(std::string_view model) const {
  const ModelMapping* m = FindMapping(model);
  if (m == nullptr || m->upstream_model.empty() || m->upstream_model == kWildcardModel) {
    return std::string(model);
  }
  return m->upstream_model;
}

bool IsValidBackendName(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (unsigned char c : name) {
    if (!(std::isalnum(c) || c == '.' || c == '_' || c == '-')) return false;
  }
  return true;
}

std::string CheckBaseUrl(std::string_view url) {
  if (url.empty()) return "is required";
  if (url.size() > kMaxUrlLength) return "is longer than 2048 characters";
  if (HasControlChar(url)) return "must not contain control characters";
  for (unsigned char c : url) {
    if (c == ' ' || c == '\\' || c >= 0x80) {
      return "must not contain spaces, backslashes or non-ASCII";
    }
  }
  const size_t sep = url.find("://");
  if (sep == std::string_view::npos) return "must be an absolute http or https URL";
  const std::string_view scheme = url.substr(0, sep);
  if (!EqualsIgnoreCase(scheme, "http") && !EqualsIgnoreCase(scheme, "https")) {
    return "must use http or https";
  }
  std::string_view rest = url.substr(sep + 3);
  const size_t path_start = rest.find_first_of("/?#");
  const std::string_view authority = rest.substr(0, path_start);
  const std::string_view tail =
      path_start == std::string_view::npos ? std::string_view() : rest.substr(path_start);
  if (authority.find('@') != std::string_view::npos) {
    return "must not contain user information (put the key in api_key)";
  }
  if (tail.find_first_of("?#") != std::string_view::npos) {
    return "must not contain a query or fragment";
  }
  if (authority.empty()) return "must name a host";
  std::string_view host = authority;
  std::string_view port;
  if (authority.front() == '[') {  // IPv6 literal
    const size_t close = authority.find(']');
    if (close == std::string_view::npos || !IsValidIpv6Literal(authority.substr(1, close - 1))) {
      return "has a malformed IPv6 host";
    }
    host = authority.substr(0, close + 1);
    const std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return "has a malformed host";
      port = after.substr(1);
      if (port.empty()) return "has an empty port";
    }
  } else if (const size_t colon = authority.rfind(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
    if (port.empty()) return "has an empty port";
  }
  if (host.empty()) return "must name a host";
  if (!port.empty()) {
    if (port.size() > 5) return "has an invalid port";
    int value = 0;
    for (unsigned char c : port) {
      if (!std::isdigit(c)) return "has an invalid port";
      value = value * 10 + (c - '0');
    }
    if (value < 1 || value > 65535) return "has an invalid port";
  }
  if (host.front() != '[') {
    for (unsigned char c : host) {
      if (!(std::isalnum(c) || c == '.' || c == '-' || c == '_')) return "has an invalid host";
    }
  }
  return "";
}

std::vector<FieldError> ValidateBackend(const Backend& b) {
  std::vector<FieldError> errors;
  auto add = [&errors](std::string param, std::string message) {
    errors.push_back(FieldError{std::move(param), std::move(message)});
  };
  if (!IsValidBackendName(b.name)) add("name", "must match [A-Za-z0-9._-]{1,64}");
  if (b.label.size() > kMaxLabelLength) add("label", "is longer than 256 characters");
  if (HasControlChar(b.label)) add("label", "must not contain control characters");
  if (std::string why = CheckBaseUrl(b.api_base_url); !why.empty()) {
    add("api_base_url", std::move(why));
  }
  if (b.timeout_seconds < 1 || b.timeout_seconds > 3600) {
    add("timeout_seconds", "must be between 1 and 3600");
  }
  if (b.rpm_limit < 0) add("rpm_limit", "must be >= 0");
  if (b.tpm_limit < 0) add("tpm_limit", "must be >= 0");
  if (b.max_concurrency < 0) add("max_concurrency", "must be >= 0");
  if (b.pool.empty()) {
    add("pool", "must not be empty");
  } else if (!IsValidBackendName(b.pool)) {
    add("pool", "must match [A-Za-z0-9._-]{1,64}");
  }
  for (const auto& [model, mapping] : b.model_mappings) {
    const std::string param = "model_mappings." + model;
    if (model.empty() || model.size() > kMaxModelNameLength || HasControlChar(model)) {
      add("model_mappings", "model names must be 1..256 characters without control characters");
      continue;
    }
    if (mapping.upstream_model.empty()) {
      // "" on the wildcard means pass-through, like "*" (see ModelMapping).
      if (model != kWildcardModel) add(param + ".upstream_model", "must not be empty");
    } else if (mapping.upstream_model.size() > kMaxModelNameLength ||
               HasControlChar(mapping.upstream_model)) {
      add(param + ".upstream_model", "must be at most 256 characters without control characters");
    }
    if (mapping.weight < 1 || mapping.weight > kMaxWeight) {
      add(param + ".weight", "must be between 1 and 1000");
    }
  }
  if (b.metadata.size() > kMaxMetadataBytes) {
    add("metadata", "is larger than 16 KiB");
  } else {
    // Iterative: a deeply nested document must not exhaust the stack. rapidjson
    // treats a NUL byte as the end of the text, so refuse those explicitly.
    rapidjson::Document doc;
    doc.Parse<rapidjson::kParseIterativeFlag | rapidjson::kParseValidateEncodingFlag>(
        b.metadata.data(), b.metadata.size());
    if (doc.HasParseError() || !doc.IsObject() ||
        b.metadata.find('\0') != std::string::npos) {
      add("metadata", "must be a JSON object");
    } else if (internal::ValueDeeperThan(doc, kMaxMetadataDepth)) {
      add("metadata", "must not nest deeper than 32 levels");
    }
  }
  return errors;
}

namespace {

// `prefix` + 24 random hex characters.
std::string RandomId(std::string_view prefix) {
  if (sodium_init() < 0) std::abort();  // cannot happen after InitCrypto(); no ids without entropy
  constexpr size_t kBytes = 12;
  unsigned char bytes[kBytes];
  randombytes_buf(bytes, kBytes);
  char hex[kBytes * 2 + 1];
  sodium_bin2hex(hex, sizeof(hex), bytes, kBytes);
  return std::string(prefix) + hex;
}

}  // namespace

std::string NewBackendId() { return RandomId("bkd_"); }

std::string NewRequestId() { return RandomId("req_"); }

bool IsSaneRequestId(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  return std::all_of(id.begin(), id.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '.' || c == '_' || c == ':' || c == '-';
  });
}

std::string ApiKeyHint(std::string_view api_key) {
  size_t shown = 0;
  if (api_key.size() >= 16) {
    shown = 4;
  } else if (api_key.size() >= 8) {
    shown = 2;
  }
  if (shown == 0) return "";
  return "..." + std::string(api_key.substr(api_key.size() - shown));
}

}  // namespace switchboard
