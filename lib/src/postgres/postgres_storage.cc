// PostgresStorage: the Storage several gateway instances share. libpq, a
// small connection pool, versioned schema.
//
// Why the choices below:
// - Parameters only: every value travels as a libpq parameter ($1, $2, ...).
//   The only SQL text built at run time is the placeholder lists of batched
//   statements and the schema name, quoted as an identifier.
// - Times are bigint Unix milliseconds, as in SqliteStorage: the same units
//   everywhere, sortable and indexable, no time-zone conversions.
// - The API key ciphertext is bytea, stored and returned byte for byte.
// - Uniqueness is left to the constraints (not check-then-insert), so two
//   instances racing on the same name still get exactly one winner; the
//   constraint's name says which field collided.
// - Names sort with COLLATE "C" so ORDER BY agrees with std::string (and
//   SQLite) whatever locale the database was created with.
// - A connection that breaks (server restart, failover, idle cut) is dropped
//   with all idle ones (they are likely dead too) and the call is retried on
//   a new connection, unless the break came during COMMIT: then the outcome
//   is unknown and the caller gets kUnavailable.
#include <libpq-fe.h>

#include <algorithm>
#include <charconv>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "rapidjson/document.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"
#include "stats_util.h"
#include "storage_columns.h"
#include "switchboard/json.h"
#include "switchboard/postgres_storage.h"

namespace switchboard {
namespace {

constexpr int kMaxPageLimit = 1000;
// pg_advisory_xact_lock() key that serializes migrations ("swbdmig" in ASCII).
constexpr int64_t kMigrationLockKey = 0x73776264'6d6967;
// Rows per batched INSERT (16 parameters each; libpq allows 65535).
constexpr size_t kInsertBatch = 500;

// One step of the schema history. Steps run in order inside one transaction
// that holds the migration lock; each adds a row to schema_version. Never
// edit a released step: append a new one.
class Session;

struct Migration {
  int version;
  const char* sql;
  // Runs after `sql` in the same transaction, for what SQL alone cannot do.
  Status (*then)(Session& s) = nullptr;
};

Status BackfillUsageRollups(Session& s);

constexpr Migration kMigrations[] = {
    {1, R"sql(
CREATE TABLE backends (
  id                    text PRIMARY KEY,
  name                  text NOT NULL CONSTRAINT backends_name_key UNIQUE,
  label                 text NOT NULL,
  api_base_url          text NOT NULL,
  api                   text NOT NULL,
  timeout_seconds       integer NOT NULL,
  rpm_limit             bigint NOT NULL,
  tpm_limit             bigint NOT NULL,
  max_concurrency       bigint NOT NULL,
  pool                  text NOT NULL,
  enabled               boolean NOT NULL,
  model_mappings        jsonb NOT NULL,
  source                text NOT NULL,
  metadata              text NOT NULL,    -- JSON object, kept as written
  created_at            bigint NOT NULL,  -- Unix ms
  updated_at            bigint NOT NULL,  -- Unix ms
  api_key_ciphertext    bytea NOT NULL,   -- never plaintext
  api_key_hint          text NOT NULL,
  -- Routing state, written by UpdateBackendStates().
  status                text NOT NULL,
  cooldown_until        bigint,           -- Unix ms, NULL when none
  consecutive_429_count integer NOT NULL,
  consecutive_failures  integer NOT NULL,
  last_error            text NOT NULL
);

CREATE TABLE cooldown_events (
  id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  backend_id      text NOT NULL,
  backend_name    text NOT NULL,
  start           bigint NOT NULL,  -- Unix ms
  until           bigint NOT NULL,  -- Unix ms
  reason          text NOT NULL,
  upstream_status integer NOT NULL
);
CREATE INDEX cooldown_events_backend ON cooldown_events (backend_id, id);

CREATE TABLE usage (
  id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  request_id        text NOT NULL,
  time              bigint NOT NULL,  -- Unix ms
  endpoint          text NOT NULL,
  model             text NOT NULL,
  backend_id        text NOT NULL,
  backend_name      text NOT NULL,
  pool              text NOT NULL,
  status            integer NOT NULL,
  attempts          integer NOT NULL,
  latency_ms        bigint NOT NULL,
  ttfb_ms           bigint NOT NULL,
  prompt_tokens     bigint NOT NULL,
  completion_tokens bigint NOT NULL,
  stream            boolean NOT NULL,
  error             text NOT NULL,
  trace             text NOT NULL     -- JSON array
);
CREATE INDEX usage_time ON usage (time);
CREATE INDEX usage_backend_time ON usage (backend_id, time);
CREATE INDEX usage_model_time ON usage (model, time);

-- The gateway config as one JSON document; at most one row.
CREATE TABLE config (
  id   integer PRIMARY KEY CHECK (id = 1),
  json text NOT NULL
);
)sql"},
    {2, R"sql(
-- One row per minute, backend and model, maintained by AppendUsage() in the
-- same transaction as the records, so stats read these instead of the rows.
CREATE TABLE usage_rollup (
  minute            bigint NOT NULL,  -- first minute of the slot (Unix seconds / 60)
  backend_id        text NOT NULL,
  model             text NOT NULL,
  backend_name      text NOT NULL,    -- of the newest record folded in
  requests          bigint NOT NULL,
  errors            bigint NOT NULL,
  rate_limited      bigint NOT NULL,
  upstream_429      bigint NOT NULL,
  prompt_tokens     bigint NOT NULL,
  completion_tokens bigint NOT NULL,
  latency_hist      bytea NOT NULL,   -- log-scale histogram, see stats_util.h
  ttfb_hist         bytea NOT NULL,
  PRIMARY KEY (minute, backend_id, model)
);

-- Client keys: only the SHA-256 of a key is kept.
CREATE TABLE client_keys (
  id           text PRIMARY KEY,
  name         text NOT NULL,
  key_hash     text NOT NULL CONSTRAINT client_keys_key_hash_key UNIQUE,  -- lowercase hex SHA-256
  hint         text NOT NULL,
  metadata     text NOT NULL,    -- JSON object
  created_at   bigint NOT NULL,  -- Unix ms
  last_used_at bigint,           -- Unix ms, NULL when never
  revoked_at   bigint            -- Unix ms, NULL while valid
);
CREATE UNIQUE INDEX client_keys_live_name ON client_keys (name) WHERE revoked_at IS NULL;
)sql"},
    {3, R"sql(
-- Rollups per slot of `span` minutes (1, 5 and 60): a stats window reads the
-- coarsest slots that fit. Rebuilt from the records by the step's code.
ALTER TABLE usage_rollup ADD COLUMN span integer NOT NULL DEFAULT 1;
ALTER TABLE usage_rollup DROP CONSTRAINT usage_rollup_pkey;
ALTER TABLE usage_rollup ADD PRIMARY KEY (span, minute, backend_id, model);
ALTER TABLE usage_rollup ALTER COLUMN span DROP DEFAULT;
DELETE FROM usage_rollup;
)sql",
     BackfillUsageRollups},
};

constexpr int kLatestSchemaVersion = kMigrations[std::size(kMigrations) - 1].version;

#define SWITCHBOARD_PG_BACKEND_COLUMNS                                                         \
  "id, name, label, api_base_url, api, timeout_seconds, rpm_limit, tpm_limit, "                \
  "max_concurrency, pool, enabled, model_mappings, source, metadata, created_at, updated_at, " \
  "api_key_ciphertext, api_key_hint, status, cooldown_until, consecutive_429_count, "          \
  "consecutive_failures, last_error"
#define SWITCHBOARD_PG_EVENT_COLUMNS \
  "id, backend_id, backend_name, start, until, reason, upstream_status"
#define SWITCHBOARD_PG_USAGE_COLUMNS                                                \
  "id, request_id, time, endpoint, model, backend_id, backend_name, pool, status, " \
  "attempts, latency_ms, ttfb_ms, prompt_tokens, completion_tokens, stream, error, trace"

constexpr const char* kSelectBackends = "SELECT " SWITCHBOARD_PG_BACKEND_COLUMNS " FROM backends";
constexpr const char* kInsertBackend =
    "INSERT INTO backends (" SWITCHBOARD_PG_BACKEND_COLUMNS
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb, $13, $14, $15, $16, "
    "$17, $18, $19, $20, $21, $22, $23)";
constexpr const char* kUpdateBackend =
    "UPDATE backends SET name = $2, label = $3, api_base_url = $4, api = $5, "
    "timeout_seconds = $6, rpm_limit = $7, tpm_limit = $8, max_concurrency = $9, pool = $10, "
    "enabled = $11, model_mappings = $12::jsonb, source = $13, metadata = $14, created_at = $15, "
    "updated_at = $16, api_key_ciphertext = $17, api_key_hint = $18, status = $19, "
    "cooldown_until = $20, consecutive_429_count = $21, consecutive_failures = $22, "
    "last_error = $23 WHERE id = $1";

Status CheckLimit(int limit) {
  if (limit < 1 || limit > kMaxPageLimit) {
    return InvalidArgumentError("limit must be between 1 and 1000", "limit");
  }
  return Status::Ok();
}

// --- libpq plumbing ---------------------------------------------------------

struct ResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using PgResult = std::unique_ptr<PGresult, ResultDeleter>;

// Statement parameters. Values are sent as text except bytea ones (binary).
// Not thread-safe; one owner.
class Params {
 public:
  Params& Add(std::string value) { return Push(std::move(value), 0); }
  Params& Add(std::string_view value) { return Push(std::string(value), 0); }
  Params& Add(const char* value) { return Push(std::string(value), 0); }
  Params& Add(int64_t value) { return Push(std::to_string(value), 0); }
  Params& Add(int value) { return Push(std::to_string(value), 0); }
  Params& Add(bool value) { return Push(value ? "t" : "f", 0); }
  Params& Add(SystemTime value) { return Add(ToUnixMillis(value)); }
  Params& Add(const std::optional<SystemTime>& value) {
    return value ? Add(*value) : AddNull();
  }
  Params& AddBytes(std::string bytes) { return Push(std::move(bytes), 1); }
  Params& AddNull() {
    values_.emplace_back();
    null_.push_back(true);
    formats_.push_back(0);
    return *this;
  }
  template <typename T>
  Params& Add(const std::optional<T>& value) {
    return value ? Add(*value) : AddNull();
  }

