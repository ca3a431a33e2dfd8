// MemoryStorage: the whole state in maps under one mutex. For tests, and for
// embedders who keep durable state elsewhere.
#include <algorithm>
#include <map>
#include <mutex>
#include <unordered_map>

#include "stats_util.h"
#include "switchboard/storage.h"

namespace switchboard {
namespace {

constexpr int kMaxPageLimit = 1000;

Status CheckLimit(int limit) {
  if (limit < 1 || limit > kMaxPageLimit) {
    return InvalidArgumentError("limit must be between 1 and 1000", "limit");
  }
  return Status::Ok();
}

class MemoryStorage final : public Storage {
 public:
  Status CreateBackend(const Backend& backend) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (backends_.count(backend.id) != 0) {
      return AlreadyExistsError("a backend with id '" + backend.id + "' already exists", "id");
    }
    if (FindByNameLocked(backend.name) != nullptr) {
      return AlreadyExistsError("a backend named '" + backend.name + "' already exists", "name");
    }
    backends_.emplace(backend.id, backend);
    return Status::Ok();
  }

  Result<Backend> GetBackend(const std::string& id) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = backends_.find(id);
    if (it == backends_.end()) return NotFoundError("no backend with id '" + id + "'");
    return it->second;
  }

  Result<Backend> GetBackendByName(const std::string& name) override {
    std::lock_guard<std::mutex> lock(mu_);
    const Backend* b = FindByNameLocked(name);
    if (b == nullptr) return NotFoundError("no backend named '" + name + "'");
    return *b;
  }

  Result<std::vector<Backend>> ListBackends(const BackendFilter& filter) override {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<Backend> out;
    for (const auto& [id, b] : backends_) {
      if (filter.pool && b.pool != *filter.pool) continue;
      if (filter.enabled && b.enabled != *filter.enabled) continue;
      out.push_back(b);
    }
    std::sort(out.begin(), out.end(),
              [](const Backend& a, const Backend& b) { return a.name < b.name; });
    return out;
  }

