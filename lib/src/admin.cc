#include "switchboard/admin.h"

#include <sodium.h>

#include <map>

#include "json/json_depth.h"
#include "rapidjson/document.h"
#include "rapidjson/error/en.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"
#include "switchboard/cooldown_manager.h"
#include "switchboard/json.h"

namespace switchboard {
namespace {

constexpr int64_t kMaxStatsWindow = 30 * 86400;

Status FirstError(const std::vector<FieldError>& errors) {
  return InvalidArgumentError(errors.front().message, errors.front().param);
}

// Puts a backend's live routing state (the router's, newer than storage's) on `b`.
void CopyState(const BackendState& state, Backend* b) {
  b->status = state.status;
  b->cooldown_until = state.cooldown_until;
  b->consecutive_429_count = state.consecutive_429_count;
  b->consecutive_failures = state.consecutive_failures;
  b->last_error = state.last_error;
}

// A create body's defaults, before the input is applied.
Backend NewBackendDefaults(SystemTime now) {
  Backend b;
  b.id = NewBackendId();
  b.created_at = now;
  b.updated_at = now;
  return b;
}

constexpr int kMaxKeyMetadataDepth = 32;

struct ClientKeyInput {
  std::string name;
  std::string metadata = "{}";
};

// A POST /admin/keys body: {"name": "...", "metadata": {...}}; unknown
// fields are refused like the backend API does.
Result<ClientKeyInput> ParseClientKeyInput(std::string_view json) {
  if (const size_t nul = json.find('\0'); nul != std::string_view::npos) {
    return InvalidArgumentError("request body is not valid JSON: NUL byte at offset " +
                                std::to_string(nul));
  }
  rapidjson::Document doc;
  doc.Parse<rapidjson::kParseIterativeFlag>(json.data(), json.size());
  if (doc.HasParseError()) {
    std::string reason = rapidjson::GetParseError_En(doc.GetParseError());
    if (!reason.empty() && reason.back() == '.') reason.pop_back();
    return InvalidArgumentError("request body is not valid JSON: " + reason + " at offset " +
                                std::to_string(doc.GetErrorOffset()));
  }
  if (!doc.IsObject()) return InvalidArgumentError("request body must be a JSON object");
  ClientKeyInput in;
  bool has_name = false;
  for (const auto& m : doc.GetObject()) {
    const std::string key(m.name.GetString(), m.name.GetStringLength());
    if (key == "name") {
      if (!m.value.IsString()) return InvalidArgumentError("must be a string", "name");
      in.name.assign(m.value.GetString(), m.value.GetStringLength());
      has_name = true;
    } else if (key == "metadata") {
      if (!m.value.IsObject()) return InvalidArgumentError("must be a JSON object", "metadata");
      if (internal::ValueDeeperThan(m.value, kMaxKeyMetadataDepth)) {
        return InvalidArgumentError("must not nest deeper than 32 levels", "metadata");
      }
      rapidjson::StringBuffer buf;
      rapidjson::Writer<rapidjson::StringBuffer> w(buf);
      m.value.Accept(w);
      in.metadata.assign(buf.GetString(), buf.GetSize());
    } else {
      return InvalidArgumentError("unknown field", key.size() <= 64 ? key : key.substr(0, 64) + "...");
    }
  }
  if (!has_name) return InvalidArgumentError("is required", "name");
  if (!IsValidBackendName(in.name)) {
    return InvalidArgumentError("must match [A-Za-z0-9._-]{1,64}", "name");
  }
  return in;
}

std::string Hex(const unsigned char* bytes, size_t n) {
  std::string out(n * 2 + 1, '\0');
  sodium_bin2hex(out.data(), out.size(), bytes, n);
  out.pop_back();
  return out;
}

// `prefix` + hex of `n` random bytes.
std::string RandomHex(std::string_view prefix, size_t n) {
  std::vector<unsigned char> bytes(n);
  randombytes_buf(bytes.data(), n);
  std::string out(prefix);
  out += Hex(bytes.data(), n);
  sodium_memzero(bytes.data(), n);
  return out;
}

// Parses lowercase hex into a digest; false when it is not 64 hex characters.
bool DigestFromHex(const std::string& hex, ClientKeySet::Digest* out) {
  size_t len = 0;
  return hex.size() == 64 &&
         sodium_hex2bin(out->data(), out->size(), hex.data(), hex.size(), nullptr, &len,
                        nullptr) == 0 &&
         len == out->size();
}

void WriteString(rapidjson::Writer<rapidjson::StringBuffer>& w, std::string_view s) {
  w.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
}

void WriteTimeOrNull(rapidjson::Writer<rapidjson::StringBuffer>& w,
                     const std::optional<SystemTime>& t) {
  if (t) {
    WriteString(w, FormatRfc3339(*t));
  } else {
    w.Null();
  }
}

void WriteClientKeyFields(rapidjson::Writer<rapidjson::StringBuffer>& w, const ClientKey& k) {
  w.Key("id");
  WriteString(w, k.id);
  w.Key("name");
  WriteString(w, k.name);
  w.Key("hint");
  WriteString(w, k.hint);
  w.Key("metadata");
  rapidjson::Document metadata;
  metadata.Parse<rapidjson::kParseIterativeFlag>(k.metadata.data(), k.metadata.size());
  if (metadata.HasParseError() || !metadata.IsObject() ||
      internal::ValueDeeperThan(metadata, kMaxKeyMetadataDepth)) {
    w.StartObject();
    w.EndObject();
  } else {
    metadata.Accept(w);
  }
  w.Key("created_at");
  WriteString(w, FormatRfc3339(k.created_at));
  w.Key("last_used_at");
  WriteTimeOrNull(w, k.last_used_at);
  w.Key("revoked");
  w.Bool(k.revoked());
  w.Key("revoked_at");
  WriteTimeOrNull(w, k.revoked_at);
}

}  // namespace

ClientKeySet::Digest ClientKeySet::DigestOf(std::string_view key) {
  Digest out{};
  crypto_hash_sha256(out.data(), reinterpret_cast<const unsigned char*>(key.data()), key.size());
  return out;
}

const ClientKeySet::Entry* ClientKeySet::Match(const std::vector<std::string>& presented) const {
  const Entry* found = nullptr;
  for (const std::string& key : presented) {
    const Digest digest = DigestOf(key);
    for (const Entry& e : entries_) {
      // No early exit: every entry is compared, whatever matched before.
      const bool equal = sodium_memcmp(digest.data(), e.digest.data(), digest.size()) == 0;
      if (equal && found == nullptr) found = &e;
    }
  }
  return found;
}

std::string ClientKeyToJson(const ClientKey& key) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  w.StartObject();
  WriteClientKeyFields(w, key);
  w.EndObject();
  return std::string(buf.GetString(), buf.GetSize());
}