  int size() const { return static_cast<int>(values_.size()); }
  // Pointers into this object; valid until it changes.
  void Arrays(std::vector<const char*>* values, std::vector<int>* lengths) const {
    values->clear();
    lengths->clear();
    for (size_t i = 0; i < values_.size(); ++i) {
      values->push_back(null_[i] ? nullptr : values_[i].data());
      lengths->push_back(static_cast<int>(values_[i].size()));
    }
  }
  const int* formats() const { return formats_.data(); }

 private:
  Params& Push(std::string value, int format) {
    values_.push_back(std::move(value));
    null_.push_back(false);
    formats_.push_back(format);
    return *this;
  }
  std::vector<std::string> values_;
  std::vector<bool> null_;
  std::vector<int> formats_;
};

// Removes every occurrence of `secret` from `text`.
std::string Scrub(std::string text, const std::string& secret) {
  if (secret.empty()) return text;
  for (size_t pos = text.find(secret); pos != std::string::npos;
       pos = text.find(secret, pos + 3)) {
    text.replace(pos, secret.size(), "***");
  }
  return text;
}

std::string TrimNewlines(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

// Maps a failed statement to a Status by SQLSTATE. A unique violation keeps
// the constraint's name in param(), for the caller to turn into a field.
Status StatusFromResult(const PGresult* r, bool connection_bad, const std::string& prefix,
                        const std::string& secret) {
  const char* state = r != nullptr ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
  const std::string sqlstate = state != nullptr ? state : "";
  const char* primary = r != nullptr ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : nullptr;
  std::string message =
      prefix + Scrub(TrimNewlines(primary != nullptr ? primary : PQresultErrorMessage(r)), secret);
  if (connection_bad) return UnavailableError(std::move(message));
  if (sqlstate == "23505") {
    const char* constraint = PQresultErrorField(r, PG_DIAG_CONSTRAINT_NAME);
    return AlreadyExistsError(std::move(message), constraint != nullptr ? constraint : "");
  }
  // 08: connection exception; 53: insufficient resources; 57P0x: shutdown,
  // crash recovery, cannot connect now; 40001/40P01: serialization failure
  // and deadlock (retrying the call may succeed).
  if (sqlstate.rfind("08", 0) == 0 || sqlstate.rfind("53", 0) == 0 ||
      sqlstate.rfind("57P0", 0) == 0 || sqlstate == "40001" || sqlstate == "40P01") {
    return UnavailableError(std::move(message));
  }
  // 22021/22P05: text the database encoding cannot hold (a NUL byte, invalid UTF-8).
  if (sqlstate == "22021" || sqlstate == "22P05") {
    return InvalidArgumentError(std::move(message));
  }
  return InternalError(std::move(message));
}

// One pooled connection, leased to one call at a time. Not thread-safe.
class Session {
 public:
  Session(PGconn* conn, const std::string* secret) : conn_(conn), secret_(secret) {}

  PGconn* conn() const { return conn_; }
  bool broken() const { return broken_; }
  // A statement failed on a deadlock or serialization conflict.
  bool conflicted() const { return conflicted_; }
  bool commit_sent() const { return commit_sent_; }
  void set_what(std::string_view what) { prefix_ = "postgres: " + std::string(what) + ": "; }

  // Runs one statement. kAlreadyExists (param: the constraint) for unique
  // violations, kUnavailable when the connection is gone, else by SQLSTATE.
  Result<PgResult> Exec(const std::string& sql, const Params& params = Params()) {
    std::vector<const char*> values;
    std::vector<int> lengths;
    params.Arrays(&values, &lengths);
    PgResult r(PQexecParams(conn_, sql.c_str(), params.size(), nullptr, values.data(),
                            lengths.data(), params.formats(), /*resultFormat=*/0));
    return Check(std::move(r));
  }

  // Runs a script of several statements without parameters (migrations).
  Status ExecScript(const char* sql) {
    auto r = Check(PgResult(PQexec(conn_, sql)));
    return r.ok() ? Status::Ok() : r.status();
  }

  Status Begin(const char* sql = "BEGIN") { return Simple(sql); }
  Status Commit() {
    commit_sent_ = true;
    return Simple("COMMIT");
  }
  void Rollback() {
    if (!broken_ && PQtransactionStatus(conn_) != PQTRANS_IDLE) (void)Simple("ROLLBACK");
  }

  // "postgres: <what>: " + message, the password removed.
  Status Error(StatusCode code, const std::string& message) const {
    return Status(code, prefix_ + Scrub(message, *secret_));
  }

 private:
  Status Simple(const char* sql) {
    auto r = Exec(sql);
    return r.ok() ? Status::Ok() : r.status();
  }

  Result<PgResult> Check(PgResult r) {
    const ExecStatusType st = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) return r;
    const bool bad = PQstatus(conn_) == CONNECTION_BAD;
    if (bad) broken_ = true;
    if (const char* state = r ? PQresultErrorField(r.get(), PG_DIAG_SQLSTATE) : nullptr;
        state != nullptr && (std::strcmp(state, "40001") == 0 || std::strcmp(state, "40P01") == 0)) {
      conflicted_ = true;  // the server rolled the transaction back; running it again may succeed
    }
    if (!r) {
      return UnavailableError(prefix_ + Scrub(TrimNewlines(PQerrorMessage(conn_)), *secret_));
    }
    return StatusFromResult(r.get(), bad, prefix_, *secret_);
  }

  PGconn* conn_;
  const std::string* secret_;
  std::string prefix_ = "postgres: ";
  bool broken_ = false;
  bool conflicted_ = false;
  bool commit_sent_ = false;
};

// Up to max_size connections to one database. Thread-safe.
class ConnectionPool {
 public:
  ConnectionPool(std::string conninfo, std::string search_path, std::string secret, int max_size,
                 int connect_timeout_seconds)
      : conninfo_(std::move(conninfo)),
        search_path_(std::move(search_path)),
        secret_(std::move(secret)),
        max_size_(std::max(max_size, 1)),
        connect_timeout_(std::to_string(std::max(connect_timeout_seconds, 1))) {}

