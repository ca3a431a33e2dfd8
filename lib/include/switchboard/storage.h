// switchboard/storage.h
// Persistent state behind the managers, and the extension point for custom
// stores. switchboard ships two: OpenSqliteStorage() and NewMemoryStorage().
// A custom Storage passes the conformance suite in tests/support/
// (see docs/storage.md).
//
//   auto storage = switchboard::OpenSqliteStorage({.path = "switchboard.db"});
//   if (!storage.ok()) return storage.status();
//   SWITCHBOARD_RETURN_IF_ERROR((*storage)->CreateBackend(backend));
//
// The request path never calls a Storage directly: routing reads an in-memory
// snapshot, and state/usage writes go through a background writer. Storage
// methods may block on disk.
#ifndef SWITCHBOARD_STORAGE_H_
#define SWITCHBOARD_STORAGE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "switchboard/clock.h"
#include "switchboard/config.h"
#include "switchboard/status.h"
#include "switchboard/types.h"

namespace switchboard {

struct BackendFilter {
  std::optional<std::string> pool;
  std::optional<bool> enabled;
};

struct CooldownEventQuery {
  int limit = 100;                        // 1..1000
  std::optional<std::string> backend_id;  // only this backend's events
};

struct UsageQuery {
  int limit = 100;                  // 1..1000
  std::optional<int64_t> before;    // cursor: only records with id < before
};

struct UsagePage {
  std::vector<UsageRecord> records;  // newest first (descending id)
  std::optional<int64_t> next_before;  // cursor for the next page, nullopt at the end
};

struct StatsQuery {
  SystemTime from{};  // inclusive
  SystemTime to{};    // exclusive
  int bucket_seconds = 60;  // timeseries bucket width, >= 1
};

// Aggregates over a set of usage records. Errors are final statuses >= 400
// other than 429; rate_limited counts final 429s. Percentiles are nearest-rank
// over latency_ms / ttfb_ms (ttfb over records with ttfb_ms > 0), read from
// fixed log-scale histograms: exact below 32 ms, otherwise within 1/32
// (3.125 %) of the exact nearest-rank value, and never outside the group's
// smallest and largest value (see docs/storage.md).
struct UsageAggregate {
  int64_t requests = 0;
  int64_t errors = 0;
  int64_t rate_limited = 0;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  double p50_ms = 0;
  double p95_ms = 0;
  double ttfb_p50_ms = 0;
  double ttfb_p95_ms = 0;
  // Upstream 429 answers in the records' decision traces, including those
  // that failover absorbed (the client got another backend's answer).
  int64_t upstream_429 = 0;

  friend bool operator==(const UsageAggregate&, const UsageAggregate&) = default;
};

struct BackendUsage {
  std::string backend_id;
  std::string backend_name;
  UsageAggregate usage;
  friend bool operator==(const BackendUsage&, const BackendUsage&) = default;
};

struct ModelUsage {
  std::string model;
  UsageAggregate usage;
  friend bool operator==(const ModelUsage&, const ModelUsage&) = default;
};

struct UsageBucket {
  SystemTime start{};  // aligned to a multiple of bucket_seconds since the epoch
  UsageAggregate usage;
  // Requests per backend name in this bucket.
  std::vector<std::pair<std::string, int64_t>> requests_by_backend;
  friend bool operator==(const UsageBucket&, const UsageBucket&) = default;
};

struct UsageStats {
  UsageAggregate totals;
  std::vector<BackendUsage> by_backend;  // by requests, descending; ties by name
  std::vector<ModelUsage> by_model;      // by requests, descending; ties by name
  std::vector<UsageBucket> timeseries;   // ascending start; empty buckets omitted
};

// A new API key ciphertext for one backend (master-key rotation).
struct ApiKeyUpdate {
  std::string backend_id;
  std::string api_key_ciphertext;
};

// A client key: what a proxy client presents as "Authorization: Bearer KEY"
// or "x-api-key: KEY". Only its SHA-256 is stored, never the key.
struct ClientKey {
  std::string id;        // "key_...", server-generated
  std::string name;      // unique among keys not revoked, [A-Za-z0-9._-]{1,64}
  std::string key_hash;  // lowercase hex SHA-256 of the key
  std::string hint;      // last 4 characters of the key at most
  std::string metadata = "{}";  // serialized JSON object
  SystemTime created_at{};
  std::optional<SystemTime> last_used_at;
  std::optional<SystemTime> revoked_at;  // set once; a revoked key is never accepted

  bool revoked() const { return revoked_at.has_value(); }
  friend bool operator==(const ClientKey&, const ClientKey&) = default;
};

// When a client key was last used (see Storage::TouchClientKeys).
struct ClientKeyUse {
  std::string key_id;
  SystemTime used_at{};
};

// All implementations are safe for concurrent use from many threads without
// external locking. Methods return kInternal or kUnavailable when the store
// itself fails; a failed write changes nothing.
class Storage {
 public:
  Storage() = default;
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  virtual ~Storage() = default;

