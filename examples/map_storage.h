// map_storage.h: a custom switchboard::Storage, for examples/custom_storage.cpp
// and the conformance test that runs on it (tests/embed/map_storage_test.cc).
//
// MapStorage keeps the backends and the config in std::maps of its own:
// that is the part a service typically keeps in a store it already has (its
// config database, a key-value store). The append-only records (cooldown
// events, usage) and their statistics are handed to another Storage, here
// NewMemoryStorage(); a service could pass OpenSqliteStorage() instead.
//
//   auto storage = std::make_unique<MapStorage>(switchboard::NewMemoryStorage());
//   switchboard::Router router(switchboard::Clock::Real(), nullptr);
//   router.LoadFrom(*storage);
#ifndef SWITCHBOARD_EXAMPLES_MAP_STORAGE_H_
#define SWITCHBOARD_EXAMPLES_MAP_STORAGE_H_

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "switchboard/storage.h"

namespace example {

// Thread-safe: one mutex guards the maps; the records store is thread-safe
// itself.
class MapStorage final : public switchboard::Storage {
 public:
  // `records` keeps cooldown events and usage records. REQUIRES: not null.
  explicit MapStorage(std::unique_ptr<switchboard::Storage> records)
      : records_(std::move(records)) {}

  // --- Backends, kept here ----------------------------------------------
  switchboard::Status CreateBackend(const switchboard::Backend& backend) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (backends_.count(backend.id) != 0) {
      return switchboard::AlreadyExistsError("backend id " + backend.id + " is taken", "id");
    }
    if (FindByNameLocked(backend.name) != nullptr) {
      return switchboard::AlreadyExistsError("backend name " + backend.name + " is taken",
                                             "name");
    }
    backends_.emplace(backend.id, backend);
    return switchboard::Status::Ok();
  }