  ~ConnectionPool() {
    std::lock_guard<std::mutex> lock(mu_);
    for (PGconn* c : idle_) PQfinish(c);
  }

  // A leased connection; returns it to the pool (or closes it, if broken)
  // when destroyed.
  class Lease {
   public:
    Lease(ConnectionPool* pool, PGconn* conn) : pool_(pool), session_(conn, &pool->secret_) {}
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease() { pool_->Release(session_); }
    Session& session() { return session_; }

   private:
    ConnectionPool* pool_;
    Session session_;
  };

  // Waits for an idle connection or opens a new one. kUnavailable when the
  // server cannot be reached. `what` prefixes error messages.
  Result<std::unique_ptr<Lease>> Acquire(std::string_view what) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return !idle_.empty() || open_ < max_size_; });
    if (!idle_.empty()) {
      PGconn* c = idle_.back();
      idle_.pop_back();
      lock.unlock();
      auto lease = std::make_unique<Lease>(this, c);
      lease->session().set_what(what);
      return lease;
    }
    ++open_;
    lock.unlock();
    Result<PGconn*> c = Connect(what);
    if (!c.ok()) {
      std::lock_guard<std::mutex> relock(mu_);
      --open_;
      cv_.notify_one();
      return c.status();
    }
    auto lease = std::make_unique<Lease>(this, *c);
    lease->session().set_what(what);
    return lease;
  }

  const std::string& secret() const { return secret_; }

 private:
  Result<PGconn*> Connect(std::string_view what) {
    // Defaults first: the URL's own settings (expanded from "dbname") win,
    // except the client encoding, which the code relies on.
    const char* keys[] = {"connect_timeout", "application_name", "dbname", "client_encoding",
                          nullptr};
    const char* values[] = {connect_timeout_.c_str(), "switchboard", conninfo_.c_str(), "UTF8",
                            nullptr};
    PGconn* c = PQconnectdbParams(keys, values, /*expand_dbname=*/1);
    const std::string prefix = "postgres: " + std::string(what) + ": ";
    if (c == nullptr) return UnavailableError(prefix + "out of memory opening a connection");
    if (PQstatus(c) != CONNECTION_OK) {
      std::string message = prefix + "cannot connect: " +
                            Scrub(TrimNewlines(PQerrorMessage(c)), secret_);
      PQfinish(c);
      return UnavailableError(std::move(message));
    }
    // Server notices ("schema ... already exists, skipping") are not errors.
    PQsetNoticeProcessor(c, [](void*, const char*) {}, nullptr);
    if (!search_path_.empty()) {
      Session s(c, &secret_);
      s.set_what(what);
      auto r = s.Exec("SELECT set_config('search_path', $1, false)", Params().Add(search_path_));
      if (!r.ok()) {
        PQfinish(c);
        return r.status();
      }
    }
    return c;
  }

  void Release(Session& s) {
    PGconn* c = s.conn();
    bool keep = !s.broken() && PQstatus(c) == CONNECTION_OK;
    if (keep && PQtransactionStatus(c) != PQTRANS_IDLE) {
      s.Rollback();
      keep = !s.broken() && PQtransactionStatus(c) == PQTRANS_IDLE;
    }
    std::vector<PGconn*> dropped;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (keep) {
        idle_.push_back(c);
      } else {
        dropped.push_back(c);
        --open_;
        // A broken connection usually means the server restarted or a
        // proxy cut us off: the idle ones are most likely dead as well.
        open_ -= static_cast<int>(idle_.size());
        dropped.insert(dropped.end(), idle_.begin(), idle_.end());
        idle_.clear();
      }
    }
    cv_.notify_all();
    for (PGconn* d : dropped) PQfinish(d);
  }

  const std::string conninfo_;
  const std::string search_path_;  // a quoted identifier, or "" to keep the server's
  const std::string secret_;       // the password, scrubbed from every message
  const int max_size_;
  const std::string connect_timeout_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<PGconn*> idle_;  // guarded by mu_
  int open_ = 0;               // guarded by mu_: idle + leased
};

// --- Reading values -----------------------------------------------------------

// A row of a text-format result.
class Row {
 public:
  Row(const PGresult* r, int row) : r_(r), row_(row) {}
  bool IsNull(int col) const { return PQgetisnull(r_, row_, col) != 0; }
  std::string Text(int col) const {
    return std::string(PQgetvalue(r_, row_, col), static_cast<size_t>(PQgetlength(r_, row_, col)));
  }
  int64_t Int64(int col) const {
    const char* v = PQgetvalue(r_, row_, col);
    int64_t out = 0;
    std::from_chars(v, v + PQgetlength(r_, row_, col), out);
    return out;
  }
  int Int(int col) const { return static_cast<int>(Int64(col)); }
  bool Bool(int col) const { return PQgetvalue(r_, row_, col)[0] == 't'; }
  SystemTime Time(int col) const { return FromUnixMillis(Int64(col)); }
  std::optional<SystemTime> OptionalTime(int col) const {
    if (IsNull(col)) return std::nullopt;
    return Time(col);
  }
  // A bytea column (text format: "\x..." hex).
  std::string Bytes(int col) const {
    size_t n = 0;
    unsigned char* raw =
        PQunescapeBytea(reinterpret_cast<const unsigned char*>(PQgetvalue(r_, row_, col)), &n);
    if (raw == nullptr) return std::string();
    std::string out(reinterpret_cast<const char*>(raw), n);
    PQfreemem(raw);
    return out;
  }

 private:
  const PGresult* r_;
  int row_;
};

int64_t AffectedRows(const PGresult* r) {
  const char* n = PQcmdTuples(const_cast<PGresult*>(r));
  int64_t out = 0;
  if (n != nullptr) std::from_chars(n, n + std::strlen(n), out);
  return out;
}

// --- JSON columns -------------------------------------------------------------

// --- Rows -----------------------------------------------------------------------

