#include "switchboard/json.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <set>
#include <utility>

#include "json/json_depth.h"
#include "rapidjson/document.h"
#include "rapidjson/error/en.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace switchboard {
namespace {

using JsonWriter = rapidjson::Writer<rapidjson::StringBuffer>;
using JsonValue = rapidjson::Value;

// Admin input is untrusted: the iterative parser keeps the call stack flat for
// any nesting depth, and encoding validation keeps invalid UTF-8 out of the
// store (every string we later emit came through here or is sanitized).
constexpr unsigned kParseFlags =
    rapidjson::kParseIterativeFlag | rapidjson::kParseValidateEncodingFlag;

// rapidjson's Writer::Accept recurses once per nesting level, so a document we
// re-serialize must be bounded first. Keep in step with types.cc.
constexpr int kMaxMetadataDepth = 32;
constexpr int kMaxTraceDepth = 64;

constexpr size_t kMaxApiKeyLength = 4096;
// An unknown field's name is echoed in param; a hostile name need not be echoed whole.
constexpr size_t kMaxEchoedFieldName = 128;

// --- Output ------------------------------------------------------------------

// Decodes one UTF-8 sequence at s[i]; returns its length, or 0 if it is invalid
// (truncated, overlong, a surrogate or beyond U+10FFFF).
size_t Utf8SequenceLength(std::string_view s, size_t i) {
  const auto byte = [&s](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char lead = byte(i);
  if (lead < 0x80) return 1;
  size_t len = 0;
  uint32_t cp = 0;
  if ((lead & 0xE0) == 0xC0) {
    len = 2;
    cp = lead & 0x1F;
  } else if ((lead & 0xF0) == 0xE0) {
    len = 3;
    cp = lead & 0x0F;
  } else if ((lead & 0xF8) == 0xF0) {
    len = 4;
    cp = lead & 0x07;
  } else {
    return 0;
  }
  if (i + len > s.size()) return 0;
  for (size_t k = 1; k < len; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (byte(i + k) & 0x3F);
  }
  static constexpr uint32_t kMinForLength[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMinForLength[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return len;
}

// `s` with every byte that is not part of a valid UTF-8 sequence replaced by
// U+FFFD, so that what we emit is always valid JSON text.
std::string ToValidUtf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const size_t len = Utf8SequenceLength(s, i);
    if (len == 0) {
      out += "\xEF\xBF\xBD";
      ++i;
    } else {
      out.append(s.data() + i, len);
      i += len;
    }
  }
  return out;
}

bool IsValidUtf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const size_t len = Utf8SequenceLength(s, i);
    if (len == 0) return false;
    i += len;
  }
  return true;
}

void WriteString(JsonWriter& w, std::string_view s) {
  if (IsValidUtf8(s)) {
    w.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
  } else {
    const std::string valid = ToValidUtf8(s);
    w.String(valid.data(), static_cast<rapidjson::SizeType>(valid.size()));
  }
}

void WriteKey(JsonWriter& w, std::string_view key) {
  // Keys written here are our field names or stored names/models; sanitize the latter.
  if (IsValidUtf8(key)) {
    w.Key(key.data(), static_cast<rapidjson::SizeType>(key.size()));
  } else {
    const std::string valid = ToValidUtf8(key);
    w.Key(valid.data(), static_cast<rapidjson::SizeType>(valid.size()));
  }
}

void WriteStringOrNull(JsonWriter& w, std::string_view s) {
  if (s.empty()) {
    w.Null();
  } else {
    WriteString(w, s);
  }
}

// Writer::Double refuses NaN and infinities (and would leave a hole in the
// output); they become null.
void WriteDouble(JsonWriter& w, double d) {
  if (std::isfinite(d)) {
    w.Double(d);
  } else {
    w.Null();
  }
}

void WriteTime(JsonWriter& w, SystemTime t) { WriteString(w, FormatRfc3339(t)); }

std::string Finish(const rapidjson::StringBuffer& buf) {
  return std::string(buf.GetString(), buf.GetSize());
}