std::string ClientKeyListToJson(const std::vector<ClientKey>& keys) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  w.StartObject();
  w.Key("data");
  w.StartArray();
  for (const ClientKey& k : keys) {
    w.StartObject();
    WriteClientKeyFields(w, k);
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  return std::string(buf.GetString(), buf.GetSize());
}

std::string CreatedClientKeyToJson(const CreatedClientKey& created) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  w.StartObject();
  WriteClientKeyFields(w, created.key);
  w.Key("key");
  WriteString(w, created.secret);
  w.EndObject();
  return std::string(buf.GetString(), buf.GetSize());
}

int StatsBucketSeconds(int64_t window_seconds) {
  if (window_seconds <= 6 * 3600) return 60;
  if (window_seconds <= 24 * 3600) return 300;
  return 3600;
}

AdminService::AdminService(Storage& storage, Router& router, const KeyCipher& cipher,
                           const Clock& clock)
    : storage_(storage),
      router_(router),
      cipher_(cipher),
      clock_(clock),
      keys_(std::make_shared<const ClientKeySet>()) {
  // A store that cannot list keys leaves the set empty; ReloadClientKeys()
  // reports why.
  (void)ReloadClientKeys();
}

Backend AdminService::WithLiveState(Backend b) const {
  if (auto live = router_.LiveState(b.id); live.ok()) CopyState(live->state, &b);
  // What an operator sees: cooling only while the cooldown runs.
  const BackendStatus effective = EffectiveStatus(b, clock_.WallNow());
  if (effective != BackendStatus::kDisabled) b.status = effective;
  return b;
}

Status AdminService::SetKey(Backend* backend, std::string_view api_key) const {
  auto blob = cipher_.Encrypt(api_key, backend->id);
  if (!blob.ok()) return blob.status();
  backend->api_key_ciphertext = std::move(*blob);
  backend->api_key_hint = ApiKeyHint(api_key);
  return Status::Ok();
}

Result<std::vector<Backend>> AdminService::ListBackends(const BackendFilter& filter) {
  auto backends = storage_.ListBackends(filter);
  if (!backends.ok()) return backends.status();
  for (Backend& b : *backends) b = WithLiveState(std::move(b));
  return backends;
}

Result<Backend> AdminService::GetBackend(const std::string& id) {
  auto b = storage_.GetBackend(id);
  if (!b.ok()) return b.status();
  return WithLiveState(std::move(*b));
}