// Parameters $1..$23 of kInsertBackend / kUpdateBackend.
Params BackendParams(const Backend& b) {
  Params p;
  p.Add(b.id)
      .Add(b.name)
      .Add(b.label)
      .Add(b.api_base_url)
      .Add(ApiName(b.api))
      .Add(b.timeout_seconds)
      .Add(b.rpm_limit)
      .Add(b.tpm_limit)
      .Add(b.max_concurrency)
      .Add(b.pool)
      .Add(b.enabled)
      .Add(internal::MappingsToJson(b.model_mappings))
      .Add(BackendSourceName(b.source))
      .Add(b.metadata)
      .Add(b.created_at)
      .Add(b.updated_at)
      .AddBytes(b.api_key_ciphertext)
      .Add(b.api_key_hint)
      .Add(BackendStatusName(b.status))
      .Add(b.cooldown_until)
      .Add(b.consecutive_429_count)
      .Add(b.consecutive_failures)
      .Add(b.last_error);
  return p;
}

Result<Backend> ReadBackend(const Row& row) {
  Backend b;
  b.id = row.Text(0);
  b.name = row.Text(1);
  b.label = row.Text(2);
  b.api_base_url = row.Text(3);
  auto api = ParseApi(row.Text(4));
  if (!api) return InternalError("backend '" + b.id + "' has an unknown api in the database");
  b.api = *api;
  b.timeout_seconds = row.Int(5);
  b.rpm_limit = row.Int64(6);
  b.tpm_limit = row.Int64(7);
  b.max_concurrency = row.Int64(8);
  b.pool = row.Text(9);
  b.enabled = row.Bool(10);
  auto mappings = internal::MappingsFromJson(row.Text(11));
  if (!mappings.ok()) {
    return InternalError("backend '" + b.id + "': " + mappings.status().message());
  }
  b.model_mappings = std::move(*mappings);
  auto source = ParseBackendSource(row.Text(12));
  if (!source) return InternalError("backend '" + b.id + "' has an unknown source in the database");
  b.source = *source;
  b.metadata = row.Text(13);
  b.created_at = row.Time(14);
  b.updated_at = row.Time(15);
  b.api_key_ciphertext = row.Bytes(16);
  b.api_key_hint = row.Text(17);
  auto status = ParseBackendStatus(row.Text(18));
  if (!status) return InternalError("backend '" + b.id + "' has an unknown status in the database");
  b.status = *status;
  b.cooldown_until = row.OptionalTime(19);
  b.consecutive_429_count = row.Int(20);
  b.consecutive_failures = row.Int(21);
  b.last_error = row.Text(22);
  return b;
}

CooldownEvent ReadEvent(const Row& row) {
  CooldownEvent e;
  e.id = row.Int64(0);
  e.backend_id = row.Text(1);
  e.backend_name = row.Text(2);
  e.start = row.Time(3);
  e.until = row.Time(4);
  e.reason = row.Text(5);
  e.upstream_status = row.Int(6);
  return e;
}

UsageRecord ReadUsage(const Row& row) {
  UsageRecord r;
  r.id = row.Int64(0);
  r.request_id = row.Text(1);
  r.time = row.Time(2);
  r.endpoint = row.Text(3);
  r.model = row.Text(4);
  r.backend_id = row.Text(5);
  r.backend_name = row.Text(6);
  r.pool = row.Text(7);
  r.status = row.Int(8);
  r.attempts = row.Int(9);
  r.latency_ms = row.Int64(10);
  r.ttfb_ms = row.Int64(11);
  r.prompt_tokens = row.Int64(12);
  r.completion_tokens = row.Int64(13);
  r.stream = row.Bool(14);
  r.error = row.Text(15);
  r.trace = row.Text(16);
  return r;
}

// "($1, $2, ...), ($17, ...)": the placeholders of a multi-row VALUES list.
std::string Placeholders(size_t rows, size_t columns) {
  std::string out;
  size_t n = 1;
  for (size_t r = 0; r < rows; ++r) {
    out += r == 0 ? "(" : ", (";
    for (size_t c = 0; c < columns; ++c) {
      if (c > 0) out += ", ";
      out += "$" + std::to_string(n++);
    }
    out += ")";
  }
  return out;
}

const Status& StatusOf(const Status& s) { return s; }
template <typename T>
const Status& StatusOf(const Result<T>& r) {
  return r.status();
}

// --- Statistics -------------------------------------------------------------------

#define SWITCHBOARD_PG_ROLLUP_COLUMNS                                                       \
  "minute, backend_id, model, backend_name, requests, errors, rate_limited, upstream_429, " \
  "prompt_tokens, completion_tokens, latency_hist, ttfb_hist"

// The columns a usage record contributes to statistics, in ReadStatsRecord() order.
#define SWITCHBOARD_PG_STATS_COLUMNS                                                      \
  "time, backend_id, backend_name, model, status, latency_ms, ttfb_ms, prompt_tokens, " \
  "completion_tokens, trace"

UsageRecord ReadStatsRecord(const Row& row) {
  UsageRecord r;
  r.time = row.Time(0);
  r.backend_id = row.Text(1);
  r.backend_name = row.Text(2);
  r.model = row.Text(3);
  r.status = row.Int(4);
  r.latency_ms = row.Int64(5);
  r.ttfb_ms = row.Int64(6);
  r.prompt_tokens = row.Int64(7);
  r.completion_tokens = row.Int64(8);
  r.trace = row.Text(9);
  return r;
}

// A row of "SELECT SWITCHBOARD_PG_ROLLUP_COLUMNS"; kInternal for a histogram
// that does not decode.
Result<internal::UsageRollup> ReadRollup(const Row& row) {
  internal::UsageRollup r;
  r.minute = row.Int64(0);
  r.backend_id = row.Text(1);
  r.model = row.Text(2);
  r.backend_name = row.Text(3);
  r.requests = row.Int64(4);
  r.errors = row.Int64(5);
  r.rate_limited = row.Int64(6);
  r.upstream_429 = row.Int64(7);
  r.prompt_tokens = row.Int64(8);
  r.completion_tokens = row.Int64(9);
  if (!r.latency.Decode(row.Bytes(10)) || !r.ttfb.Decode(row.Bytes(11))) {
    return InternalError("usage_rollup row for minute " + std::to_string(r.minute) +
                         " has a malformed histogram");
  }
  return r;
}

using RollupCells = std::map<internal::RollupKey, internal::UsageRollup>;

// Rollup rows per statement when merging (12 parameters each).
constexpr size_t kRollupBatch = 1000;

// The slot widths, in minutes, usage_rollup keeps (as SqliteStorage). A
// day's stats in 5-minute buckets read 288 slots per backend and model
// instead of 1,440.
constexpr int kRollupSpans[] = {1, 5, 60};