// Writes the stored JSON text `text` as a value when it parses as the wanted
// kind (object or array) within `max_depth`; else writes `fallback` ("{}"/"[]").
void WriteEmbeddedJson(JsonWriter& w, std::string_view text, bool want_object, int max_depth) {
  rapidjson::Document doc;
  doc.Parse<kParseFlags>(text.data(), text.size());
  const bool usable = !doc.HasParseError() && text.find('\0') == std::string_view::npos &&
                      (want_object ? doc.IsObject() : doc.IsArray()) &&
                      !internal::ValueDeeperThan(doc, max_depth);
  if (usable) {
    doc.Accept(w);
  } else if (want_object) {
    w.StartObject();
    w.EndObject();
  } else {
    w.StartArray();
    w.EndArray();
  }
}

void WriteBackend(JsonWriter& w, const Backend& b) {
  w.StartObject();
  WriteKey(w, "id");
  WriteString(w, b.id);
  WriteKey(w, "name");
  WriteString(w, b.name);
  WriteKey(w, "label");
  WriteString(w, b.label);
  WriteKey(w, "api_base_url");
  WriteString(w, b.api_base_url);
  WriteKey(w, "api_key_set");
  w.Bool(b.api_key_set());
  WriteKey(w, "api_key_hint");
  WriteString(w, b.api_key_hint);
  WriteKey(w, "api");
  WriteString(w, ApiName(b.api));
  WriteKey(w, "timeout_seconds");
  w.Int(b.timeout_seconds);
  WriteKey(w, "rpm_limit");
  w.Int64(b.rpm_limit);
  WriteKey(w, "tpm_limit");
  w.Int64(b.tpm_limit);
  WriteKey(w, "max_concurrency");
  w.Int64(b.max_concurrency);
  WriteKey(w, "pool");
  WriteString(w, b.pool);
  WriteKey(w, "enabled");
  w.Bool(b.enabled);
  WriteKey(w, "status");
  // Without a clock we cannot tell an expired cooldown; the stored status is
  // what the cooldown manager last decided, except that switching a backend
  // off overrides it.
  WriteString(w, BackendStatusName(b.enabled ? b.status : BackendStatus::kDisabled));
  WriteKey(w, "model_mappings");
  w.StartObject();
  for (const auto& [model, mapping] : b.model_mappings) {
    WriteKey(w, model);
    w.StartObject();
    WriteKey(w, "upstream_model");
    WriteString(w, mapping.upstream_model);
    WriteKey(w, "weight");
    w.Int(mapping.weight);
    w.EndObject();
  }
  w.EndObject();
  WriteKey(w, "source");
  WriteString(w, BackendSourceName(b.source));
  WriteKey(w, "cooldown_until");
  if (b.cooldown_until) {
    WriteTime(w, *b.cooldown_until);
  } else {
    w.Null();
  }
  WriteKey(w, "consecutive_429_count");
  w.Int(b.consecutive_429_count);
  WriteKey(w, "metadata");
  WriteEmbeddedJson(w, b.metadata, /*want_object=*/true, kMaxMetadataDepth);
  WriteKey(w, "created_at");
  WriteTime(w, b.created_at);
  WriteKey(w, "updated_at");
  WriteTime(w, b.updated_at);
  WriteKey(w, "last_error");
  WriteStringOrNull(w, b.last_error);
  w.EndObject();
}

void WriteAggregateFields(JsonWriter& w, const UsageAggregate& a) {
  WriteKey(w, "requests");
  w.Int64(a.requests);
  WriteKey(w, "errors");
  w.Int64(a.errors);
  WriteKey(w, "rate_limited");
  w.Int64(a.rate_limited);
  WriteKey(w, "prompt_tokens");
  w.Int64(a.prompt_tokens);
  WriteKey(w, "completion_tokens");
  w.Int64(a.completion_tokens);
  WriteKey(w, "p50_ms");
  WriteDouble(w, a.p50_ms);
  WriteKey(w, "p95_ms");
  WriteDouble(w, a.p95_ms);
  WriteKey(w, "ttfb_p50_ms");
  WriteDouble(w, a.ttfb_p50_ms);
  WriteKey(w, "ttfb_p95_ms");
  WriteDouble(w, a.ttfb_p95_ms);
  WriteKey(w, "upstream_429");
  w.Int64(a.upstream_429);
}