  Status UpdateBackend(const Backend& backend) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = backends_.find(backend.id);
    if (it == backends_.end()) return NotFoundError("no backend with id '" + backend.id + "'");
    const Backend* same_name = FindByNameLocked(backend.name);
    if (same_name != nullptr && same_name->id != backend.id) {
      return AlreadyExistsError("a backend named '" + backend.name + "' already exists", "name");
    }
    it->second = backend;
    return Status::Ok();
  }

  Status DeleteBackend(const std::string& id) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (backends_.erase(id) == 0) return NotFoundError("no backend with id '" + id + "'");
    return Status::Ok();
  }

  Status UpdateBackendStates(const std::vector<BackendState>& states) override {
    std::lock_guard<std::mutex> lock(mu_);
    for (const BackendState& s : states) {
      auto it = backends_.find(s.backend_id);
      if (it == backends_.end()) continue;
      Backend& b = it->second;
      b.status = s.status;
      b.cooldown_until = s.cooldown_until;
      b.consecutive_429_count = s.consecutive_429_count;
      b.consecutive_failures = s.consecutive_failures;
      b.last_error = s.last_error;
    }
    return Status::Ok();
  }

  Status ReplaceApiKeys(const std::vector<ApiKeyUpdate>& updates) override {
    std::lock_guard<std::mutex> lock(mu_);
    for (const ApiKeyUpdate& u : updates) {
      if (backends_.count(u.backend_id) == 0) {
        return NotFoundError("no backend with id '" + u.backend_id + "'");
      }
    }
    for (const ApiKeyUpdate& u : updates) {
      backends_[u.backend_id].api_key_ciphertext = u.api_key_ciphertext;
    }
    return Status::Ok();
  }

  Status AppendCooldownEvents(const std::vector<CooldownEvent>& events) override {
    std::lock_guard<std::mutex> lock(mu_);
    for (CooldownEvent e : events) {
      e.id = ++last_event_id_;
      events_.push_back(std::move(e));
    }
    return Status::Ok();
  }

  Result<std::vector<CooldownEvent>> ListCooldownEvents(const CooldownEventQuery& query) override {
    SWITCHBOARD_RETURN_IF_ERROR(CheckLimit(query.limit));
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<CooldownEvent> out;
    for (auto it = events_.rbegin(); it != events_.rend(); ++it) {
      if (query.backend_id && it->backend_id != *query.backend_id) continue;
      out.push_back(*it);
      if (static_cast<int>(out.size()) == query.limit) break;
    }
    return out;
  }

  Status AppendUsage(const std::vector<UsageRecord>& records) override {
    std::lock_guard<std::mutex> lock(mu_);
    for (UsageRecord r : records) {
      r.id = ++last_usage_id_;
      usage_.push_back(std::move(r));
    }
    return Status::Ok();
  }

  Result<UsagePage> ListUsage(const UsageQuery& query) override {
    SWITCHBOARD_RETURN_IF_ERROR(CheckLimit(query.limit));
    std::lock_guard<std::mutex> lock(mu_);
    UsagePage page;
    // usage_ is in ascending id order; walk it backwards from the cursor.
    auto end = usage_.end();
    if (query.before) {
      end = std::lower_bound(usage_.begin(), usage_.end(), *query.before,
                             [](const UsageRecord& r, int64_t id) { return r.id < id; });
    }
    auto it = end;
    while (it != usage_.begin() && static_cast<int>(page.records.size()) < query.limit) {
      --it;
      page.records.push_back(*it);
    }
    if (it != usage_.begin() && !page.records.empty()) page.next_before = page.records.back().id;
    return page;
  }

  Result<UsageStats> QueryUsageStats(const StatsQuery& query) override {
    if (query.bucket_seconds < 1) {
      return InvalidArgumentError("bucket_seconds must be >= 1", "bucket_seconds");
    }
    std::lock_guard<std::mutex> lock(mu_);
    internal::UsageStatsBuilder builder(query.bucket_seconds);
    for (const UsageRecord& r : usage_) {
      if (r.time < query.from || r.time >= query.to) continue;
      builder.Add(r);
    }
    return builder.Build();
  }

  Result<int64_t> DeleteUsageBefore(SystemTime cutoff) override {
    std::lock_guard<std::mutex> lock(mu_);
    const auto old_size = usage_.size();
    usage_.erase(std::remove_if(usage_.begin(), usage_.end(),
                                [cutoff](const UsageRecord& r) { return r.time < cutoff; }),
                 usage_.end());
    return static_cast<int64_t>(old_size - usage_.size());
  }

  Result<Config> GetConfig() override {
    std::lock_guard<std::mutex> lock(mu_);
    return config_;
  }

  Status PutConfig(const Config& config) override {
    if (auto errors = ValidateConfig(config); !errors.empty()) {
      return InvalidArgumentError(errors.front().message, errors.front().param);
    }
    std::lock_guard<std::mutex> lock(mu_);
    config_ = config;
    return Status::Ok();
  }

 private:
  // REQUIRES: mu_ held
  const Backend* FindByNameLocked(const std::string& name) const {
    for (const auto& [id, b] : backends_) {
      if (b.name == name) return &b;
    }
    return nullptr;
  }

  std::mutex mu_;
  std::unordered_map<std::string, Backend> backends_;  // guarded by mu_
  std::vector<CooldownEvent> events_;                  // guarded by mu_, ascending id
  std::vector<UsageRecord> usage_;                     // guarded by mu_, ascending id
  int64_t last_event_id_ = 0;                          // guarded by mu_
  int64_t last_usage_id_ = 0;                          // guarded by mu_
  Config config_;                                      // guarded by mu_
};

}  // namespace

std::unique_ptr<Storage> NewMemoryStorage() { return std::make_unique<MemoryStorage>(); }

}  // namespace switchboard