// Folds `cells` (slots of `span` minutes) into usage_rollup, a chunk of
// cells in three statements:
// create the missing rows, lock them all (SELECT ... FOR UPDATE), and write
// back what C++ merged (histograms cannot be added in SQL). Rows are created
// and locked in key order, which is the map's order (bytewise, as COLLATE
// "C"), so concurrent writers wait for each other instead of deadlocking.
// REQUIRES: inside a transaction.
Status MergeRollups(Session& s, int span, const RollupCells& cells) {
  std::vector<const internal::UsageRollup*> all;
  all.reserve(cells.size());
  for (const auto& [key, cell] : cells) all.push_back(&cell);
  for (size_t first = 0; first < all.size(); first += kRollupBatch) {
    const size_t n = std::min(kRollupBatch, all.size() - first);
    Params keys;  // $1: the span, then (minute, backend_id, model) per cell
    keys.Add(span);
    std::string key_rows;
    for (size_t i = 0; i < n; ++i) {
      const internal::UsageRollup& c = *all[first + i];
      keys.Add(c.minute).Add(c.backend_id).Add(c.model);
      const std::string k = std::to_string(3 * i + 2);
      const std::string b = std::to_string(3 * i + 3);
      const std::string m = std::to_string(3 * i + 4);
      key_rows += (i == 0 ? "($" : ", ($") + k + "::bigint, $" + b + "::text, $" + m + "::text)";
    }
    auto created = s.Exec(
        "INSERT INTO usage_rollup (span, " SWITCHBOARD_PG_ROLLUP_COLUMNS
        ") SELECT $1::integer, k.minute, k.backend_id, k.model, '', 0, 0, 0, 0, 0, 0, "
        "''::bytea, ''::bytea "
        "FROM (VALUES " + key_rows + ") AS k (minute, backend_id, model) "
        "ORDER BY k.minute, k.backend_id COLLATE \"C\", k.model COLLATE \"C\" "
        "ON CONFLICT DO NOTHING",
        keys);
    if (!created.ok()) return created.status();
    auto current = s.Exec(
        "SELECT " SWITCHBOARD_PG_ROLLUP_COLUMNS " FROM usage_rollup "
        "WHERE span = $1 AND (minute, backend_id, model) IN (VALUES " + key_rows + ") "
        "ORDER BY minute, backend_id COLLATE \"C\", model COLLATE \"C\" FOR UPDATE",
        keys);
    if (!current.ok()) return current.status();
    RollupCells merged;
    for (int i = 0; i < PQntuples(current->get()); ++i) {
      auto row = ReadRollup(Row(current->get(), i));
      if (!row.ok()) return row.status();
      internal::RollupKey key{row->minute, row->backend_id, row->model};
      merged.emplace(std::move(key), *std::move(row));
    }
    if (merged.size() != n) return InternalError("usage_rollup rows vanished while merging");
    Params values;
    values.Add(span);
    std::string value_rows;
    int p = 1;
    for (size_t i = 0; i < n; ++i) {
      const internal::UsageRollup& cell = *all[first + i];
      internal::UsageRollup& m = merged.at({cell.minute, cell.backend_id, cell.model});
      m.Merge(cell);
      values.Add(m.minute)
          .Add(m.backend_id)
          .Add(m.model)
          .Add(m.backend_name)
          .Add(m.requests)
          .Add(m.errors)
          .Add(m.rate_limited)
          .Add(m.upstream_429)
          .Add(m.prompt_tokens)
          .Add(m.completion_tokens)
          .AddBytes(m.latency.Encode())
          .AddBytes(m.ttfb.Encode());
      value_rows += i == 0 ? "(" : ", (";
      static constexpr const char* kTypes[] = {"bigint", "text",   "text",   "text",
                                               "bigint", "bigint", "bigint", "bigint",
                                               "bigint", "bigint", "bytea",  "bytea"};
      for (int c = 0; c < 12; ++c) {
        value_rows += (c == 0 ? "$" : ", $") + std::to_string(++p) + "::" + kTypes[c];
      }
      value_rows += ")";
    }
    auto written = s.Exec(
        "UPDATE usage_rollup AS u SET backend_name = v.backend_name, requests = v.requests, "
        "errors = v.errors, rate_limited = v.rate_limited, upstream_429 = v.upstream_429, "
        "prompt_tokens = v.prompt_tokens, completion_tokens = v.completion_tokens, "
        "latency_hist = v.latency_hist, ttfb_hist = v.ttfb_hist FROM (VALUES " + value_rows +
            ") AS v (" SWITCHBOARD_PG_ROLLUP_COLUMNS ") "
            "WHERE u.span = $1 AND u.minute = v.minute AND u.backend_id = v.backend_id AND "
            "u.model = v.model",
        values);
    if (!written.ok()) return written.status();
  }
  return Status::Ok();
}

// Rolls up the usage records with from_ms <= time < to_ms into `cells`.
Status RollUpRows(Session& s, int64_t from_ms, int64_t to_ms, RollupCells* cells) {
  auto r = s.Exec("SELECT " SWITCHBOARD_PG_STATS_COLUMNS
                  " FROM usage WHERE time >= $1 AND time < $2 ORDER BY id",
                  Params().Add(from_ms).Add(to_ms));
  if (!r.ok()) return r.status();
  for (int i = 0; i < PQntuples(r->get()); ++i) {
    const UsageRecord u = ReadStatsRecord(Row(r->get(), i));
    const int64_t minute = internal::MinuteOf(u.time);
    internal::UsageRollup& cell = (*cells)[internal::RollupKey{minute, u.backend_id, u.model}];
    if (cell.requests == 0) {
      cell.minute = minute;
      cell.backend_id = u.backend_id;
      cell.model = u.model;
    }
    cell.Add(u);
  }
  return Status::Ok();
}

// Folds minute cells into every span's rollups, finest first (the same
// order in every writer, so row locks are always taken in one order).
Status MergeAllSpans(Session& s, const RollupCells& minute_cells) {
  for (int span : kRollupSpans) {
    SWITCHBOARD_RETURN_IF_ERROR(
        MergeRollups(s, span, span == 1 ? minute_cells : internal::Coarsen(minute_cells, span)));
  }
  return Status::Ok();
}

// Schema v3: builds the rollups of the usage records already stored.
Status BackfillUsageRollups(Session& s) {
  RollupCells cells;
  SWITCHBOARD_RETURN_IF_ERROR(RollUpRows(s, std::numeric_limits<int64_t>::min(),
                                         std::numeric_limits<int64_t>::max(), &cells));
  return MergeAllSpans(s, cells);
}

ClientKey ReadClientKey(const Row& row) {
  ClientKey k;
  k.id = row.Text(0);
  k.name = row.Text(1);
  k.key_hash = row.Text(2);
  k.hint = row.Text(3);
  k.metadata = row.Text(4);
  k.created_at = row.Time(5);
  k.last_used_at = row.OptionalTime(6);
  k.revoked_at = row.OptionalTime(7);
  return k;
}

// --- The store --------------------------------------------------------------------

// A Storage over a pool of libpq connections. Thread-safe: each call leases
// one connection for its whole run.
class PostgresStorage final : public Storage {
 public:
  explicit PostgresStorage(std::unique_ptr<ConnectionPool> pool) : pool_(std::move(pool)) {}

  Status CreateBackend(const Backend& backend) override {
    return Run<Status>("create backend", [&](Session& s) -> Status {
      auto r = s.Exec(kInsertBackend, BackendParams(backend));
      if (r.status().code() == StatusCode::kAlreadyExists) {
        if (r.status().param() == "backends_pkey") {
          return AlreadyExistsError("a backend with id '" + backend.id + "' already exists", "id");
        }
        return AlreadyExistsError("a backend named '" + backend.name + "' already exists", "name");
      }
      return r.status();
    });
  }

  Result<Backend> GetBackend(const std::string& id) override {
    return Run<Result<Backend>>("get backend", [&](Session& s) -> Result<Backend> {
      auto r = s.Exec(std::string(kSelectBackends) + " WHERE id = $1", Params().Add(id));
      if (!r.ok()) return r.status();
      if (PQntuples(r->get()) == 0) return NotFoundError("no backend with id '" + id + "'");
      return ReadBackend(Row(r->get(), 0));
    });
  }

  Result<Backend> GetBackendByName(const std::string& name) override {
    return Run<Result<Backend>>("get backend by name", [&](Session& s) -> Result<Backend> {
      auto r = s.Exec(std::string(kSelectBackends) + " WHERE name = $1", Params().Add(name));
      if (!r.ok()) return r.status();
      if (PQntuples(r->get()) == 0) return NotFoundError("no backend named '" + name + "'");
      return ReadBackend(Row(r->get(), 0));
    });
  }