void WriteUsageRecord(JsonWriter& w, const UsageRecord& r) {
  w.StartObject();
  WriteKey(w, "id");
  w.Int64(r.id);
  WriteKey(w, "request_id");
  WriteString(w, r.request_id);
  WriteKey(w, "time");
  WriteTime(w, r.time);
  WriteKey(w, "time_ms");
  w.Int64(ToUnixMillis(r.time));
  WriteKey(w, "endpoint");
  WriteString(w, r.endpoint);
  WriteKey(w, "model");
  WriteString(w, r.model);
  WriteKey(w, "backend_id");
  WriteString(w, r.backend_id);
  WriteKey(w, "backend_name");
  WriteString(w, r.backend_name);
  WriteKey(w, "pool");
  WriteString(w, r.pool);
  WriteKey(w, "status");
  w.Int(r.status);
  WriteKey(w, "attempts");
  w.Int(r.attempts);
  WriteKey(w, "latency_ms");
  w.Int64(r.latency_ms);
  WriteKey(w, "ttfb_ms");
  w.Int64(r.ttfb_ms);
  WriteKey(w, "prompt_tokens");
  w.Int64(r.prompt_tokens);
  WriteKey(w, "completion_tokens");
  w.Int64(r.completion_tokens);
  WriteKey(w, "stream");
  w.Bool(r.stream);
  WriteKey(w, "error");
  WriteString(w, r.error);
  WriteKey(w, "trace");
  WriteEmbeddedJson(w, r.trace, /*want_object=*/false, kMaxTraceDepth);
  w.EndObject();
}

// --- Input -------------------------------------------------------------------

std::string_view StringOf(const JsonValue& v) {
  return std::string_view(v.GetString(), v.GetStringLength());
}

// Parses `json` into `doc`; a malformed document is an error with an empty param.
Status ParseDocument(std::string_view json, std::string_view what, rapidjson::Document* doc) {
  // rapidjson stops at a NUL byte as if the text ended there, which would let
  // "{}\0anything" through. A raw NUL is never valid JSON.
  if (const size_t nul = json.find('\0'); nul != std::string_view::npos) {
    return InvalidArgumentError(std::string(what) + " is not valid JSON: NUL byte at offset " +
                                std::to_string(nul));
  }
  doc->Parse<kParseFlags>(json.data(), json.size());
  if (doc->HasParseError()) {
    std::string reason = rapidjson::GetParseError_En(doc->GetParseError());
    if (!reason.empty() && reason.back() == '.') reason.pop_back();
    return InvalidArgumentError(std::string(what) + " is not valid JSON: " + reason +
                                " at offset " + std::to_string(doc->GetErrorOffset()));
  }
  return Status::Ok();
}

std::string EchoedName(std::string_view name) {
  if (name.size() <= kMaxEchoedFieldName) return std::string(name);
  return std::string(name.substr(0, kMaxEchoedFieldName)) + "...";
}

// The field readers below leave `*out` alone on error.

Status ReadString(const JsonValue& v, const std::string& param, std::string* out) {
  if (!v.IsString()) return InvalidArgumentError("must be a string", param);
  *out = std::string(StringOf(v));
  return Status::Ok();
}

Status ReadBool(const JsonValue& v, const std::string& param, bool* out) {
  if (!v.IsBool()) return InvalidArgumentError("must be a boolean", param);
  *out = v.GetBool();
  return Status::Ok();
}

// Accepts JSON integers and integral numbers written as floats ("60.0", "1e2"),
// as some clients serialize every number as a double.
Status ReadInt64(const JsonValue& v, const std::string& param, int64_t min, int64_t max,
                 int64_t* out) {
  int64_t value = 0;
  if (v.IsInt64()) {
    value = v.GetInt64();
  } else if (v.IsUint64()) {
    return InvalidArgumentError("is out of range", param);
  } else if (v.IsDouble()) {
    const double d = v.GetDouble();
    if (!std::isfinite(d) || std::trunc(d) != d) {
      return InvalidArgumentError("must be an integer", param);
    }
    constexpr double kExact = 9007199254740992.0;  // 2^53: beyond it doubles skip integers
    if (d > kExact || d < -kExact) return InvalidArgumentError("is out of range", param);
    value = static_cast<int64_t>(d);
  } else {
    return InvalidArgumentError("must be an integer", param);
  }
  if (value < min || value > max) return InvalidArgumentError("is out of range", param);
  *out = value;
  return Status::Ok();
}

Status ReadInt(const JsonValue& v, const std::string& param, int* out) {
  int64_t value = 0;
  SWITCHBOARD_RETURN_IF_ERROR(ReadInt64(v, param, std::numeric_limits<int>::min(),
                                        std::numeric_limits<int>::max(), &value));
  *out = static_cast<int>(value);
  return Status::Ok();
}