  switchboard::Result<switchboard::Backend> GetBackend(const std::string& id) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = backends_.find(id);
    if (it == backends_.end()) return switchboard::NotFoundError("no backend " + id);
    return it->second;
  }

  switchboard::Result<switchboard::Backend> GetBackendByName(const std::string& name) override {
    std::lock_guard<std::mutex> lock(mu_);
    const switchboard::Backend* b = FindByNameLocked(name);
    if (b == nullptr) return switchboard::NotFoundError("no backend named " + name);
    return *b;
  }

  switchboard::Result<std::vector<switchboard::Backend>> ListBackends(
      const switchboard::BackendFilter& filter) override {
    std::lock_guard<std::mutex> lock(mu_);
    std::map<std::string, const switchboard::Backend*> by_name;
    for (const auto& [id, b] : backends_) {
      if (filter.pool && b.pool != *filter.pool) continue;
      if (filter.enabled && b.enabled != *filter.enabled) continue;
      by_name.emplace(b.name, &b);
    }
    std::vector<switchboard::Backend> out;
    for (const auto& [name, b] : by_name) out.push_back(*b);
    return out;
  }

  switchboard::Status UpdateBackend(const switchboard::Backend& backend) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = backends_.find(backend.id);
    if (it == backends_.end()) return switchboard::NotFoundError("no backend " + backend.id);
    const switchboard::Backend* same_name = FindByNameLocked(backend.name);
    if (same_name != nullptr && same_name->id != backend.id) {
      return switchboard::AlreadyExistsError("backend name " + backend.name + " is taken",
                                             "name");
    }
    it->second = backend;
    return switchboard::Status::Ok();
  }

  switchboard::Status DeleteBackend(const std::string& id) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (backends_.erase(id) == 0) return switchboard::NotFoundError("no backend " + id);
    return switchboard::Status::Ok();
  }

  switchboard::Status UpdateBackendStates(
      const std::vector<switchboard::BackendState>& states) override {
    std::lock_guard<std::mutex> lock(mu_);
    for (const switchboard::BackendState& s : states) {
      auto it = backends_.find(s.backend_id);
      if (it == backends_.end()) continue;  // deleted meanwhile
      it->second.status = s.status;
      it->second.cooldown_until = s.cooldown_until;
      it->second.consecutive_429_count = s.consecutive_429_count;
      it->second.consecutive_failures = s.consecutive_failures;
      it->second.last_error = s.last_error;
    }
    return switchboard::Status::Ok();
  }

  switchboard::Status ReplaceApiKeys(
      const std::vector<switchboard::ApiKeyUpdate>& updates) override {
    std::lock_guard<std::mutex> lock(mu_);
    // All or nothing: check every id before changing any.
    for (const switchboard::ApiKeyUpdate& u : updates) {
      if (backends_.count(u.backend_id) == 0) {
        return switchboard::NotFoundError("no backend " + u.backend_id);
      }
    }
    for (const switchboard::ApiKeyUpdate& u : updates) {
      backends_[u.backend_id].api_key_ciphertext = u.api_key_ciphertext;
    }
    return switchboard::Status::Ok();
  }

  // --- Config, kept here ------------------------------------------------
  switchboard::Result<switchboard::Config> GetConfig() override {
    std::lock_guard<std::mutex> lock(mu_);
    return config_.value_or(switchboard::Config{});
  }

  switchboard::Status PutConfig(const switchboard::Config& config) override {
    if (auto errors = switchboard::ValidateConfig(config); !errors.empty()) {
      return switchboard::InvalidArgumentError(errors[0].message, errors[0].param);
    }
    std::lock_guard<std::mutex> lock(mu_);
    config_ = config;
    return switchboard::Status::Ok();
  }

  // --- Records, handed on -----------------------------------------------
  switchboard::Status AppendCooldownEvents(
      const std::vector<switchboard::CooldownEvent>& events) override {
    return records_->AppendCooldownEvents(events);
  }
  switchboard::Result<std::vector<switchboard::CooldownEvent>> ListCooldownEvents(
      const switchboard::CooldownEventQuery& query) override {
    return records_->ListCooldownEvents(query);
  }
  switchboard::Status AppendUsage(const std::vector<switchboard::UsageRecord>& records) override {
    return records_->AppendUsage(records);
  }
  switchboard::Result<switchboard::UsagePage> ListUsage(
      const switchboard::UsageQuery& query) override {
    return records_->ListUsage(query);
  }
  switchboard::Result<switchboard::UsageStats> QueryUsageStats(
      const switchboard::StatsQuery& query) override {
    return records_->QueryUsageStats(query);
  }
  switchboard::Result<int64_t> DeleteUsageBefore(switchboard::SystemTime cutoff) override {
    return records_->DeleteUsageBefore(cutoff);
  }
  switchboard::Status CreateClientKey(const switchboard::ClientKey& key) override {
    return records_->CreateClientKey(key);
  }
  switchboard::Result<std::vector<switchboard::ClientKey>> ListClientKeys() override {
    return records_->ListClientKeys();
  }
  switchboard::Status RevokeClientKey(const std::string& id,
                                      switchboard::SystemTime when) override {
    return records_->RevokeClientKey(id, when);
  }
  switchboard::Status TouchClientKeys(const std::vector<switchboard::ClientKeyUse>& uses) override {
    return records_->TouchClientKeys(uses);
  }

 private:
  // REQUIRES: mu_ held.
  const switchboard::Backend* FindByNameLocked(const std::string& name) const {
    for (const auto& [id, b] : backends_) {
      if (b.name == name) return &b;
    }
    return nullptr;
  }

  const std::unique_ptr<switchboard::Storage> records_;
  std::mutex mu_;
  std::map<std::string, switchboard::Backend> backends_;  // guarded by mu_, by id
  std::optional<switchboard::Config> config_;             // guarded by mu_
};

}  // namespace example

#endif  // SWITCHBOARD_EXAMPLES_MAP_STORAGE_H_