  Result<std::vector<Backend>> ListBackends(const BackendFilter& filter) override {
    using Out = Result<std::vector<Backend>>;
    return Run<Out>("list backends", [&](Session& s) -> Out {
      auto r = s.Exec(std::string(kSelectBackends) +
                          " WHERE ($1::text IS NULL OR pool = $1::text) AND "
                          "($2::boolean IS NULL OR enabled = $2::boolean) "
                          "ORDER BY name COLLATE \"C\"",
                      Params().Add(filter.pool).Add(filter.enabled));
      if (!r.ok()) return r.status();
      std::vector<Backend> out;
      for (int i = 0; i < PQntuples(r->get()); ++i) {
        auto b = ReadBackend(Row(r->get(), i));
        if (!b.ok()) return b.status();
        out.push_back(std::move(*b));
      }
      return out;
    });
  }

  Status UpdateBackend(const Backend& backend) override {
    return Run<Status>("update backend", [&](Session& s) -> Status {
      auto r = s.Exec(kUpdateBackend, BackendParams(backend));
      if (r.status().code() == StatusCode::kAlreadyExists) {
        return AlreadyExistsError("a backend named '" + backend.name + "' already exists", "name");
      }
      if (!r.ok()) return r.status();
      if (AffectedRows(r->get()) == 0) {
        return NotFoundError("no backend with id '" + backend.id + "'");
      }
      return Status::Ok();
    });
  }

  Status DeleteBackend(const std::string& id) override {
    return Run<Status>("delete backend", [&](Session& s) -> Status {
      auto r = s.Exec("DELETE FROM backends WHERE id = $1", Params().Add(id));
      if (!r.ok()) return r.status();
      if (AffectedRows(r->get()) == 0) return NotFoundError("no backend with id '" + id + "'");
      return Status::Ok();
    });
  }

  Status UpdateBackendStates(const std::vector<BackendState>& states) override {
    if (states.empty()) return Status::Ok();
    return Run<Status>("update backend states", [&](Session& s) -> Status {
      return InTransaction(s, "BEGIN", [&]() -> Status {
        for (const BackendState& state : states) {
          auto r = s.Exec(
              "UPDATE backends SET status = $2, cooldown_until = $3, "
              "consecutive_429_count = $4, consecutive_failures = $5, last_error = $6 "
              "WHERE id = $1",
              Params()
                  .Add(state.backend_id)
                  .Add(BackendStatusName(state.status))
                  .Add(state.cooldown_until)
                  .Add(state.consecutive_429_count)
                  .Add(state.consecutive_failures)
                  .Add(state.last_error));
          if (!r.ok()) return r.status();  // no row for a deleted backend: ignored
        }
        return Status::Ok();
      });
    });
  }

  Status ReplaceApiKeys(const std::vector<ApiKeyUpdate>& updates) override {
    if (updates.empty()) return Status::Ok();
    return Run<Status>("replace api keys", [&](Session& s) -> Status {
      return InTransaction(s, "BEGIN", [&]() -> Status {
        for (const ApiKeyUpdate& u : updates) {
          auto r = s.Exec("UPDATE backends SET api_key_ciphertext = $2 WHERE id = $1",
                          Params().Add(u.backend_id).AddBytes(u.api_key_ciphertext));
          if (!r.ok()) return r.status();
          if (AffectedRows(r->get()) == 0) {
            return NotFoundError("no backend with id '" + u.backend_id + "'");  // rolls back
          }
        }
        return Status::Ok();
      });
    });
  }

  Status AppendCooldownEvents(const std::vector<CooldownEvent>& events) override {
    if (events.empty()) return Status::Ok();
    return Run<Status>("append cooldown events", [&](Session& s) -> Status {
      return InTransaction(s, "BEGIN", [&]() -> Status {
        for (size_t first = 0; first < events.size(); first += kInsertBatch) {
          const size_t n = std::min(kInsertBatch, events.size() - first);
          Params p;
          for (size_t i = first; i < first + n; ++i) {
            const CooldownEvent& e = events[i];
            p.Add(e.backend_id)
                .Add(e.backend_name)
                .Add(e.start)
                .Add(e.until)
                .Add(e.reason)
                .Add(e.upstream_status);
          }
          auto r = s.Exec("INSERT INTO cooldown_events (backend_id, backend_name, start, until, "
                          "reason, upstream_status) VALUES " +
                              Placeholders(n, 6),
                          p);
          if (!r.ok()) return r.status();
        }
        return Status::Ok();
      });
    });
  }

  Result<std::vector<CooldownEvent>> ListCooldownEvents(const CooldownEventQuery& query) override {
    SWITCHBOARD_RETURN_IF_ERROR(CheckLimit(query.limit));
    using Out = Result<std::vector<CooldownEvent>>;
    return Run<Out>("list cooldown events", [&](Session& s) -> Out {
      Params p;
      p.Add(query.limit);
      if (query.backend_id) p.Add(*query.backend_id);
      // Two texts rather than "$2 IS NULL OR ...", so each can use its index.
      auto r = s.Exec(query.backend_id ? "SELECT " SWITCHBOARD_PG_EVENT_COLUMNS
                                         " FROM cooldown_events WHERE backend_id = $2 "
                                         "ORDER BY id DESC LIMIT $1"
                                       : "SELECT " SWITCHBOARD_PG_EVENT_COLUMNS
                                         " FROM cooldown_events ORDER BY id DESC LIMIT $1",
                      p);
      if (!r.ok()) return r.status();
      std::vector<CooldownEvent> out;
      for (int i = 0; i < PQntuples(r->get()); ++i) out.push_back(ReadEvent(Row(r->get(), i)));
      return out;
    });
  }

  Status AppendUsage(const std::vector<UsageRecord>& records) override {
    if (records.empty()) return Status::Ok();
    const RollupCells cells = internal::RollUp(records);  // before leasing: it parses traces
    return Run<Status>("append usage", [&](Session& s) -> Status {
      return InTransaction(s, "BEGIN", [&]() -> Status {
        // One multi-row INSERT per batch: identity values are assigned in
        // VALUES order, so ids increase in the order given.
        for (size_t first = 0; first < records.size(); first += kInsertBatch) {
          const size_t n = std::min(kInsertBatch, records.size() - first);
          Params p;
          for (size_t i = first; i < first + n; ++i) {
            const UsageRecord& u = records[i];
            p.Add(u.request_id)
                .Add(u.time)
                .Add(u.endpoint)
                .Add(u.model)
                .Add(u.backend_id)
                .Add(u.backend_name)
                .Add(u.pool)
                .Add(u.status)
                .Add(u.attempts)
                .Add(u.latency_ms)
                .Add(u.ttfb_ms)
                .Add(u.prompt_tokens)
                .Add(u.completion_tokens)
                .Add(u.stream)
                .Add(u.error)
                .Add(u.trace);
          }
          auto r = s.Exec("INSERT INTO usage (request_id, time, endpoint, model, backend_id, "
                          "backend_name, pool, status, attempts, latency_ms, ttfb_ms, "
                          "prompt_tokens, completion_tokens, stream, error, trace) VALUES " +
                              Placeholders(n, 16),
                          p);
          if (!r.ok()) return r.status();
        }
        return MergeAllSpans(s, cells);
      });
    });
  }