Status ReadInt64Field(const JsonValue& v, const std::string& param, int64_t* out) {
  return ReadInt64(v, param, std::numeric_limits<int64_t>::min(),
                   std::numeric_limits<int64_t>::max(), out);
}

bool HasControlChar(std::string_view s) {
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) return true;
  }
  return false;
}

bool IsReadOnlyBackendField(std::string_view key) {
  static constexpr std::string_view kReadOnly[] = {
      "id",         "status",     "api_key_set",          "api_key_hint",
      "cooldown_until",           "consecutive_429_count", "consecutive_failures",
      "last_error", "created_at", "updated_at",
  };
  for (std::string_view r : kReadOnly) {
    if (key == r) return true;
  }
  return false;
}

Result<ModelMapping> ParseMapping(std::string_view model, const JsonValue& v,
                                  const std::string& param) {
  ModelMapping mapping;
  if (v.IsString()) {
    mapping.upstream_model = std::string(StringOf(v));
    return mapping;
  }
  if (!v.IsObject()) {
    return InvalidArgumentError("must be a string or an object", param);
  }
  bool has_upstream = false;
  std::set<std::string_view> seen;
  for (const auto& m : v.GetObject()) {
    const std::string_view key = StringOf(m.name);
    const std::string field = param + "." + EchoedName(key);
    if (!seen.insert(key).second) return InvalidArgumentError("is given more than once", field);
    if (key == "upstream_model") {
      SWITCHBOARD_RETURN_IF_ERROR(ReadString(m.value, field, &mapping.upstream_model));
      has_upstream = true;
    } else if (key == "weight") {
      SWITCHBOARD_RETURN_IF_ERROR(ReadInt(m.value, field, &mapping.weight));
    } else {
      return InvalidArgumentError("unknown field", field);
    }
  }
  // "*" alone means pass-through; any other model must say where it goes
  // (left "" for ValidateBackend to report).
  if (!has_upstream && model == kWildcardModel) mapping.upstream_model = kWildcardModel;
  return mapping;
}

// Parses one backend object; every error's param starts with `prefix`.
Result<BackendInput> ParseBackendObject(const JsonValue& obj, const std::string& prefix) {
  BackendInput in;
  std::set<std::string_view> seen;
  for (const auto& m : obj.GetObject()) {
    const std::string_view key = StringOf(m.name);
    const JsonValue& v = m.value;
    const std::string param = prefix + EchoedName(key);
    if (!seen.insert(key).second) return InvalidArgumentError("is given more than once", param);
    if (IsReadOnlyBackendField(key)) continue;

    if (key == "name") {
      SWITCHBOARD_RETURN_IF_ERROR(ReadString(v, param, &in.name.emplace()));
    } else if (key == "label") {
      if (v.IsNull()) {
        in.label = "";
      } else {
        SWITCHBOARD_RETURN_IF_ERROR(ReadString(v, param, &in.label.emplace()));
      }
    } else if (key == "api_base_url") {
      SWITCHBOARD_RETURN_IF_ERROR(ReadString(v, param, &in.api_base_url.emplace()));
    } else if (key == "api_key") {
      std::string api_key;
      SWITCHBOARD_RETURN_IF_ERROR(ReadString(v, param, &api_key));
      if (api_key.empty()) return InvalidArgumentError("must not be empty", param);
      if (api_key.size() > kMaxApiKeyLength) {
        return InvalidArgumentError("is longer than 4096 characters", param);
      }
      if (HasControlChar(api_key)) {
        return InvalidArgumentError("must not contain control characters", param);
      }
      in.api_key = std::move(api_key);
    } else if (key == "api") {
      std::optional<Api> api;
      if (v.IsString()) api = ParseApi(StringOf(v));
      if (!api) return InvalidArgumentError("must be \"openai\" or \"anthropic\"", param);
      in.api = *api;
    } else if (key == "timeout_seconds") {
      SWITCHBOARD_RETURN_IF_ERROR(ReadInt(v, param, &in.timeout_seconds.emplace()));
    } else if (key == "rpm_limit") {
      SWITCHBOARD_RETURN_IF_ERROR(ReadInt64Field(v, param, &in.rpm_limit.emplace()));
    } else if (key == "tpm_limit") {
      SWITCHBOARD_RETURN_IF_ERROR(ReadInt64Field(v, param, &in.tpm_limit.emplace()));
    } else if (key == "max_concurrency") {
      SWITCHBOARD_RETURN_IF_ERROR(ReadInt64Field(v, param, &in.max_concurrency.emplace()));
    } else if (key == "pool") {
      SWITCHBOARD_RETURN_IF_ERROR(ReadString(v, param, &in.pool.emplace()));
    } else if (key == "enabled") {
      SWITCHBOARD_RETURN_IF_ERROR(ReadBool(v, param, &in.enabled.emplace()));
    } else if (key == "source") {
      std::optional<BackendSource> source;
      if (v.IsString()) source = ParseBackendSource(StringOf(v));
      if (!source) return InvalidArgumentError("must be \"manual\", \"import\" or \"demo\"", param);
      in.source = *source;
    } else if (key == "metadata") {
      if (!v.IsObject()) return InvalidArgumentError("must be a JSON object", param);
      if (internal::ValueDeeperThan(v, kMaxMetadataDepth)) {
        return InvalidArgumentError("must not nest deeper than 32 levels", param);
      }
      rapidjson::StringBuffer buf;
      JsonWriter w(buf);
      v.Accept(w);
      in.metadata = Finish(buf);
    } else if (key == "model_mappings") {
      if (!v.IsObject()) return InvalidArgumentError("must be a JSON object", param);
      auto& mappings = in.model_mappings.emplace();
      for (const auto& mm : v.GetObject()) {
        const std::string_view model = StringOf(mm.name);
        const std::string mapping_param = param + "." + EchoedName(model);
        if (mappings.count(std::string(model)) != 0) {
          return InvalidArgumentError("is given more than once", mapping_param);
        }
        Result<ModelMapping> mapping = ParseMapping(model, mm.value, mapping_param);
        if (!mapping.ok()) return mapping.status();
        mappings.emplace(std::string(model), *std::move(mapping));
      }
    } else {
      return InvalidArgumentError("unknown field", param);
    }
  }
  return in;
}