  // --- Backends ---------------------------------------------------------
  // Stores a new backend as given (id, timestamps and state included).
  // kAlreadyExists (param "name" or "id") when the id or name is taken.
  virtual Status CreateBackend(const Backend& backend) = 0;
  // kNotFound if there is no backend with `id`.
  virtual Result<Backend> GetBackend(const std::string& id) = 0;
  // kNotFound if there is no backend named `name`.
  virtual Result<Backend> GetBackendByName(const std::string& name) = 0;
  // Backends matching `filter`, ordered by name.
  virtual Result<std::vector<Backend>> ListBackends(const BackendFilter& filter) = 0;
  // Replaces the stored backend with the same id. kNotFound if none;
  // kAlreadyExists (param "name") if the new name belongs to another backend.
  virtual Status UpdateBackend(const Backend& backend) = 0;
  // kNotFound if there is none. Its usage records and cooldown events stay.
  virtual Status DeleteBackend(const std::string& id) = 0;

  // Writes routing state for several backends in one transaction. States of
  // backends that no longer exist are ignored. Does not touch updated_at.
  virtual Status UpdateBackendStates(const std::vector<BackendState>& states) = 0;

  // Replaces the API key ciphertext of every listed backend, all or nothing
  // (master-key rotation). kNotFound, with nothing changed, if one is missing.
  virtual Status ReplaceApiKeys(const std::vector<ApiKeyUpdate>& updates) = 0;

  // --- Cooldown events --------------------------------------------------
  // Appends all of `events` in one transaction; ids are assigned.
  virtual Status AppendCooldownEvents(const std::vector<CooldownEvent>& events) = 0;
  // Newest first (descending id).
  virtual Result<std::vector<CooldownEvent>> ListCooldownEvents(
      const CooldownEventQuery& query) = 0;

  // --- Usage --------------------------------------------------------------
  // Appends all of `records` in one transaction; ids are assigned, increasing
  // in the order given.
  virtual Status AppendUsage(const std::vector<UsageRecord>& records) = 0;
  // One page of usage records, newest first.
  virtual Result<UsagePage> ListUsage(const UsageQuery& query) = 0;
  // Aggregates over records with from <= time < to.
  virtual Result<UsageStats> QueryUsageStats(const StatsQuery& query) = 0;
  // Deletes records with time < cutoff; returns how many went.
  virtual Result<int64_t> DeleteUsageBefore(SystemTime cutoff) = 0;

  // --- Config -------------------------------------------------------------
  // The stored config, or Config{} when none was ever stored.
  virtual Result<Config> GetConfig() = 0;
  // REQUIRES: ValidateConfig(config) is empty (kInvalidArgument otherwise).
  virtual Status PutConfig(const Config& config) = 0;

  // --- Client keys ----------------------------------------------------------
  // The defaults below keep stores written before client keys existed
  // compiling; they answer kFailedPrecondition ("does not keep client keys")
  // and an empty list. Both shipped stores implement them.

  // Stores a new key as given. kAlreadyExists (param "name" or "id") when the
  // id is taken or a key that is not revoked has the same name.
  virtual Status CreateClientKey(const ClientKey& key);
  // Every key, revoked ones included, ordered by created_at then id.
  virtual Result<std::vector<ClientKey>> ListClientKeys();
  // Marks the key revoked at `when` (a key already revoked keeps its first
  // time). kNotFound for an unknown id.
  virtual Status RevokeClientKey(const std::string& id, SystemTime when);
  // Raises last_used_at to each use's time (never lowers it), in one
  // transaction. Unknown ids are ignored.
  virtual Status TouchClientKeys(const std::vector<ClientKeyUse>& uses);

  // --- Derived ------------------------------------------------------------
  // Per-pool counts, in routing order. The default reads ListBackends and
  // GetConfig; a store may answer it more cheaply.
  virtual Result<std::vector<PoolStats>> GetPoolStats(SystemTime now);
};

struct SqliteStorageOptions {
  // A file path, or ":memory:" for a private in-memory database.
  std::string path = "switchboard.db";
  // How long a write waits for another connection's lock before kUnavailable.
  int busy_timeout_ms = 5000;
};

// Opens (creating if needed) and migrates a SQLite database. WAL mode; one
// connection guarded by a mutex. kUnavailable if the file cannot be opened,
// kFailedPrecondition if its schema is newer than this build understands.
Result<std::unique_ptr<Storage>> OpenSqliteStorage(const SqliteStorageOptions& options);

// The schema version OpenSqliteStorage() migrates to.
int SqliteSchemaVersion();

// A Storage whose contents die with it.
std::unique_ptr<Storage> NewMemoryStorage();

}  // namespace switchboard

#endif  // SWITCHBOARD_STORAGE_H_