Result<Backend> AdminService::CreateBackend(std::string_view json) {
  auto input = ParseBackendInput(json);
  if (!input.ok()) return input.status();
  if (!input->name) return InvalidArgumentError("is required", "name");
  if (!input->api_base_url) return InvalidArgumentError("is required", "api_base_url");
  Backend b = NewBackendDefaults(clock_.WallNow());
  ApplyBackendInput(*input, &b);
  if (!input->model_mappings) {
    b.model_mappings[std::string(kWildcardModel)] = ModelMapping{std::string(kWildcardModel), 1};
  }
  if (auto errors = ValidateBackend(b); !errors.empty()) return FirstError(errors);
  if (input->api_key) SWITCHBOARD_RETURN_IF_ERROR(SetKey(&b, *input->api_key));

  std::lock_guard<std::mutex> lock(write_mu_);
  SWITCHBOARD_RETURN_IF_ERROR(storage_.CreateBackend(b));
  SWITCHBOARD_RETURN_IF_ERROR(ChangedLocked());
  return WithLiveState(std::move(b));
}

Result<Backend> AdminService::UpdateBackend(const std::string& id, std::string_view json) {
  auto input = ParseBackendInput(json);
  if (!input.ok()) return input.status();

  std::lock_guard<std::mutex> lock(write_mu_);
  auto stored = storage_.GetBackend(id);
  if (!stored.ok()) return stored.status();
  Backend b = std::move(*stored);
  ApplyBackendInput(*input, &b);
  if (auto errors = ValidateBackend(b); !errors.empty()) return FirstError(errors);
  if (input->api_key) SWITCHBOARD_RETURN_IF_ERROR(SetKey(&b, *input->api_key));
  b.updated_at = clock_.WallNow();
  // Store the live routing state, not the possibly older persisted one.
  if (auto live = router_.LiveState(id); live.ok()) CopyState(live->state, &b);
  SWITCHBOARD_RETURN_IF_ERROR(storage_.UpdateBackend(b));
  SWITCHBOARD_RETURN_IF_ERROR(ChangedLocked());
  return WithLiveState(std::move(b));
}

Status AdminService::DeleteBackend(const std::string& id) {
  std::lock_guard<std::mutex> lock(write_mu_);
  SWITCHBOARD_RETURN_IF_ERROR(storage_.DeleteBackend(id));
  return ChangedLocked();
}

Result<Backend> AdminService::ResetCooldown(const std::string& id) {
  auto b = storage_.GetBackend(id);
  if (!b.ok()) return b.status();
  // The router's reset also reaches storage through its state sink.
  SWITCHBOARD_RETURN_IF_ERROR(router_.ResetCooldown(id));
  return WithLiveState(std::move(*b));
}

Result<AdminService::ImportResult> AdminService::ImportBackends(std::string_view json) {
  auto inputs = ParseBackendImport(json);
  if (!inputs.ok()) return inputs.status();

  std::lock_guard<std::mutex> lock(write_mu_);
  // Validate everything first, so that a bad entry stores nothing.
  std::vector<std::pair<Backend, bool>> planned;  // backend, exists
  std::map<std::string, size_t> seen;
  for (size_t i = 0; i < inputs->size(); ++i) {
    const BackendInput& in = (*inputs)[i];
    const std::string prefix = "[" + std::to_string(i) + "].";
    if (!in.name) return InvalidArgumentError("is required", prefix + "name");
    if (!seen.emplace(*in.name, i).second) {
      return InvalidArgumentError("appears twice in the import", prefix + "name");
    }
    auto existing = storage_.GetBackendByName(*in.name);
    const bool exists = existing.ok();
    if (!exists && existing.status().code() != StatusCode::kNotFound) return existing.status();
    Backend b = exists ? std::move(*existing) : NewBackendDefaults(clock_.WallNow());
    if (!exists && !in.api_base_url) {
      return InvalidArgumentError("is required", prefix + "api_base_url");
    }
    b.source = BackendSource::kImport;
    ApplyBackendInput(in, &b);
    if (!exists && !in.model_mappings) {
      b.model_mappings[std::string(kWildcardModel)] = ModelMapping{std::string(kWildcardModel), 1};
    }
    b.updated_at = clock_.WallNow();
    if (auto errors = ValidateBackend(b); !errors.empty()) {
      return InvalidArgumentError(errors.front().message, prefix + errors.front().param);
    }
    if (in.api_key) SWITCHBOARD_RETURN_IF_ERROR(SetKey(&b, *in.api_key));
    planned.emplace_back(std::move(b), exists);
  }
  ImportResult result;
  for (const auto& [b, exists] : planned) {
    SWITCHBOARD_RETURN_IF_ERROR(exists ? storage_.UpdateBackend(b) : storage_.CreateBackend(b));
    ++(exists ? result.updated : result.created);
  }
  SWITCHBOARD_RETURN_IF_ERROR(ChangedLocked());
  return result;
}