Status ReadPoolOrder(const JsonValue& v, const std::string& param, std::vector<std::string>* out) {
  if (!v.IsArray()) return InvalidArgumentError("must be an array of strings", param);
  std::vector<std::string> pools;
  pools.reserve(v.Size());
  for (const auto& e : v.GetArray()) {
    if (!e.IsString()) return InvalidArgumentError("must be an array of strings", param);
    pools.emplace_back(StringOf(e));
  }
  *out = std::move(pools);
  return Status::Ok();
}

}  // namespace

Result<BackendInput> ParseBackendInput(std::string_view json) {
  rapidjson::Document doc;
  SWITCHBOARD_RETURN_IF_ERROR(ParseDocument(json, "request body", &doc));
  if (!doc.IsObject()) return InvalidArgumentError("request body must be a JSON object");
  return ParseBackendObject(doc, "");
}

void ApplyBackendInput(const BackendInput& in, Backend* b) {
  if (in.name) b->name = *in.name;
  if (in.label) b->label = *in.label;
  if (in.api_base_url) b->api_base_url = *in.api_base_url;
  if (in.api) b->api = *in.api;
  if (in.timeout_seconds) b->timeout_seconds = *in.timeout_seconds;
  if (in.rpm_limit) b->rpm_limit = *in.rpm_limit;
  if (in.tpm_limit) b->tpm_limit = *in.tpm_limit;
  if (in.max_concurrency) b->max_concurrency = *in.max_concurrency;
  if (in.pool) b->pool = *in.pool;
  if (in.enabled) b->enabled = *in.enabled;
  if (in.model_mappings) b->model_mappings = *in.model_mappings;
  if (in.source) b->source = *in.source;
  if (in.metadata) b->metadata = *in.metadata;
}

std::string BackendToJson(const Backend& backend) {
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  WriteBackend(w, backend);
  return Finish(buf);
}

std::string BackendListToJson(const std::vector<Backend>& backends) {
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  w.StartObject();
  WriteKey(w, "data");
  w.StartArray();
  for (const Backend& b : backends) WriteBackend(w, b);
  w.EndArray();
  w.EndObject();
  return Finish(buf);
}

