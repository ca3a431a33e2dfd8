// switchboard/types.h
// The domain: backends (upstream accounts), their model mappings, pool
// statistics, usage records and cooldown events. Plain values; copy freely.
//
//   Backend b;
//   b.name = "openai-main";
//   b.api_base_url = "https://api.openai.com/v1";
//   b.model_mappings["gpt-4o"] = ModelMapping{"gpt-4o-2024-08-06", 1};
//   if (auto errors = ValidateBackend(b); !errors.empty()) { ... }
#ifndef SWITCHBOARD_TYPES_H_
#define SWITCHBOARD_TYPES_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "switchboard/clock.h"

namespace switchboard {

// The wire format a backend (or a client) speaks.
enum class Api { kOpenAI, kAnthropic };

enum class BackendStatus { kHealthy, kCooling, kError, kDisabled };

// Where a backend came from.
enum class BackendSource { kManual, kImport, kDemo };

std::string_view ApiName(Api api);                      // "openai" | "anthropic"
std::string_view BackendStatusName(BackendStatus s);    // "healthy" | ...
std::string_view BackendSourceName(BackendSource s);    // "manual" | ...
std::optional<Api> ParseApi(std::string_view name);
std::optional<BackendStatus> ParseBackendStatus(std::string_view name);
std::optional<BackendSource> ParseBackendSource(std::string_view name);

// The mapping key that matches every canonical model.
inline constexpr std::string_view kWildcardModel = "*";

// How one canonical model name is served by one backend.
struct ModelMapping {
  // The model id sent upstream. For the "*" mapping, "*" (or "") means the
  // canonical name passes through unchanged.
  std::string upstream_model;
  // Relative share under the weighted strategy. >= 1.
  int weight = 1;

  friend bool operator==(const ModelMapping&, const ModelMapping&) = default;
};

// One upstream provider endpoint with its own API key.
struct Backend {
  std::string id;    // "bkd_..." server-generated, stable
  std::string name;  // unique, [A-Za-z0-9._-]{1,64}
  std::string label;
  std::string api_base_url;
  Api api = Api::kOpenAI;
  int timeout_seconds = 60;      // 1..3600
  int64_t rpm_limit = 0;         // 0 = unlimited
  int64_t tpm_limit = 0;         // 0 = unlimited
  int64_t max_concurrency = 0;   // 0 = unlimited
  std::string pool = "primary";
  bool enabled = true;
  BackendStatus status = BackendStatus::kHealthy;
  std::map<std::string, ModelMapping> model_mappings;
  BackendSource source = BackendSource::kManual;
  std::optional<SystemTime> cooldown_until;
  int consecutive_429_count = 0;
  // Consecutive 5xx / connect failures / timeouts (error_threshold counts these).
  int consecutive_failures = 0;
  // Last upstream failure, for operators ("429 from upstream", "connect timeout").
  std::string last_error;
  // A JSON object, serialized. "{}" when empty.
  std::string metadata = "{}";
  SystemTime created_at{};
  SystemTime updated_at{};

  // The API key as stored: the versioned ciphertext KeyCipher produced
  // ("sb1:<key id>:<base64>"), or "" when no key is set. Never plaintext.
  std::string api_key_ciphertext;
  // At most the last 4 characters of the key, "" when none or too short to hint.
  std::string api_key_hint;

  bool api_key_set() const { return !api_key_ciphertext.empty(); }

  // The mapping that serves `model`: the exact one, else "*", else nullptr.
  const ModelMapping* FindMapping(std::string_view model) const;
  // The upstream model id for `model`. REQUIRES: FindMapping(model) != nullptr.
  std::string UpstreamModelFor(std::string_view model) const;

  friend bool operator==(const Backend&, const Backend&) = default;
};

// The mutable routing state of a backend, written by the cooldown manager.
struct BackendState {
  std::string backend_id;
  BackendStatus status = BackendStatus::kHealthy;
  std::optional<SystemTime> cooldown_until;
  int consecutive_429_count = 0;
  int consecutive_failures = 0;
  std::string last_error;

  friend bool operator==(const BackendState&, const BackendState&) = default;
};

// Counts of the backends in one pool, as GET /admin/pools shows them.
struct PoolStats {
  std::string pool;
  int priority = 0;  // 0 = tried first
  int total = 0;
  int enabled = 0;
  int healthy = 0;
  int cooling = 0;
  int error = 0;

  friend bool operator==(const PoolStats&, const PoolStats&) = default;
};

// One client request through the gateway, whatever happened to it.
struct UsageRecord {
  int64_t id = 0;  // assigned by Storage on append; increasing
  std::string request_id;
  SystemTime time{};  // when the request arrived
  std::string endpoint;  // "/v1/chat/completions"
  std::string model;     // canonical model the client asked for
  std::string backend_id;    // the backend that answered (or was tried last), "" if none
  std::string backend_name;
  std::string pool;
  int status = 0;        // HTTP status returned to the client
  int attempts = 0;
  int64_t latency_ms = 0;
  int64_t ttfb_ms = 0;   // time to first byte from the upstream, 0 if none
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  bool stream = false;
  std::string error;     // "" on success
  // The decision trace as a JSON array, serialized ("[]" when empty).
  std::string trace = "[]";

  friend bool operator==(const UsageRecord&, const UsageRecord&) = default;
};

// A backend entering cooldown.
struct CooldownEvent {
  int64_t id = 0;  // assigned by Storage on append
  std::string backend_id;
  std::string backend_name;
  SystemTime start{};
  SystemTime until{};
  std::string reason;   // "rate_limited" | "errors" | "auth" | "quota"
  int upstream_status = 0;  // 0 when no HTTP status (connect failure, timeout)

  friend bool operator==(const CooldownEvent&, const CooldownEvent&) = default;
};

// One invalid field of an input.
struct FieldError {
  std::string param;    // "api_base_url", "model_mappings.gpt-4o.upstream_model"
  std::string message;  // "must use http or https"

  friend bool operator==(const FieldError&, const FieldError&) = default;
};

// Checks every rule the admin API enforces on a backend (name pattern, URL
// scheme/user-info/control characters, timeout range, limits >= 0, non-empty
// pool, mapping targets, metadata is an object). Uniqueness of the name is the
// Storage's job (kAlreadyExists). Returns the errors, empty when valid.
std::vector<FieldError> ValidateBackend(const Backend& backend);

// True for [A-Za-z0-9._-]{1,64}.
bool IsValidBackendName(std::string_view name);

// "" when `url` is an acceptable api_base_url, else why not.
std::string CheckBaseUrl(std::string_view url);

// A new backend id: "bkd_" + 24 random hex characters.
std::string NewBackendId();

// A new request id: "req_" + 24 random hex characters.
std::string NewRequestId();

// Whether a client-chosen request id may be echoed: 1..128 of [A-Za-z0-9._:-].
bool IsSaneRequestId(std::string_view id);

// The hint shown for `api_key`: "...f00d" (last 4) for keys of 16+ characters,
// the last 2 for 8..15, and "" for shorter keys.
std::string ApiKeyHint(std::string_view api_key);

}  // namespace switchboard

#endif  // SWITCHBOARD_TYPES_H_
