// switchboard/admin.h
// The operator's view of a gateway, independent of HTTP: backend CRUD with
// write-only keys, cooldown reset, config, pools, stats, usage, cooldown
// events and client keys. Every change is validated, stored, and put into routing at once
// (the Router's snapshot is replaced); a refused change stores nothing.
//
//   AdminService admin(storage, router, cipher, clock);
//   Result<Backend> b = admin.CreateBackend(R"({"name":"openai-main", ...})");
//   if (!b.ok()) return b.status();   // 400, 422 (param set), 409
//   std::string wire = BackendToJson(*b);
#ifndef SWITCHBOARD_ADMIN_H_
#define SWITCHBOARD_ADMIN_H_

#include <array>
#include <atomic>
#include <functional>
#include <memory>
#include <map>
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

// The client keys accepted right now (not revoked), as SHA-256 digests: an
// immutable snapshot that the proxy checks every request against, replaced
// as a whole when a key is created or revoked. Thread-safe (immutable; the
// last-use stamps are atomics).
class ClientKeySet {
 public:
  using Digest = std::array<unsigned char, 32>;
  struct Entry {
    std::string id;
    Digest digest{};
    // Unix ms of the last request that presented the key (0: none yet),
    // shared with the entries of later snapshots for the same key.
    std::shared_ptr<std::atomic<int64_t>> last_used_ms;
  };

  ClientKeySet() = default;
  // `required`: client auth is on, which it stays once any key was created,
  // even when every key has been revoked (a revoked key must not get in
  // through an open gateway).
  ClientKeySet(std::vector<Entry> entries, bool required)
      : entries_(std::move(entries)), required_(required || !entries_.empty()) {}

  bool empty() const { return entries_.empty(); }
  // True when proxy requests must present a key.
  bool required() const { return required_; }
  const std::vector<Entry>& entries() const { return entries_; }

  // The entry whose digest is Digest of one of `presented`, or null. Every
  // presented value is compared with every entry in constant time, so the
  // time taken says nothing about which key (or byte) matched.
  const Entry* Match(const std::vector<std::string>& presented) const;

  static Digest DigestOf(std::string_view key);

 private:
  std::vector<Entry> entries_;
  bool required_ = false;
};

// A client key just created: `secret` is the key itself, shown once and
// kept nowhere.
struct CreatedClientKey {
  ClientKey key;
  std::string secret;  // "sbk_" + 48 hex characters (192 random bits)
};

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

  // Puts the stored backends and config into routing now. Not a change of
  // its own: the change hook is not called.
  Status RefreshRouter();
  // Called after every change this service stores (backends, config, client
  // keys), under the service's write lock, e.g. to tell other instances to
  // reload (SharedState::AnnounceChange). Set before serving.
  void SetChangeHook(std::function<void()> hook);

  // --- Client keys ----------------------------------------------------------
  // POST /admin/keys: {"name": "...", "metadata": {...}}. kInvalidArgument
  // without param for malformed JSON, with param for a field error;
  // kAlreadyExists (param "name") while a key of that name is not revoked.
  // The new key is accepted by client_keys() at once.
  Result<CreatedClientKey> CreateClientKey(std::string_view json);
  // Every key, revoked ones included, oldest first, with the live last use.
  Result<std::vector<ClientKey>> ListClientKeys();
  // Revokes at once: the next client_keys() snapshot no longer has it.
  // kNotFound for an unknown id.
  Status RevokeClientKey(const std::string& id);
  // The keys accepted now. Cheap (a pointer copy under a short lock).
  std::shared_ptr<const ClientKeySet> client_keys() const;
  // Loads the stored keys into client_keys(); done by the constructor too
  // (a store that fails then leaves the set empty, see this call's result).
  Status ReloadClientKeys();
  // Writes the last-use times recorded since the previous call to storage
  // (called periodically and at shutdown, never on the request path).
  Status FlushClientKeyUses();

 private:
  // REQUIRES: write_mu_ held.
  Status ReloadClientKeysLocked();
  // REQUIRES: write_mu_ held.
  Status RefreshRouterLocked();
  // RefreshRouterLocked() after a stored change, and Announce(). REQUIRES: write_mu_ held.
  Status ChangedLocked();
  // Calls the change hook. REQUIRES: write_mu_ held.
  void Announce();
  Backend WithLiveState(Backend b) const;
  // Encrypts `api_key` for `backend` (ciphertext + hint). REQUIRES: id set.
  Status SetKey(Backend* backend, std::string_view api_key) const;

  Storage& storage_;
  Router& router_;
  const KeyCipher& cipher_;
  const Clock& clock_;
  std::mutex write_mu_;  // serializes changes: store, then swap the snapshot

  mutable std::mutex keys_mu_;
  std::shared_ptr<const ClientKeySet> keys_;  // guarded by keys_mu_ (pointer only)
  // Last-use times already in storage, by key id.
  std::map<std::string, int64_t> flushed_uses_;  // guarded by write_mu_
  std::function<void()> change_hook_;             // guarded by write_mu_
};

// The wire forms of client keys: never the key or its hash.
// {"id","name","hint","metadata","created_at","last_used_at","revoked","revoked_at"}
std::string ClientKeyToJson(const ClientKey& key);
std::string ClientKeyListToJson(const std::vector<ClientKey>& keys);  // {"data":[...]}
// The 201 answer: the key object plus "key", the secret, this once.
std::string CreatedClientKeyToJson(const CreatedClientKey& created);

// Bucket width AdminService::Stats uses for a window.
int StatsBucketSeconds(int64_t window_seconds);

}  // namespace switchboard

#endif  // SWITCHBOARD_ADMIN_H_