  Result<UsagePage> ListUsage(const UsageQuery& query) override {
    SWITCHBOARD_RETURN_IF_ERROR(CheckLimit(query.limit));
    return Run<Result<UsagePage>>("list usage", [&](Session& s) -> Result<UsagePage> {
      auto r = s.Exec("SELECT " SWITCHBOARD_PG_USAGE_COLUMNS
                      " FROM usage WHERE id < $1 ORDER BY id DESC LIMIT $2",
                      Params()
                          .Add(query.before.value_or(std::numeric_limits<int64_t>::max()))
                          .Add(query.limit + 1));  // one extra row: is there another page?
      if (!r.ok()) return r.status();
      UsagePage page;
      for (int i = 0; i < PQntuples(r->get()); ++i) {
        page.records.push_back(ReadUsage(Row(r->get(), i)));
      }
      if (static_cast<int>(page.records.size()) > query.limit) {
        page.records.pop_back();
        page.next_before = page.records.back().id;
      }
      return page;
    });
  }

  Result<UsageStats> QueryUsageStats(const StatsQuery& query) override {
    if (query.bucket_seconds < 1) {
      return InvalidArgumentError("bucket_seconds must be >= 1", "bucket_seconds");
    }
    const std::vector<internal::StatsSegment> plan =
        internal::PlanTieredStats(query, {std::begin(kRollupSpans), std::end(kRollupSpans)});
    return Run<Result<UsageStats>>("query usage stats", [&](Session& s) -> Result<UsageStats> {
      internal::UsageStatsBuilder builder(query.bucket_seconds);
      // One snapshot for every segment. The coarsest slots that fit, finer
      // ones towards the edges, and the records themselves for the partial
      // minutes at either end.
      const Status read = InTransaction(s, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
                                        [&]() -> Status {
        for (const internal::StatsSegment& segment : plan) {
          if (segment.span_minutes == 0) {
            auto r = s.Exec("SELECT " SWITCHBOARD_PG_STATS_COLUMNS
                            " FROM usage WHERE time >= $1 AND time < $2",
                            Params().Add(segment.from).Add(segment.to));
            if (!r.ok()) return r.status();
            for (int i = 0; i < PQntuples(r->get()); ++i) {
              builder.Add(ReadStatsRecord(Row(r->get(), i)));
            }
            continue;
          }
          auto r = s.Exec("SELECT " SWITCHBOARD_PG_ROLLUP_COLUMNS
                          " FROM usage_rollup WHERE span = $3 AND minute >= $1 AND minute < $2",
                          Params()
                              .Add(segment.first_minute)
                              .Add(segment.end_minute)
                              .Add(segment.span_minutes));
          if (!r.ok()) return r.status();
          for (int i = 0; i < PQntuples(r->get()); ++i) {
            auto rollup = ReadRollup(Row(r->get(), i));
            if (!rollup.ok()) return rollup.status();
            builder.Add(*rollup);
          }
        }
        return Status::Ok();
      });
      if (!read.ok()) return read;
      return builder.Build();
    });
  }

  Result<int64_t> DeleteUsageBefore(SystemTime cutoff) override {
    return Run<Result<int64_t>>("delete usage", [&](Session& s) -> Result<int64_t> {
      int64_t deleted = 0;
      const Status status = InTransaction(s, "BEGIN", [&]() -> Status {
        auto r = s.Exec("DELETE FROM usage WHERE time < $1", Params().Add(cutoff));
        if (!r.ok()) return r.status();
        deleted = AffectedRows(r->get());
        // Rollup slots wholly before the cutoff go; a slot holding the
        // cutoff is rebuilt from the records that remain in it.
        const int64_t cutoff_ms = ToUnixMillis(cutoff);
        const int64_t cut_minute = internal::MinuteOf(cutoff);
        RollupCells rest;  // minute cells of the records left in the widest slot
        bool rest_read = false;
        for (int span : kRollupSpans) {
          const int64_t slot = internal::SlotStart(cut_minute, span);
          const bool partial = cutoff_ms != slot * 60000;
          auto dropped = s.Exec("DELETE FROM usage_rollup WHERE span = $1 AND minute < $2",
                                Params().Add(span).Add(partial ? slot + span : slot));
          if (!dropped.ok()) return dropped.status();
          if (!partial) continue;
          if (!rest_read) {  // the widest span's slot holds every smaller one's
            const int widest = kRollupSpans[std::size(kRollupSpans) - 1];
            const int64_t from = internal::SlotStart(cut_minute, widest);
            SWITCHBOARD_RETURN_IF_ERROR(RollUpRows(s, from * 60000, (from + widest) * 60000, &rest));
            rest_read = true;
          }
          RollupCells in_slot;
          for (const auto& [key, cell] : rest) {
            if (internal::SlotStart(cell.minute, span) == slot) in_slot.emplace(key, cell);
          }
          SWITCHBOARD_RETURN_IF_ERROR(
              MergeRollups(s, span, span == 1 ? in_slot : internal::Coarsen(in_slot, span)));
        }
        return Status::Ok();
      });
      if (!status.ok()) return status;
      return deleted;
    });
  }

  Status CreateClientKey(const ClientKey& key) override {
    return Run<Status>("create client key", [&](Session& s) -> Status {
      auto r = s.Exec(
          "INSERT INTO client_keys (id, name, key_hash, hint, metadata, created_at, "
          "last_used_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
          Params()
              .Add(key.id)
              .Add(key.name)
              .Add(key.key_hash)
              .Add(key.hint)
              .Add(key.metadata)
              .Add(key.created_at)
              .Add(key.last_used_at)
              .Add(key.revoked_at));
      if (r.status().code() == StatusCode::kAlreadyExists) {
        const std::string& constraint = r.status().param();
        if (constraint == "client_keys_pkey") {
          return AlreadyExistsError("a client key with id '" + key.id + "' already exists", "id");
        }
        if (constraint == "client_keys_key_hash_key") {
          return AlreadyExistsError("this client key is already stored", "key");
        }
        return AlreadyExistsError("a client key named '" + key.name + "' already exists", "name");
      }
      return r.status();
    });
  }

  Result<std::vector<ClientKey>> ListClientKeys() override {
    using Out = Result<std::vector<ClientKey>>;
    return Run<Out>("list client keys", [&](Session& s) -> Out {
      auto r = s.Exec(
          "SELECT id, name, key_hash, hint, metadata, created_at, last_used_at, revoked_at "
          "FROM client_keys ORDER BY created_at, id COLLATE \"C\"");
      if (!r.ok()) return r.status();
      std::vector<ClientKey> out;
      for (int i = 0; i < PQntuples(r->get()); ++i) out.push_back(ReadClientKey(Row(r->get(), i)));
      return out;
    });
  }

  Status RevokeClientKey(const std::string& id, SystemTime when) override {
    return Run<Status>("revoke client key", [&](Session& s) -> Status {
      auto r = s.Exec(
          "UPDATE client_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1",
          Params().Add(id).Add(when));
      if (!r.ok()) return r.status();
      if (AffectedRows(r->get()) == 0) return NotFoundError("no client key with id '" + id + "'");
      return Status::Ok();
    });
  }

  Status TouchClientKeys(const std::vector<ClientKeyUse>& uses) override {
    if (uses.empty()) return Status::Ok();
    return Run<Status>("touch client keys", [&](Session& s) -> Status {
      return InTransaction(s, "BEGIN", [&]() -> Status {
        for (const ClientKeyUse& use : uses) {
          auto r = s.Exec(
              "UPDATE client_keys SET last_used_at = $2 WHERE id = $1 AND "
              "(last_used_at IS NULL OR last_used_at < $2)",
              Params().Add(use.key_id).Add(use.used_at));
          if (!r.ok()) return r.status();
        }
        return Status::Ok();
      });
    });
  }

