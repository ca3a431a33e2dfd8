// switchboard/json.h
// The admin API's JSON wire forms of the domain types, read and written with
// RapidJSON (kept out of this header).
//
//   Result<BackendInput> in = ParseBackendInput(body);   // POST /admin/backends
//   if (!in.ok()) return in.status();   // kInvalidArgument; param() set for field errors
//   Backend b = ...; ApplyBackendInput(*in, &b);
//   std::string wire = BackendToJson(b);                 // never contains the key
#ifndef SWITCHBOARD_JSON_H_
#define SWITCHBOARD_JSON_H_

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "switchboard/config.h"
#include "switchboard/status.h"
#include "switchboard/storage.h"
#include "switchboard/types.h"

namespace switchboard {

// Field errors and malformed JSON both come back as kInvalidArgument; a
// malformed document has an empty param(), a bad field names it in param().
// This tells the admin API's 400 (malformed) from its 422 (validation).
inline bool IsFieldError(const Status& s) {
  return s.code() == StatusCode::kInvalidArgument && !s.param().empty();
}

// The writable fields of a backend, each set only when the input had it.
struct BackendInput {
  std::optional<std::string> name;
  std::optional<std::string> label;
  std::optional<std::string> api_base_url;
  std::optional<std::string> api_key;  // plaintext, write-only
  std::optional<Api> api;
  std::optional<int> timeout_seconds;
  std::optional<int64_t> rpm_limit;
  std::optional<int64_t> tpm_limit;
  std::optional<int64_t> max_concurrency;
  std::optional<std::string> pool;
  std::optional<bool> enabled;
  std::optional<std::map<std::string, ModelMapping>> model_mappings;
  std::optional<BackendSource> source;
  std::optional<std::string> metadata;  // serialized JSON object
};

// Parses a create/patch body. Read-only fields (id, status, api_key_set,
// api_key_hint, cooldown_until, consecutive_429_count, created_at,
// updated_at) are ignored; unknown fields are refused (param = the field).
// A mapping value may be an object {"upstream_model": "...", "weight": 1} or
// a plain string (the upstream model). Type errors name the field.
Result<BackendInput> ParseBackendInput(std::string_view json);

// Copies the fields `input` has onto `backend` (api_key excepted: the caller
// encrypts it). Does not validate; run ValidateBackend() afterwards.
void ApplyBackendInput(const BackendInput& input, Backend* backend);

// The contract's Backend object. Emits api_key_set and api_key_hint, never a
// key or its ciphertext.
std::string BackendToJson(const Backend& backend);
// {"data":[Backend...]}
std::string BackendListToJson(const std::vector<Backend>& backends);

// Config, full form.
std::string ConfigToJson(const Config& config);
// Applies a (partial) config object onto `config`. Unknown fields and type
// errors are field errors. Does not validate ranges; run ValidateConfig().
Status ApplyConfigJson(std::string_view json, Config* config);

std::string PoolStatsToJson(const std::vector<PoolStats>& pools);  // {"data":[...]}
std::string UsageRecordToJson(const UsageRecord& record);
std::string UsagePageToJson(const UsagePage& page);  // {"data":[...],"next_before":N|null}
std::string CooldownEventsToJson(const std::vector<CooldownEvent>& events);  // {"data":[...]}
std::string UsageStatsToJson(const UsageStats& stats, int window_seconds);

// An import file: a JSON array of backend objects (or {"backends":[...]}).
// Each element parses like a create body; the param of an error is prefixed
// with its index ("[2].api_base_url").
Result<std::vector<BackendInput>> ParseBackendImport(std::string_view json);

// Appends `text` to `out` as a JSON string literal, quotes included.
void AppendJsonString(std::string_view text, std::string* out);

// A field error list as the contract's error object:
// {"error":{"message":"...","type":"invalid_request_error","param":"...","code":"..."}}
std::string ErrorToJson(std::string_view message, std::string_view type,
                        std::string_view param, std::string_view code);

}  // namespace switchboard

#endif  // SWITCHBOARD_JSON_H_