std::string ConfigToJson(const Config& c) {
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  w.StartObject();
  WriteKey(w, "pool_order");
  w.StartArray();
  for (const std::string& pool : c.pool_order) WriteString(w, pool);
  w.EndArray();
  WriteKey(w, "strategy");
  WriteString(w, StrategyName(c.strategy));
  WriteKey(w, "max_attempts");
  w.Int(c.max_attempts);
  WriteKey(w, "cooldown_base_seconds");
  w.Int(c.cooldown_base_seconds);
  WriteKey(w, "cooldown_max_seconds");
  w.Int(c.cooldown_max_seconds);
  WriteKey(w, "error_threshold");
  w.Int(c.error_threshold);
  WriteKey(w, "body_limit_bytes");
  w.Int64(c.body_limit_bytes);
  WriteKey(w, "usage_retention_days");
  w.Int(c.usage_retention_days);
  w.EndObject();
  return Finish(buf);
}

Status ApplyConfigJson(std::string_view json, Config* config) {
  rapidjson::Document doc;
  SWITCHBOARD_RETURN_IF_ERROR(ParseDocument(json, "request body", &doc));
  if (!doc.IsObject()) return InvalidArgumentError("request body must be a JSON object");
  Config next = *config;  // all or nothing
  std::set<std::string_view> seen;
  for (const auto& m : doc.GetObject()) {
    const std::string_view key = StringOf(m.name);
    const JsonValue& v = m.value;
    const std::string param = EchoedName(key);
    if (!seen.insert(key).second) return InvalidArgumentError("is given more than once", param);
    if (key == "pool_order") {
      SWITCHBOARD_RETURN_IF_ERROR(ReadPoolOrder(v, param, &next.pool_order));
    } else if (key == "strategy") {
      std::optional<Strategy> strategy;
      if (v.IsString()) strategy = ParseStrategy(StringOf(v));
      if (!strategy) {
        return InvalidArgumentError(
            "must be one of \"round-robin\", \"weighted\", \"least-busy\", \"lowest-latency\"",
            param);
      }
      next.strategy = *strategy;
    } else if (key == "max_attempts") {
      SWITCHBOARD_RETURN_IF_ERROR(ReadInt(v, param, &next.max_attempts));
    } else if (key == "cooldown_base_seconds") {
      SWITCHBOARD_RETURN_IF_ERROR(ReadInt(v, param, &next.cooldown_base_seconds));
    } else if (key == "cooldown_max_seconds") {
      SWITCHBOARD_RETURN_IF_ERROR(ReadInt(v, param, &next.cooldown_max_seconds));
    } else if (key == "error_threshold") {
      SWITCHBOARD_RETURN_IF_ERROR(ReadInt(v, param, &next.error_threshold));
    } else if (key == "body_limit_bytes") {
      SWITCHBOARD_RETURN_IF_ERROR(ReadInt64Field(v, param, &next.body_limit_bytes));
    } else if (key == "usage_retention_days") {
      SWITCHBOARD_RETURN_IF_ERROR(ReadInt(v, param, &next.usage_retention_days));
    } else {
      return InvalidArgumentError("unknown field", param);
    }
  }
  *config = std::move(next);
  return Status::Ok();
}