  Result<Config> GetConfig() override {
    return Run<Result<Config>>("get config", [&](Session& s) -> Result<Config> {
      auto r = s.Exec("SELECT json FROM config WHERE id = 1");
      if (!r.ok()) return r.status();
      if (PQntuples(r->get()) == 0) return Config{};
      return internal::StoredConfigFromJson(Row(r->get(), 0).Text(0));
    });
  }

  Status PutConfig(const Config& config) override {
    if (auto errors = ValidateConfig(config); !errors.empty()) {
      return InvalidArgumentError(errors.front().message, errors.front().param);
    }
    return Run<Status>("put config", [&](Session& s) -> Status {
      auto r = s.Exec(
          "INSERT INTO config (id, json) VALUES (1, $1) "
          "ON CONFLICT (id) DO UPDATE SET json = excluded.json",
          Params().Add(ConfigToJson(config)));
      return r.status();
    });
  }

 private:
  // Runs `body` on a leased connection. If the connection turns out broken
  // before COMMIT was sent, nothing was written: retry on a new one. A
  // deadlock or serialization conflict rolled everything back: run it again.
  template <typename R, typename F>
  R Run(std::string_view what, F&& body) {
    constexpr int kAttempts = 3;
    for (int attempt = 1;; ++attempt) {
      auto lease = pool_->Acquire(what);
      if (!lease.ok()) return lease.status();
      Session& session = (*lease)->session();
      R result = body(session);
      if (!StatusOf(result).ok() && (session.broken() || session.conflicted()) &&
          !session.commit_sent() && attempt < kAttempts) {
        continue;  // a broken lease drops its connection and the idle ones
      }
      return result;
    }
  }

  // BEGIN (`begin`), body, COMMIT; ROLLBACK when the body fails.
  template <typename F>
  static Status InTransaction(Session& s, const char* begin, F&& body) {
    SWITCHBOARD_RETURN_IF_ERROR(s.Begin(begin));
    Status status = body();
    if (!status.ok()) {
      s.Rollback();
      return status;
    }
    return s.Commit();
  }

  std::unique_ptr<ConnectionPool> pool_;
};

Status NewerSchemaError(int found) {
  return FailedPreconditionError("postgres: database schema version " + std::to_string(found) +
                                 " is newer than this build supports (" +
                                 std::to_string(kLatestSchemaVersion) + ")");
}

// Creates the schema and applies the missing steps in one transaction under
// an advisory lock: instances starting together wait for each other, and the
// second finds the work done.
Status Migrate(Session& s, const std::string& quoted_schema) {
  SWITCHBOARD_RETURN_IF_ERROR(s.Begin());
  auto step = [&]() -> Status {
    auto lock = s.Exec("SELECT pg_advisory_xact_lock($1)", Params().Add(kMigrationLockKey));
    if (!lock.ok()) return lock.status();
    if (!quoted_schema.empty()) {
      // An identifier cannot be a parameter; it is quoted by PQescapeIdentifier().
      SWITCHBOARD_RETURN_IF_ERROR(
          s.ExecScript(("CREATE SCHEMA IF NOT EXISTS " + quoted_schema).c_str()));
    }
    SWITCHBOARD_RETURN_IF_ERROR(
        s.ExecScript("CREATE TABLE IF NOT EXISTS schema_version ("
                     "version integer PRIMARY KEY, applied_at bigint NOT NULL)"));
    auto current = s.Exec("SELECT COALESCE(MAX(version), 0) FROM schema_version");
    if (!current.ok()) return current.status();
    const int version = Row(current->get(), 0).Int(0);
    if (version > kLatestSchemaVersion) return NewerSchemaError(version);
    for (const Migration& m : kMigrations) {
      if (m.version <= version) continue;
      SWITCHBOARD_RETURN_IF_ERROR(s.ExecScript(m.sql));
      if (m.then != nullptr) SWITCHBOARD_RETURN_IF_ERROR(m.then(s));
      auto done = s.Exec(
          "INSERT INTO schema_version (version, applied_at) "
          "VALUES ($1, (extract(epoch FROM clock_timestamp()) * 1000)::bigint)",
          Params().Add(m.version));
      if (!done.ok()) return done.status();
    }
    return Status::Ok();
  }();
  if (!step.ok()) {
    s.Rollback();
    return step;
  }
  return s.Commit();
}

// The password in `conninfo` (URI or key/value form), to keep it out of messages.
std::string PasswordOf(const std::string& conninfo) {
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(conninfo.c_str(), &error);
  if (error != nullptr) PQfreemem(error);
  std::string password;
  if (options == nullptr) return password;
  for (PQconninfoOption* o = options; o->keyword != nullptr; ++o) {
    if (std::strcmp(o->keyword, "password") == 0 && o->val != nullptr) password = o->val;
  }
  PQconninfoFree(options);
  return password;
}

}  // namespace

int PostgresSchemaVersion() { return kLatestSchemaVersion; }

bool PostgresStorageSupported() { return true; }

Result<std::unique_ptr<Storage>> OpenPostgresStorage(const PostgresStorageOptions& options) {
  if (options.url.empty()) {
    return InvalidArgumentError("postgres: the connection url must not be empty", "url");
  }
  {
    char* error = nullptr;
    PQconninfoOption* parsed = PQconninfoParse(options.url.c_str(), &error);
    if (parsed == nullptr) {
      std::string message = error != nullptr ? TrimNewlines(error) : "out of memory";
      if (error != nullptr) PQfreemem(error);
      return InvalidArgumentError(
          "postgres: invalid connection url: " + Scrub(message, PasswordOf(options.url)), "url");
    }
    PQconninfoFree(parsed);
  }
  const std::string secret = PasswordOf(options.url);
  std::string quoted_schema;
  if (!options.schema.empty()) {
    // An identifier cannot be a parameter: quote it as PQescapeIdentifier()
    // does (double quotes, inner ones doubled).
    if (options.schema.find('\0') != std::string::npos || options.schema.size() > 63) {
      return InvalidArgumentError("postgres: invalid schema name", "schema");
    }
    quoted_schema = "\"";
    for (char c : options.schema) {
      if (c == '"') quoted_schema += '"';
      quoted_schema += c;
    }
    quoted_schema += '"';
  }
  auto pool = std::make_unique<ConnectionPool>(options.url, quoted_schema, secret,
                                               options.max_connections,
                                               options.connect_timeout_seconds);
  {
    // Migrate on a connection whose search_path may name a schema that does
    // not exist yet: set_config() accepts that, and CREATE SCHEMA makes it real.
    auto lease = pool->Acquire("open");
    if (!lease.ok()) return lease.status();
    Session& s = (*lease)->session();
    s.set_what("migrate");
    SWITCHBOARD_RETURN_IF_ERROR(Migrate(s, quoted_schema));
  }
  return std::unique_ptr<Storage>(std::make_unique<PostgresStorage>(std::move(pool)));
}

}  // namespace switchboard

#undef SWITCHBOARD_PG_BACKEND_COLUMNS
#undef SWITCHBOARD_PG_EVENT_COLUMNS
#undef SWITCHBOARD_PG_USAGE_COLUMNS
#undef SWITCHBOARD_PG_ROLLUP_COLUMNS
#undef SWITCHBOARD_PG_STATS_COLUMNS