Result<Backend> AdminService::UpsertBackend(Backend backend, std::string_view api_key) {
  std::lock_guard<std::mutex> lock(write_mu_);
  auto existing = storage_.GetBackendByName(backend.name);
  const bool exists = existing.ok();
  if (!exists && existing.status().code() != StatusCode::kNotFound) return existing.status();
  const SystemTime now = clock_.WallNow();
  if (exists) {
    backend.id = existing->id;
    backend.created_at = existing->created_at;
    // Keep the routing state it has.
    backend.status = existing->status;
    backend.cooldown_until = existing->cooldown_until;
    backend.consecutive_429_count = existing->consecutive_429_count;
    backend.consecutive_failures = existing->consecutive_failures;
    backend.last_error = existing->last_error;
  } else {
    if (backend.id.empty()) backend.id = NewBackendId();
    backend.created_at = now;
  }
  backend.updated_at = now;
  if (auto errors = ValidateBackend(backend); !errors.empty()) return FirstError(errors);
  if (!api_key.empty()) SWITCHBOARD_RETURN_IF_ERROR(SetKey(&backend, api_key));
  SWITCHBOARD_RETURN_IF_ERROR(exists ? storage_.UpdateBackend(backend)
                                     : storage_.CreateBackend(backend));
  SWITCHBOARD_RETURN_IF_ERROR(ChangedLocked());
  return WithLiveState(std::move(backend));
}

Result<Config> AdminService::GetConfig() { return storage_.GetConfig(); }

Result<Config> AdminService::PatchConfig(std::string_view json) {
  std::lock_guard<std::mutex> lock(write_mu_);
  auto config = storage_.GetConfig();
  if (!config.ok()) return config.status();
  Config next = *config;
  SWITCHBOARD_RETURN_IF_ERROR(ApplyConfigJson(json, &next));
  if (auto errors = ValidateConfig(next); !errors.empty()) return FirstError(errors);
  SWITCHBOARD_RETURN_IF_ERROR(storage_.PutConfig(next));
  SWITCHBOARD_RETURN_IF_ERROR(ChangedLocked());
  return next;
}

Result<std::vector<PoolStats>> AdminService::Pools() {
  auto backends = ListBackends(BackendFilter{});
  if (!backends.ok()) return backends.status();
  auto config = storage_.GetConfig();
  if (!config.ok()) return config.status();
  return ComputePoolStats(*backends, *config, clock_.WallNow());
}

Result<UsageStats> AdminService::Stats(int64_t window_seconds) {
  if (window_seconds < 1 || window_seconds > kMaxStatsWindow) {
    return InvalidArgumentError("must be between 1 and 2592000 seconds", "window");
  }
  const SystemTime now = clock_.WallNow();
  return storage_.QueryUsageStats({.from = now - std::chrono::seconds(window_seconds),
                                   .to = now + std::chrono::seconds(1),
                                   .bucket_seconds = StatsBucketSeconds(window_seconds)});
}

Result<UsagePage> AdminService::Usage(int limit, std::optional<int64_t> before) {
  return storage_.ListUsage({.limit = limit, .before = before});
}

Result<std::vector<CooldownEvent>> AdminService::Cooldowns(int limit) {
  return storage_.ListCooldownEvents({.limit = limit});
}

Result<int64_t> AdminService::ApplyRetention() {
  auto config = storage_.GetConfig();
  if (!config.ok()) return config.status();
  if (config->usage_retention_days == 0) return int64_t{0};
  return storage_.DeleteUsageBefore(clock_.WallNow() -
                                    std::chrono::hours(24) * config->usage_retention_days);
}

Status AdminService::RefreshRouter() {
  std::lock_guard<std::mutex> lock(write_mu_);
  return RefreshRouterLocked();
}

Status AdminService::RefreshRouterLocked() { return router_.LoadFrom(storage_); }

Status AdminService::ChangedLocked() {
  // The store changed even if the router refused the result: tell the others.
  Status refreshed = RefreshRouterLocked();
  Announce();
  return refreshed;
}

void AdminService::SetChangeHook(std::function<void()> hook) {
  std::lock_guard<std::mutex> lock(write_mu_);
  change_hook_ = std::move(hook);
}