std::string PoolStatsToJson(const std::vector<PoolStats>& pools) {
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  w.StartObject();
  WriteKey(w, "data");
  w.StartArray();
  for (const PoolStats& p : pools) {
    w.StartObject();
    WriteKey(w, "pool");
    WriteString(w, p.pool);
    WriteKey(w, "priority");
    w.Int(p.priority);
    WriteKey(w, "total");
    w.Int(p.total);
    WriteKey(w, "enabled");
    w.Int(p.enabled);
    WriteKey(w, "healthy");
    w.Int(p.healthy);
    WriteKey(w, "cooling");
    w.Int(p.cooling);
    WriteKey(w, "error");
    w.Int(p.error);
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  return Finish(buf);
}

std::string UsageRecordToJson(const UsageRecord& record) {
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  WriteUsageRecord(w, record);
  return Finish(buf);
}

std::string UsagePageToJson(const UsagePage& page) {
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  w.StartObject();
  WriteKey(w, "data");
  w.StartArray();
  for (const UsageRecord& r : page.records) WriteUsageRecord(w, r);
  w.EndArray();
  WriteKey(w, "next_before");
  if (page.next_before) {
    w.Int64(*page.next_before);
  } else {
    w.Null();
  }
  w.EndObject();
  return Finish(buf);
}

std::string CooldownEventsToJson(const std::vector<CooldownEvent>& events) {
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  w.StartObject();
  WriteKey(w, "data");
  w.StartArray();
  for (const CooldownEvent& e : events) {
    w.StartObject();
    WriteKey(w, "id");
    w.Int64(e.id);
    WriteKey(w, "backend_id");
    WriteString(w, e.backend_id);
    WriteKey(w, "backend");
    WriteString(w, e.backend_name);
    WriteKey(w, "start");
    WriteTime(w, e.start);
    WriteKey(w, "until");
    WriteTime(w, e.until);
    WriteKey(w, "reason");
    WriteString(w, e.reason);
    WriteKey(w, "upstream_status");
    w.Int(e.upstream_status);
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  return Finish(buf);
}

std::string UsageStatsToJson(const UsageStats& stats, int window_seconds) {
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  w.StartObject();
  WriteKey(w, "window");
  w.Int(window_seconds);
  WriteKey(w, "totals");
  w.StartObject();
  WriteAggregateFields(w, stats.totals);
  w.EndObject();
  WriteKey(w, "by_backend");
  w.StartArray();
  for (const BackendUsage& b : stats.by_backend) {
    w.StartObject();
    WriteKey(w, "backend_id");
    WriteString(w, b.backend_id);
    WriteKey(w, "backend");
    WriteString(w, b.backend_name);
    WriteAggregateFields(w, b.usage);
    w.EndObject();
  }
  w.EndArray();
  WriteKey(w, "by_model");
  w.StartArray();
  for (const ModelUsage& m : stats.by_model) {
    w.StartObject();
    WriteKey(w, "model");
    WriteString(w, m.model);
    WriteAggregateFields(w, m.usage);
    w.EndObject();
  }
  w.EndArray();
  WriteKey(w, "timeseries");
  w.StartArray();
  for (const UsageBucket& bucket : stats.timeseries) {
    w.StartObject();
    WriteKey(w, "start");
    WriteTime(w, bucket.start);
    WriteKey(w, "start_ms");
    w.Int64(ToUnixMillis(bucket.start));
    WriteAggregateFields(w, bucket.usage);
    WriteKey(w, "by_backend");
    w.StartObject();
    for (const auto& [name, requests] : bucket.requests_by_backend) {
      WriteKey(w, name);
      w.Int64(requests);
    }
    w.EndObject();
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  return Finish(buf);
}

Result<std::vector<BackendInput>> ParseBackendImport(std::string_view json) {
  rapidjson::Document doc;
  SWITCHBOARD_RETURN_IF_ERROR(ParseDocument(json, "import file", &doc));
  const JsonValue* list = &doc;
  std::string prefix;
  if (doc.IsObject()) {
    const auto it = doc.FindMember("backends");
    for (const auto& m : doc.GetObject()) {
      if (StringOf(m.name) != "backends") {
        return InvalidArgumentError("unknown field", EchoedName(StringOf(m.name)));
      }
    }
    if (it == doc.MemberEnd()) return InvalidArgumentError("is required", "backends");
    if (doc.MemberCount() > 1) return InvalidArgumentError("is given more than once", "backends");
    list = &it->value;
    prefix = "backends";
    if (!list->IsArray()) return InvalidArgumentError("must be an array", prefix);
  } else if (!doc.IsArray()) {
    return InvalidArgumentError(
        "import file must be a JSON array of backends or an object with a \"backends\" array");
  }
  std::vector<BackendInput> out;
  out.reserve(list->Size());
  for (rapidjson::SizeType i = 0; i < list->Size(); ++i) {
    const std::string element = prefix + "[" + std::to_string(i) + "]";
    const JsonValue& v = (*list)[i];
    if (!v.IsObject()) return InvalidArgumentError("must be a JSON object", element);
    Result<BackendInput> in = ParseBackendObject(v, element + ".");
    if (!in.ok()) return in.status();
    out.push_back(*std::move(in));
  }
  return out;
}

void AppendJsonString(std::string_view text, std::string* out) {
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  WriteString(w, text);
  out->append(buf.GetString(), buf.GetSize());
}

std::string ErrorToJson(std::string_view message, std::string_view type, std::string_view param,
                        std::string_view code) {
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  w.StartObject();
  WriteKey(w, "error");
  w.StartObject();
  WriteKey(w, "message");
  WriteString(w, message);
  WriteKey(w, "type");
  WriteString(w, type);
  WriteKey(w, "param");
  WriteStringOrNull(w, param);
  WriteKey(w, "code");
  WriteStringOrNull(w, code);
  w.EndObject();
  w.EndObject();
  return Finish(buf);
}

}  // namespace switchboard
