// switchboard/admin.h
// The operator's view of a gateway, independent of HTTP: backend CRUD with
// write-only keys, cooldown reset, config, pools, stats, usage and cooldown
// events. Every change is validated, stored, and put into routing at once
// (the Router's snapshot is replaced); a refused change stores nothing.
//
//   AdminService admin(storage, router, cipher, clock);
//   Result<Backend> b = admin.CreateBackend(R"({"name":"openai-main", ...})");
//   if (!b.ok()) return b.status();   // 400, 422 (param set), 409
//   std::string wire = BackendToJson(*b);
#ifndef SWITCHBOARD_ADMIN_H_
#define SWITCHBOARD_ADMIN_H_

#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "switchboard/clock.h"
#include "switchboard/config.h"
#include "switchboard/router.h"
#include "switchboard/secrets.h"
#include "switchboard/status.h"
#include "switchboard/storage.h"

namespace switchboard {

// Thread-safe; writes are serialized. Everything given by reference must
// outlive the service.
class AdminService {
 public:
  AdminService(Storage& storage, Router& router, const KeyCipher& cipher, const Clock& clock);

  // Backends as stored, with their live routing state (status, cooldown,
  // counters, last error) merged in. Ordered by name.
  Result<std::vector<Backend>> ListBackends(const BackendFilter& filter);
  // kNotFound for an unknown id.
  Result<Backend> GetBackend(const std::string& id);

  // POST /admin/backends. kInvalidArgument without param for malformed JSON,
  // with param for a field error; kAlreadyExists (param "name") for a taken
  // name. Defaults: api openai, timeout 60, pool primary, enabled, mappings
  // {"*": pass-through} when none are given, source manual.
  Result<Backend> CreateBackend(std::string_view json);
  // PATCH /admin/backends/{id}: only the fields given change; "api_key"
  // rotates the key. Same errors as create, plus kNotFound.
  Result<Backend> UpdateBackend(const std::string& id, std::string_view json);
  Status DeleteBackend(const std::string& id);
  // Healthy, counters 0, cooldown cleared. kNotFound for an unknown id.
  Result<Backend> ResetCooldown(const std::string& id);

  // Creates or updates (by name) every backend of an import document
  // (ParseBackendImport), all validated before anything is stored. Imported
  // backends get source "import" unless the document says otherwise.
  // Returns how many were created and updated.
  struct ImportResult {
    int created = 0;
    int updated = 0;
  };
  Result<ImportResult> ImportBackends(std::string_view json);
  // Creates or updates one backend by name from a full Backend value
  // (demo backends); `api_key` is encrypted for it.
  Result<Backend> UpsertBackend(Backend backend, std::string_view api_key);

  Result<Config> GetConfig();
  // PATCH /admin/config: a partial object; validated as a whole.
  Result<Config> PatchConfig(std::string_view json);

  // Per-pool counts from live state, in routing order.
  Result<std::vector<PoolStats>> Pools();
  // Usage aggregates over the last `window_seconds` (1..2592000 = 30 days):
  // 1-minute buckets up to 6 h, 5-minute up to 24 h, then hourly.
  Result<UsageStats> Stats(int64_t window_seconds);
  Result<UsagePage> Usage(int limit, std::optional<int64_t> before);
  Result<std::vector<CooldownEvent>> Cooldowns(int limit);

  // Deletes usage older than the config's usage_retention_days (0 keeps
  // everything). Returns how many records went.
  Result<int64_t> ApplyRetention();

  // Puts the stored backends and config into routing now.
  Status RefreshRouter();

 private:
  // REQUIRES: write_mu_ held.
  Status RefreshRouterLocked();
  Backend WithLiveState(Backend b) const;
  // Encrypts `api_key` for `backend` (ciphertext + hint). REQUIRES: id set.
  Status SetKey(Backend* backend, std::string_view api_key) const;

  Storage& storage_;
  Router& router_;
  const KeyCipher& cipher_;
  const Clock& clock_;
  std::mutex write_mu_;  // serializes changes: store, then swap the snapshot
};

// Bucket width AdminService::Stats uses for a window.
int StatsBucketSeconds(int64_t window_seconds);

}  // namespace switchboard

#endif  // SWITCHBOARD_ADMIN_H_