void AdminService::Announce() {
  if (change_hook_) change_hook_();
}

Result<CreatedClientKey> AdminService::CreateClientKey(std::string_view json) {
  auto input = ParseClientKeyInput(json);
  if (!input.ok()) return input.status();
  SWITCHBOARD_RETURN_IF_ERROR(InitCrypto());
  CreatedClientKey created;
  created.secret = RandomHex("sbk_", 24);
  const ClientKeySet::Digest digest = ClientKeySet::DigestOf(created.secret);
  ClientKey& k = created.key;
  k.id = RandomHex("key_", 12);
  k.name = std::move(input->name);
  k.key_hash = Hex(digest.data(), digest.size());
  k.hint = ApiKeyHint(created.secret);
  k.metadata = std::move(input->metadata);
  k.created_at = clock_.WallNow();

  std::lock_guard<std::mutex> lock(write_mu_);
  SWITCHBOARD_RETURN_IF_ERROR(storage_.CreateClientKey(k));
  Announce();
  SWITCHBOARD_RETURN_IF_ERROR(ReloadClientKeysLocked());
  return created;
}

Result<std::vector<ClientKey>> AdminService::ListClientKeys() {
  auto keys = storage_.ListClientKeys();
  if (!keys.ok()) return keys.status();
  const std::shared_ptr<const ClientKeySet> live = client_keys();
  for (ClientKey& k : *keys) {
    for (const ClientKeySet::Entry& e : live->entries()) {
      if (e.id != k.id) continue;
      const int64_t used = e.last_used_ms->load(std::memory_order_relaxed);
      if (used != 0 && (!k.last_used_at || ToUnixMillis(*k.last_used_at) < used)) {
        k.last_used_at = FromUnixMillis(used);
      }
    }
  }
  return keys;
}

Status AdminService::RevokeClientKey(const std::string& id) {
  std::lock_guard<std::mutex> lock(write_mu_);
  SWITCHBOARD_RETURN_IF_ERROR(storage_.RevokeClientKey(id, clock_.WallNow()));
  Announce();
  return ReloadClientKeysLocked();
}

std::shared_ptr<const ClientKeySet> AdminService::client_keys() const {
  std::lock_guard<std::mutex> lock(keys_mu_);
  return keys_;
}

Status AdminService::ReloadClientKeys() {
  std::lock_guard<std::mutex> lock(write_mu_);
  return ReloadClientKeysLocked();
}

Status AdminService::ReloadClientKeysLocked() {
  auto stored = storage_.ListClientKeys();
  if (!stored.ok()) return stored.status();
  const std::shared_ptr<const ClientKeySet> old = client_keys();
  std::vector<ClientKeySet::Entry> entries;
  for (const ClientKey& k : *stored) {
    if (k.revoked()) continue;
    ClientKeySet::Entry e;
    e.id = k.id;
    if (!DigestFromHex(k.key_hash, &e.digest)) {
      return InternalError("client key '" + k.id + "' has a malformed hash in the store");
    }
    // Keep the last-use stamp a request may be writing into right now.
    for (const ClientKeySet::Entry& o : old->entries()) {
      if (o.id == k.id) e.last_used_ms = o.last_used_ms;
    }
    if (!e.last_used_ms) {
      e.last_used_ms = std::make_shared<std::atomic<int64_t>>(
          k.last_used_at ? ToUnixMillis(*k.last_used_at) : 0);
      flushed_uses_[k.id] = e.last_used_ms->load();
    }
    entries.push_back(std::move(e));
  }
  auto next = std::make_shared<const ClientKeySet>(std::move(entries), !stored->empty());
  std::lock_guard<std::mutex> lock(keys_mu_);
  keys_ = std::move(next);
  return Status::Ok();
}

Status AdminService::FlushClientKeyUses() {
  std::lock_guard<std::mutex> lock(write_mu_);
  std::vector<ClientKeyUse> uses;
  for (const ClientKeySet::Entry& e : client_keys()->entries()) {
    const int64_t used = e.last_used_ms->load(std::memory_order_relaxed);
    int64_t& flushed = flushed_uses_[e.id];
    if (used > flushed) uses.push_back({e.id, FromUnixMillis(used)});
  }
  if (uses.empty()) return Status::Ok();
  SWITCHBOARD_RETURN_IF_ERROR(storage_.TouchClientKeys(uses));
  for (const ClientKeyUse& u : uses) flushed_uses_[u.key_id] = ToUnixMillis(u.used_at);
  return Status::Ok();
}

}  // namespace switchboard
