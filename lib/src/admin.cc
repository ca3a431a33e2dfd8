#include "switchboard/admin.h"

#include <map>

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

}  // namespace

int StatsBucketSeconds(int64_t window_seconds) {
  if (window_seconds <= 6 * 3600) return 60;
  if (window_seconds <= 24 * 3600) return 300;
  return 3600;
}

AdminService::AdminService(Storage& storage, Router& router, const KeyCipher& cipher,
                           const Clock& clock)
    : storage_(storage), router_(router), cipher_(cipher), clock_(clock) {}

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
  SWITCHBOARD_RETURN_IF_ERROR(RefreshRouterLocked());
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
  SWITCHBOARD_RETURN_IF_ERROR(RefreshRouterLocked());
  return WithLiveState(std::move(b));
}

Status AdminService::DeleteBackend(const std::string& id) {
  std::lock_guard<std::mutex> lock(write_mu_);
  SWITCHBOARD_RETURN_IF_ERROR(storage_.DeleteBackend(id));
  return RefreshRouterLocked();
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
  SWITCHBOARD_RETURN_IF_ERROR(RefreshRouterLocked());
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
  SWITCHBOARD_RETURN_IF_ERROR(RefreshRouterLocked());
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
  SWITCHBOARD_RETURN_IF_ERROR(RefreshRouterLocked());
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

}  // namespace switchboard
