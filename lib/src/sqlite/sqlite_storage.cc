// SqliteStorage: the Storage behind a real deployment. One SQLite connection
// (SQLiteCpp) under a mutex, WAL mode, versioned schema.
//
// Why the choices below:
// - synchronous=FULL: in WAL mode NORMAL already survives a process kill, but a
//   power loss may drop the last commits. Backend CRUD answers the admin with
//   "created"; that promise should hold across a power cut, and the write rate
//   (admin edits, batched usage) is far too low for the extra fsync to matter.
// - Every write, single statements included, runs in BEGIN IMMEDIATE: a second
//   process holding the write lock makes us wait busy_timeout_ms up front
//   (then kUnavailable), instead of failing on a read-to-write upgrade with
//   SQLITE_BUSY_SNAPSHOT, which the busy handler does not retry.
// - Times are integer Unix milliseconds: sortable, indexable, and the
//   resolution every consumer (RFC 3339 on the wire, charts) needs.
// - Enums are stored by name, so the database reads well in the sqlite3 shell
//   and does not depend on enumerator order.
// - Usage statistics read per-minute rollups (usage_rollup), written with the
//   records in the same transaction; only the partial minutes at a window's
//   edges read raw rows. Percentiles come from the rollups' log-scale
//   histograms (stats_util.h), so a day's stats read ~1,440 x groups rows.
#include <SQLiteCpp/SQLiteCpp.h>
#include <sqlite3.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iterator>
#include <limits>
#include <map>
#include <stdexcept>
#include <memory>
#include <mutex>
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
#include "switchboard/storage.h"

namespace switchboard {
namespace {

constexpr int kMaxPageLimit = 1000;

// One step of the schema history. Steps run in order, each in its own
// transaction, and leave PRAGMA user_version at `version`. Never edit a
// released step: append a new one.
struct Migration {
  int version;
  const char* sql;
  // Runs after `sql` in the same transaction, for what SQL alone cannot do.
  // May throw (SQLite::Exception, std::exception).
  void (*then)(SQLite::Database& db) = nullptr;
};

void BackfillUsageRollups(SQLite::Database& db);

constexpr Migration kMigrations[] = {
    {1, R"sql(
CREATE TABLE backends (
  id                    TEXT PRIMARY KEY NOT NULL,
  name                  TEXT NOT NULL UNIQUE,
  label                 TEXT NOT NULL,
  api_base_url          TEXT NOT NULL,
  api                   TEXT NOT NULL,
  timeout_seconds       INTEGER NOT NULL,
  rpm_limit             INTEGER NOT NULL,
  tpm_limit             INTEGER NOT NULL,
  max_concurrency       INTEGER NOT NULL,
  pool                  TEXT NOT NULL,
  enabled               INTEGER NOT NULL,
  model_mappings        TEXT NOT NULL,   -- JSON object
  source                TEXT NOT NULL,
  metadata              TEXT NOT NULL,   -- JSON object
  created_at            INTEGER NOT NULL,  -- Unix ms
  updated_at            INTEGER NOT NULL,  -- Unix ms
  api_key_ciphertext    TEXT NOT NULL,   -- never plaintext
  api_key_hint          TEXT NOT NULL,
  -- Routing state, written by UpdateBackendStates().
  status                TEXT NOT NULL,
  cooldown_until        INTEGER,         -- Unix ms, NULL when none
  consecutive_429_count INTEGER NOT NULL,
  consecutive_failures  INTEGER NOT NULL,
  last_error            TEXT NOT NULL
);

CREATE TABLE cooldown_events (
  id              INTEGER PRIMARY KEY AUTOINCREMENT,
  backend_id      TEXT NOT NULL,
  backend_name    TEXT NOT NULL,
  start           INTEGER NOT NULL,  -- Unix ms
  until           INTEGER NOT NULL,  -- Unix ms
  reason          TEXT NOT NULL,
  upstream_status INTEGER NOT NULL
);
CREATE INDEX cooldown_events_backend ON cooldown_events (backend_id, id);

CREATE TABLE usage (
  id                INTEGER PRIMARY KEY AUTOINCREMENT,
  request_id        TEXT NOT NULL,
  time              INTEGER NOT NULL,  -- Unix ms
  endpoint          TEXT NOT NULL,
  model             TEXT NOT NULL,
  backend_id        TEXT NOT NULL,
  backend_name      TEXT NOT NULL,
  pool              TEXT NOT NULL,
  status            INTEGER NOT NULL,
  attempts          INTEGER NOT NULL,
  latency_ms        INTEGER NOT NULL,
  ttfb_ms           INTEGER NOT NULL,
  prompt_tokens     INTEGER NOT NULL,
  completion_tokens INTEGER NOT NULL,
  stream            INTEGER NOT NULL,
  error             TEXT NOT NULL,
  trace             TEXT NOT NULL      -- JSON array
);
CREATE INDEX usage_time ON usage (time);
CREATE INDEX usage_backend_time ON usage (backend_id, time);
CREATE INDEX usage_model_time ON usage (model, time);

-- The gateway config as one JSON document; at most one row.
CREATE TABLE config (
  id   INTEGER PRIMARY KEY CHECK (id = 1),
  json TEXT NOT NULL
);
)sql"},
    {2, R"sql(
-- Usage rolled up per slot of `span` minutes (1, 5 and 60), backend and
-- model, maintained by AppendUsage() in the same transaction as the records,
-- so stats read these instead of the records.
CREATE TABLE usage_rollup (
  span              INTEGER NOT NULL,  -- minutes per slot
  minute            INTEGER NOT NULL,  -- first minute of the slot (Unix seconds / 60)
  backend_id        TEXT NOT NULL,
  model             TEXT NOT NULL,
  backend_name      TEXT NOT NULL,     -- of the newest record folded in
  requests          INTEGER NOT NULL,
  errors            INTEGER NOT NULL,
  rate_limited      INTEGER NOT NULL,
  upstream_429      INTEGER NOT NULL,
  prompt_tokens     INTEGER NOT NULL,
  completion_tokens INTEGER NOT NULL,
  latency_hist      BLOB NOT NULL,     -- log-scale histogram, see stats_util.h
  ttfb_hist         BLOB NOT NULL,
  PRIMARY KEY (span, minute, backend_id, model)
) WITHOUT ROWID;

-- Client keys: only the SHA-256 of a key is kept.
CREATE TABLE client_keys (
  id           TEXT PRIMARY KEY NOT NULL,
  name         TEXT NOT NULL,
  key_hash     TEXT NOT NULL UNIQUE,   -- lowercase hex SHA-256
  hint         TEXT NOT NULL,
  metadata     TEXT NOT NULL,          -- JSON object
  created_at   INTEGER NOT NULL,       -- Unix ms
  last_used_at INTEGER,                -- Unix ms, NULL when never
  revoked_at   INTEGER                 -- Unix ms, NULL while valid
);
CREATE UNIQUE INDEX client_keys_live_name ON client_keys (name) WHERE revoked_at IS NULL;
)sql",
     BackfillUsageRollups},
};

constexpr int kLatestSchemaVersion = kMigrations[std::size(kMigrations) - 1].version;

// Column lists shared by the INSERTs and SELECTs below, in Read*() order.
#define SWITCHBOARD_SQLITE_BACKEND_COLUMNS                                                     \
  "id, name, label, api_base_url, api, timeout_seconds, rpm_limit, tpm_limit, "                \
  "max_concurrency, pool, enabled, model_mappings, source, metadata, created_at, updated_at, " \
  "api_key_ciphertext, api_key_hint, status, cooldown_until, consecutive_429_count, "          \
  "consecutive_failures, last_error"
#define SWITCHBOARD_SQLITE_EVENT_COLUMNS \
  "id, backend_id, backend_name, start, until, reason, upstream_status"
#define SWITCHBOARD_SQLITE_USAGE_COLUMNS                                            \
  "id, request_id, time, endpoint, model, backend_id, backend_name, pool, status, " \
  "attempts, latency_ms, ttfb_ms, prompt_tokens, completion_tokens, stream, error, trace"

constexpr const char* kSelectBackends =
    "SELECT " SWITCHBOARD_SQLITE_BACKEND_COLUMNS " FROM backends";
constexpr const char* kInsertBackend =
    "INSERT INTO backends (" SWITCHBOARD_SQLITE_BACKEND_COLUMNS
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, "
    "?19, ?20, ?21, ?22, ?23)";
constexpr const char* kUpdateBackend =
    "UPDATE backends SET name = ?2, label = ?3, api_base_url = ?4, api = ?5, "
    "timeout_seconds = ?6, rpm_limit = ?7, tpm_limit = ?8, max_concurrency = ?9, pool = ?10, "
    "enabled = ?11, model_mappings = ?12, source = ?13, metadata = ?14, created_at = ?15, "
    "updated_at = ?16, api_key_ciphertext = ?17, api_key_hint = ?18, status = ?19, "
    "cooldown_until = ?20, consecutive_429_count = ?21, consecutive_failures = ?22, "
    "last_error = ?23 WHERE id = ?1";
constexpr const char* kInsertEvent =
    "INSERT INTO cooldown_events (backend_id, backend_name, start, until, reason, "
    "upstream_status) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
constexpr const char* kInsertUsage =
    "INSERT INTO usage (request_id, time, endpoint, model, backend_id, backend_name, pool, "
    "status, attempts, latency_ms, ttfb_ms, prompt_tokens, completion_tokens, stream, error, "
    "trace) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)";

Status CheckLimit(int limit) {
  if (limit < 1 || limit > kMaxPageLimit) {
    return InvalidArgumentError("limit must be between 1 and 1000", "limit");
  }
  return Status::Ok();
}

// Maps a SQLite failure to a Status: conditions that may clear up (locks, a
// full disk, I/O) are kUnavailable, everything else kInternal.
Status StatusFromSqlite(std::string_view what, const SQLite::Exception& e) {
  std::string message = "sqlite: " + std::string(what) + ": " + e.what();
  switch (e.getErrorCode() & 0xff) {  // primary code, whether or not extended codes are on
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_FULL:
    case SQLITE_CANTOPEN:
    case SQLITE_IOERR:
      return UnavailableError(std::move(message));
    default:
      return InternalError(std::move(message));
  }
}

// --- JSON columns ---------------------------------------------------------

// --- Rows -----------------------------------------------------------------

// Binds `b` to kInsertBackend / kUpdateBackend parameters ?1..?23.
void BindBackend(SQLite::Statement& s, const Backend& b) {
  s.bind(1, b.id);
  s.bind(2, b.name);
  s.bind(3, b.label);
  s.bind(4, b.api_base_url);
  s.bind(5, std::string(ApiName(b.api)));
  s.bind(6, b.timeout_seconds);
  s.bind(7, b.rpm_limit);
  s.bind(8, b.tpm_limit);
  s.bind(9, b.max_concurrency);
  s.bind(10, b.pool);
  s.bind(11, static_cast<int>(b.enabled));
  s.bind(12, internal::MappingsToJson(b.model_mappings));
  s.bind(13, std::string(BackendSourceName(b.source)));
  s.bind(14, b.metadata);
  s.bind(15, ToUnixMillis(b.created_at));
  s.bind(16, ToUnixMillis(b.updated_at));
  s.bind(17, b.api_key_ciphertext);
  s.bind(18, b.api_key_hint);
  s.bind(19, std::string(BackendStatusName(b.status)));
  if (b.cooldown_until) {
    s.bind(20, ToUnixMillis(*b.cooldown_until));
  } else {
    s.bind(20);  // NULL
  }
  s.bind(21, b.consecutive_429_count);
  s.bind(22, b.consecutive_failures);
  s.bind(23, b.last_error);
}

// Reads the current row of a "SELECT SWITCHBOARD_SQLITE_BACKEND_COLUMNS" statement.
Result<Backend> ReadBackend(const SQLite::Statement& s) {
  Backend b;
  b.id = s.getColumn(0).getString();
  b.name = s.getColumn(1).getString();
  b.label = s.getColumn(2).getString();
  b.api_base_url = s.getColumn(3).getString();
  auto api = ParseApi(s.getColumn(4).getString());
  if (!api) return InternalError("backend '" + b.id + "' has an unknown api in the database");
  b.api = *api;
  b.timeout_seconds = s.getColumn(5).getInt();
  b.rpm_limit = s.getColumn(6).getInt64();
  b.tpm_limit = s.getColumn(7).getInt64();
  b.max_concurrency = s.getColumn(8).getInt64();
  b.pool = s.getColumn(9).getString();
  b.enabled = s.getColumn(10).getInt() != 0;
  auto mappings = internal::MappingsFromJson(s.getColumn(11).getString());
  if (!mappings.ok()) {
    return InternalError("backend '" + b.id + "': " + mappings.status().message());
  }
  b.model_mappings = std::move(*mappings);
  auto source = ParseBackendSource(s.getColumn(12).getString());
  if (!source) return InternalError("backend '" + b.id + "' has an unknown source in the database");
  b.source = *source;
  b.metadata = s.getColumn(13).getString();
  b.created_at = FromUnixMillis(s.getColumn(14).getInt64());
  b.updated_at = FromUnixMillis(s.getColumn(15).getInt64());
  b.api_key_ciphertext = s.getColumn(16).getString();
  b.api_key_hint = s.getColumn(17).getString();
  auto status = ParseBackendStatus(s.getColumn(18).getString());
  if (!status) return InternalError("backend '" + b.id + "' has an unknown status in the database");
  b.status = *status;
  if (!s.getColumn(19).isNull()) b.cooldown_until = FromUnixMillis(s.getColumn(19).getInt64());
  b.consecutive_429_count = s.getColumn(20).getInt();
  b.consecutive_failures = s.getColumn(21).getInt();
  b.last_error = s.getColumn(22).getString();
  return b;
}

CooldownEvent ReadEvent(const SQLite::Statement& s) {
  CooldownEvent e;
  e.id = s.getColumn(0).getInt64();
  e.backend_id = s.getColumn(1).getString();
  e.backend_name = s.getColumn(2).getString();
  e.start = FromUnixMillis(s.getColumn(3).getInt64());
  e.until = FromUnixMillis(s.getColumn(4).getInt64());
  e.reason = s.getColumn(5).getString();
  e.upstream_status = s.getColumn(6).getInt();
  return e;
}

UsageRecord ReadUsage(const SQLite::Statement& s) {
  UsageRecord r;
  r.id = s.getColumn(0).getInt64();
  r.request_id = s.getColumn(1).getString();
  r.time = FromUnixMillis(s.getColumn(2).getInt64());
  r.endpoint = s.getColumn(3).getString();
  r.model = s.getColumn(4).getString();
  r.backend_id = s.getColumn(5).getString();
  r.backend_name = s.getColumn(6).getString();
  r.pool = s.getColumn(7).getString();
  r.status = s.getColumn(8).getInt();
  r.attempts = s.getColumn(9).getInt();
  r.latency_ms = s.getColumn(10).getInt64();
  r.ttfb_ms = s.getColumn(11).getInt64();
  r.prompt_tokens = s.getColumn(12).getInt64();
  r.completion_tokens = s.getColumn(13).getInt64();
  r.stream = s.getColumn(14).getInt() != 0;
  r.error = s.getColumn(15).getString();
  r.trace = s.getColumn(16).getString();
  return r;
}

// --- Statistics -----------------------------------------------------------

#define SWITCHBOARD_SQLITE_ROLLUP_COLUMNS                                                  \
  "minute, backend_id, model, backend_name, requests, errors, rate_limited, upstream_429, " \
  "prompt_tokens, completion_tokens, latency_hist, ttfb_hist"

// The columns a usage record contributes to statistics, in ReadStatsRecord() order.
#define SWITCHBOARD_SQLITE_STATS_COLUMNS                                                  \
  "time, backend_id, backend_name, model, status, latency_ms, ttfb_ms, prompt_tokens, " \
  "completion_tokens, trace"

UsageRecord ReadStatsRecord(const SQLite::Statement& s) {
  UsageRecord r;
  r.time = FromUnixMillis(s.getColumn(0).getInt64());
  r.backend_id = s.getColumn(1).getString();
  r.backend_name = s.getColumn(2).getString();
  r.model = s.getColumn(3).getString();
  r.status = s.getColumn(4).getInt();
  r.latency_ms = s.getColumn(5).getInt64();
  r.ttfb_ms = s.getColumn(6).getInt64();
  r.prompt_tokens = s.getColumn(7).getInt64();
  r.completion_tokens = s.getColumn(8).getInt64();
  r.trace = s.getColumn(9).getString();
  return r;
}

// A prepared statement on the C API, for the rollup reads: SQLite::Column
// copies a shared pointer per column, and a stats query reads ~30,000 rows.
// Throws SQLite::Exception like SQLiteCpp does.
class RawStatement {
 public:
  RawStatement(SQLite::Database& db, const char* sql) : db_(db.getHandle()) {
    Check(sqlite3_prepare_v2(db_, sql, -1, &stmt_, nullptr));
  }
  ~RawStatement() { sqlite3_finalize(stmt_); }
  RawStatement(const RawStatement&) = delete;
  RawStatement& operator=(const RawStatement&) = delete;

  void Bind(int index, int64_t value) { Check(sqlite3_bind_int64(stmt_, index, value)); }
  void Bind(int index, const std::string& value) {
    Check(sqlite3_bind_text(stmt_, index, value.data(), static_cast<int>(value.size()),
                            SQLITE_TRANSIENT));
  }
  // True for a row, false when done.
  bool Step() {
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc != SQLITE_DONE) Check(rc);
    return false;
  }
  void Reset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
  sqlite3_stmt* get() const { return stmt_; }

 private:
  void Check(int rc) {
    if (rc != SQLITE_OK) throw SQLite::Exception(db_, rc);
  }
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
};

// Reads the current row of a "SELECT SWITCHBOARD_SQLITE_ROLLUP_COLUMNS"
// statement into `r`, reusing its storage. Throws std::runtime_error for a
// histogram that does not decode.
void ReadRollupInto(const RawStatement& s, internal::UsageRollup& r) {
  sqlite3_stmt* st = s.get();
  auto text = [st](int column, std::string& out) {
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(st, column));
    out.assign(p != nullptr ? p : "", static_cast<size_t>(sqlite3_column_bytes(st, column)));
  };
  auto blob = [st](int column) {
    const void* p = sqlite3_column_blob(st, column);
    const int n = sqlite3_column_bytes(st, column);
    return p != nullptr ? std::string_view(static_cast<const char*>(p), static_cast<size_t>(n))
                        : std::string_view();
  };
  r.minute = sqlite3_column_int64(st, 0);
  text(1, r.backend_id);
  text(2, r.model);
  text(3, r.backend_name);
  r.requests = sqlite3_column_int64(st, 4);
  r.errors = sqlite3_column_int64(st, 5);
  r.rate_limited = sqlite3_column_int64(st, 6);
  r.upstream_429 = sqlite3_column_int64(st, 7);
  r.prompt_tokens = sqlite3_column_int64(st, 8);
  r.completion_tokens = sqlite3_column_int64(st, 9);
  if (!r.latency.Decode(blob(10)) || !r.ttfb.Decode(blob(11))) {
    throw std::runtime_error("usage_rollup row for minute " + std::to_string(r.minute) +
                             " has a malformed histogram");
  }
}

// The slot widths, in minutes, usage_rollup keeps. A day's stats (5-minute
// buckets) read 288 slots per backend and model instead of 1,440.
constexpr int kRollupSpans[] = {1, 5, 60};

using RollupCells = std::map<internal::RollupKey, internal::UsageRollup>;

// Folds `cells` (slots of `span` minutes) into the usage_rollup table (read,
// merge, write back). REQUIRES: inside a write transaction.
void MergeRollups(SQLite::Database& db, int span, const RollupCells& cells) {
  if (cells.empty()) return;
  RawStatement select(db, "SELECT " SWITCHBOARD_SQLITE_ROLLUP_COLUMNS
                         " FROM usage_rollup WHERE span = ?4 AND minute = ?1 AND "
                         "backend_id = ?2 AND model = ?3");
  SQLite::Statement write(db, "INSERT OR REPLACE INTO usage_rollup (span, " SWITCHBOARD_SQLITE_ROLLUP_COLUMNS
                              ") VALUES (?13, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)");
  for (const auto& [key, cell] : cells) {
    select.Reset();
    select.Bind(1, cell.minute);
    select.Bind(2, cell.backend_id);
    select.Bind(3, cell.model);
    select.Bind(4, span);
    internal::UsageRollup merged;
    if (select.Step()) {
      ReadRollupInto(select, merged);
      merged.Merge(cell);
    } else {
      merged = cell;
    }
    write.reset();
    write.bind(1, merged.minute);
    write.bind(2, merged.backend_id);
    write.bind(3, merged.model);
    write.bind(4, merged.backend_name);
    write.bind(5, merged.requests);
    write.bind(6, merged.errors);
    write.bind(7, merged.rate_limited);
    write.bind(8, merged.upstream_429);
    write.bind(9, merged.prompt_tokens);
    write.bind(10, merged.completion_tokens);
    const std::string latency = merged.latency.Encode();
    const std::string ttfb = merged.ttfb.Encode();
    write.bind(11, latency.data(), static_cast<int>(latency.size()));
    write.bind(12, ttfb.data(), static_cast<int>(ttfb.size()));
    write.bind(13, span);
    write.exec();
  }
}

// Rolls up the usage records with from_ms <= time < to_ms into `cells`.
void RollUpRows(SQLite::Database& db, int64_t from_ms, int64_t to_ms,
                std::map<internal::RollupKey, internal::UsageRollup>* cells) {
  SQLite::Statement s(db, "SELECT " SWITCHBOARD_SQLITE_STATS_COLUMNS
                          " FROM usage WHERE time >= ?1 AND time < ?2 ORDER BY id");
  s.bind(1, from_ms);
  s.bind(2, to_ms);
  while (s.executeStep()) {
    const UsageRecord r = ReadStatsRecord(s);
    const int64_t minute = internal::MinuteOf(r.time);
    internal::UsageRollup& cell = (*cells)[internal::RollupKey{minute, r.backend_id, r.model}];
    if (cell.requests == 0) {
      cell.minute = minute;
      cell.backend_id = r.backend_id;
      cell.model = r.model;
    }
    cell.Add(r);
  }
}

// Folds minute cells into every span's rollups.
void MergeAllSpans(SQLite::Database& db, const RollupCells& minute_cells) {
  for (int span : kRollupSpans) {
    MergeRollups(db, span, span == 1 ? minute_cells : internal::Coarsen(minute_cells, span));
  }
}

// Schema v2: builds the rollups of the usage records already stored.
void BackfillUsageRollups(SQLite::Database& db) {
  RollupCells cells;
  RollUpRows(db, std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max(),
             &cells);
  MergeAllSpans(db, cells);
}

// --- The store --------------------------------------------------------------

// A Storage over one SQLite connection. Thread-safe: every method takes mu_
// for its whole run, since SQLiteCpp objects are single-threaded.
class SqliteStorage final : public Storage {
 public:
  // REQUIRES: `db` is open and migrated to kLatestSchemaVersion.
  // `background` (may be null: then `db` serves both) is a second connection
  // to the same file for the batched writes of the StorageWriter.
  SqliteStorage(std::unique_ptr<SQLite::Database> db, std::unique_ptr<SQLite::Database> background)
      : db_(std::move(db)),
        bg_owned_(std::move(background)),
        bg_(bg_owned_ ? bg_owned_.get() : db_.get()),
        bg_mu_(bg_owned_ ? &own_bg_mu_ : &mu_),
        insert_event_(*bg_, kInsertEvent),
        insert_usage_(*bg_, kInsertUsage) {}

  Status CreateBackend(const Backend& backend) override {
    return Run<Status>("create backend", [&]() -> Status {
      SQLite::Transaction txn(*db_, SQLite::TransactionBehavior::IMMEDIATE);
      SQLite::Statement check(*db_,
                              "SELECT id = ?1 FROM backends WHERE id = ?1 OR name = ?2 "
                              "ORDER BY id = ?1 DESC LIMIT 1");
      check.bind(1, backend.id);
      check.bind(2, backend.name);
      if (check.executeStep()) {
        if (check.getColumn(0).getInt() != 0) {
          return AlreadyExistsError("a backend with id '" + backend.id + "' already exists", "id");
        }
        return AlreadyExistsError("a backend named '" + backend.name + "' already exists", "name");
      }
      SQLite::Statement insert(*db_, kInsertBackend);
      BindBackend(insert, backend);
      insert.exec();
      txn.commit();
      return Status::Ok();
    });
  }

  Result<Backend> GetBackend(const std::string& id) override {
    return Run<Result<Backend>>("get backend", [&]() -> Result<Backend> {
      SQLite::Statement s(*db_, std::string(kSelectBackends) + " WHERE id = ?1");
      s.bind(1, id);
      if (!s.executeStep()) return NotFoundError("no backend with id '" + id + "'");
      return ReadBackend(s);
    });
  }

  Result<Backend> GetBackendByName(const std::string& name) override {
    return Run<Result<Backend>>("get backend by name", [&]() -> Result<Backend> {
      SQLite::Statement s(*db_, std::string(kSelectBackends) + " WHERE name = ?1");
      s.bind(1, name);
      if (!s.executeStep()) return NotFoundError("no backend named '" + name + "'");
      return ReadBackend(s);
    });
  }

  Result<std::vector<Backend>> ListBackends(const BackendFilter& filter) override {
    using Out = Result<std::vector<Backend>>;
    return Run<Out>("list backends", [&]() -> Out {
      SQLite::Statement s(*db_, std::string(kSelectBackends) +
                                    " WHERE (?1 IS NULL OR pool = ?1) AND "
                                    "(?2 IS NULL OR enabled = ?2) ORDER BY name");
      if (filter.pool) s.bind(1, *filter.pool);
      if (filter.enabled) s.bind(2, static_cast<int>(*filter.enabled));
      std::vector<Backend> out;
      while (s.executeStep()) {
        auto b = ReadBackend(s);
        if (!b.ok()) return b.status();
        out.push_back(std::move(*b));
      }
      return out;
    });
  }

  Status UpdateBackend(const Backend& backend) override {
    return Run<Status>("update backend", [&]() -> Status {
      SQLite::Transaction txn(*db_, SQLite::TransactionBehavior::IMMEDIATE);
      SQLite::Statement exists(*db_, "SELECT 1 FROM backends WHERE id = ?1");
      exists.bind(1, backend.id);
      if (!exists.executeStep()) return NotFoundError("no backend with id '" + backend.id + "'");
      SQLite::Statement taken(*db_, "SELECT 1 FROM backends WHERE name = ?1 AND id <> ?2");
      taken.bind(1, backend.name);
      taken.bind(2, backend.id);
      if (taken.executeStep()) {
        return AlreadyExistsError("a backend named '" + backend.name + "' already exists", "name");
      }
      SQLite::Statement update(*db_, kUpdateBackend);
      BindBackend(update, backend);
      update.exec();
      txn.commit();
      return Status::Ok();
    });
  }

  Status DeleteBackend(const std::string& id) override {
    return Run<Status>("delete backend", [&]() -> Status {
      SQLite::Transaction txn(*db_, SQLite::TransactionBehavior::IMMEDIATE);
      SQLite::Statement s(*db_, "DELETE FROM backends WHERE id = ?1");
      s.bind(1, id);
      if (s.exec() == 0) return NotFoundError("no backend with id '" + id + "'");
      txn.commit();
      return Status::Ok();
    });
  }

  Status UpdateBackendStates(const std::vector<BackendState>& states) override {
    if (states.empty()) return Status::Ok();
    return RunBackground<Status>("update backend states", [&]() -> Status {
      SQLite::Transaction txn(*bg_, SQLite::TransactionBehavior::IMMEDIATE);
      SQLite::Statement s(*bg_,
                          "UPDATE backends SET status = ?2, cooldown_until = ?3, "
                          "consecutive_429_count = ?4, consecutive_failures = ?5, "
                          "last_error = ?6 WHERE id = ?1");
      for (const BackendState& state : states) {
        s.reset();
        s.bind(1, state.backend_id);
        s.bind(2, std::string(BackendStatusName(state.status)));
        if (state.cooldown_until) {
          s.bind(3, ToUnixMillis(*state.cooldown_until));
        } else {
          s.bind(3);  // NULL
        }
        s.bind(4, state.consecutive_429_count);
        s.bind(5, state.consecutive_failures);
        s.bind(6, state.last_error);
        s.exec();  // no row for a deleted backend: ignored
      }
      txn.commit();
      return Status::Ok();
    });
  }

  Status ReplaceApiKeys(const std::vector<ApiKeyUpdate>& updates) override {
    if (updates.empty()) return Status::Ok();
    return Run<Status>("replace api keys", [&]() -> Status {
      SQLite::Transaction txn(*db_, SQLite::TransactionBehavior::IMMEDIATE);
      SQLite::Statement s(*db_, "UPDATE backends SET api_key_ciphertext = ?2 WHERE id = ?1");
      for (const ApiKeyUpdate& u : updates) {
        s.reset();
        s.bind(1, u.backend_id);
        s.bind(2, u.api_key_ciphertext);
        if (s.exec() == 0) {
          return NotFoundError("no backend with id '" + u.backend_id + "'");  // txn rolls back
        }
      }
      txn.commit();
      return Status::Ok();
    });
  }

  Status AppendCooldownEvents(const std::vector<CooldownEvent>& events) override {
    if (events.empty()) return Status::Ok();
    return RunBackground<Status>("append cooldown events", [&]() -> Status {
      SQLite::Transaction txn(*bg_, SQLite::TransactionBehavior::IMMEDIATE);
      SQLite::Statement& s = insert_event_;
      for (const CooldownEvent& e : events) {
        s.tryReset();  // may report the failure of a previous call; the bindings are redone
        s.bind(1, e.backend_id);
        s.bind(2, e.backend_name);
        s.bind(3, ToUnixMillis(e.start));
        s.bind(4, ToUnixMillis(e.until));
        s.bind(5, e.reason);
        s.bind(6, e.upstream_status);
        s.exec();
      }
      s.tryReset();
      txn.commit();
      return Status::Ok();
    });
  }

  Result<std::vector<CooldownEvent>> ListCooldownEvents(const CooldownEventQuery& query) override {
    SWITCHBOARD_RETURN_IF_ERROR(CheckLimit(query.limit));
    using Out = Result<std::vector<CooldownEvent>>;
    return Run<Out>("list cooldown events", [&]() -> Out {
      // Two texts rather than "?1 IS NULL OR ...", so each can use its index.
      SQLite::Statement s(*db_, query.backend_id
                                    ? "SELECT " SWITCHBOARD_SQLITE_EVENT_COLUMNS
                                      " FROM cooldown_events WHERE backend_id = ?2 "
                                      "ORDER BY id DESC LIMIT ?1"
                                    : "SELECT " SWITCHBOARD_SQLITE_EVENT_COLUMNS
                                      " FROM cooldown_events ORDER BY id DESC LIMIT ?1");
      s.bind(1, query.limit);
      if (query.backend_id) s.bind(2, *query.backend_id);
      std::vector<CooldownEvent> out;
      while (s.executeStep()) out.push_back(ReadEvent(s));
      return out;
    });
  }

  Status AppendUsage(const std::vector<UsageRecord>& records) override {
    if (records.empty()) return Status::Ok();
    const auto cells = internal::RollUp(records);  // before the lock: it parses traces
    return RunBackground<Status>("append usage", [&]() -> Status {
      SQLite::Transaction txn(*bg_, SQLite::TransactionBehavior::IMMEDIATE);
      SQLite::Statement& s = insert_usage_;
      for (const UsageRecord& r : records) {
        s.tryReset();  // may report the failure of a previous call; the bindings are redone
        s.bind(1, r.request_id);
        s.bind(2, ToUnixMillis(r.time));
        s.bind(3, r.endpoint);
        s.bind(4, r.model);
        s.bind(5, r.backend_id);
        s.bind(6, r.backend_name);
        s.bind(7, r.pool);
        s.bind(8, r.status);
        s.bind(9, r.attempts);
        s.bind(10, r.latency_ms);
        s.bind(11, r.ttfb_ms);
        s.bind(12, r.prompt_tokens);
        s.bind(13, r.completion_tokens);
        s.bind(14, static_cast<int>(r.stream));
        s.bind(15, r.error);
        s.bind(16, r.trace);
        s.exec();
      }
      s.tryReset();
      MergeAllSpans(*bg_, cells);
      txn.commit();
      return Status::Ok();
    });
  }

  Result<UsagePage> ListUsage(const UsageQuery& query) override {
    SWITCHBOARD_RETURN_IF_ERROR(CheckLimit(query.limit));
    return Run<Result<UsagePage>>("list usage", [&]() -> Result<UsagePage> {
      SQLite::Statement s(*db_, "SELECT " SWITCHBOARD_SQLITE_USAGE_COLUMNS
                                " FROM usage WHERE id < ?1 ORDER BY id DESC LIMIT ?2");
      s.bind(1, query.before.value_or(std::numeric_limits<int64_t>::max()));
      s.bind(2, query.limit + 1);  // one extra row tells whether another page exists
      UsagePage page;
      while (s.executeStep()) page.records.push_back(ReadUsage(s));
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
    return Run<Result<UsageStats>>("query usage stats", [&]() -> Result<UsageStats> {
      internal::UsageStatsBuilder builder(query.bucket_seconds);
      // One read transaction: rollups and edge records from the same snapshot.
      SQLite::Transaction txn(*db_, SQLite::TransactionBehavior::DEFERRED);
      // The coarsest slots that fit, finer ones towards the edges, and the
      // records themselves for the partial minutes at either end.
      for (const internal::StatsSegment& segment : plan) {
        if (segment.span_minutes == 0) {
          SQLite::Statement s(*db_, "SELECT " SWITCHBOARD_SQLITE_STATS_COLUMNS
                                    " FROM usage WHERE time >= ?1 AND time < ?2");
          s.bind(1, ToUnixMillis(segment.from));
          s.bind(2, ToUnixMillis(segment.to));
          while (s.executeStep()) builder.Add(ReadStatsRecord(s));
        } else {
          RawStatement s(*db_, "SELECT " SWITCHBOARD_SQLITE_ROLLUP_COLUMNS
                               " FROM usage_rollup WHERE span = ?3 AND minute >= ?1 AND "
                               "minute < ?2");
          s.Bind(1, segment.first_minute);
          s.Bind(2, segment.end_minute);
          s.Bind(3, segment.span_minutes);
          internal::UsageRollup row;
          while (s.Step()) {
            ReadRollupInto(s, row);
            builder.Add(row);
          }
        }
      }
      txn.commit();
      return builder.Build();
    });
  }

  Result<int64_t> DeleteUsageBefore(SystemTime cutoff) override {
    return RunBackground<Result<int64_t>>("delete usage", [&]() -> Result<int64_t> {
      SQLite::Transaction txn(*bg_, SQLite::TransactionBehavior::IMMEDIATE);
      SQLite::Statement s(*bg_, "DELETE FROM usage WHERE time < ?1");
      s.bind(1, ToUnixMillis(cutoff));
      const int64_t deleted = s.exec();
      // Rollup slots wholly before the cutoff go; a slot holding the cutoff
      // is rebuilt from the records that remain in it.
      const int64_t cutoff_ms = ToUnixMillis(cutoff);
      const int64_t cut_minute = internal::MinuteOf(cutoff);
      RollupCells rest;  // minute cells of the records left in the slot
      bool rest_read = false;
      for (int span : kRollupSpans) {
        const int64_t slot = internal::SlotStart(cut_minute, span);
        const bool partial = cutoff_ms != slot * 60000;
        SQLite::Statement drop(*bg_, "DELETE FROM usage_rollup WHERE span = ?1 AND minute < ?2");
        drop.bind(1, span);
        drop.bind(2, partial ? slot + span : slot);
        drop.exec();
        if (!partial) continue;
        if (!rest_read) {  // the largest span's slot holds every smaller one's
          const int64_t widest = kRollupSpans[std::size(kRollupSpans) - 1];
          const int64_t from = internal::SlotStart(cut_minute, static_cast<int>(widest));
          RollUpRows(*bg_, from * 60000, (from + widest) * 60000, &rest);
          rest_read = true;
        }
        RollupCells in_slot;
        for (const auto& [key, cell] : rest) {
          if (internal::SlotStart(cell.minute, span) == slot) in_slot.emplace(key, cell);
        }
        MergeRollups(*bg_, span, span == 1 ? in_slot : internal::Coarsen(in_slot, span));
      }
      txn.commit();
      return deleted;
    });
  }

  Status CreateClientKey(const ClientKey& key) override {
    return Run<Status>("create client key", [&]() -> Status {
      SQLite::Transaction txn(*db_, SQLite::TransactionBehavior::IMMEDIATE);
      SQLite::Statement check(*db_,
                              "SELECT id = ?1 FROM client_keys WHERE id = ?1 OR "
                              "(name = ?2 AND revoked_at IS NULL AND ?3 = 0) "
                              "ORDER BY id = ?1 DESC LIMIT 1");
      check.bind(1, key.id);
      check.bind(2, key.name);
      check.bind(3, static_cast<int>(key.revoked()));
      if (check.executeStep()) {
        if (check.getColumn(0).getInt() != 0) {
          return AlreadyExistsError("a client key with id '" + key.id + "' already exists", "id");
        }
        return AlreadyExistsError("a client key named '" + key.name + "' already exists", "name");
      }
      SQLite::Statement insert(*db_,
                               "INSERT INTO client_keys (id, name, key_hash, hint, metadata, "
                               "created_at, last_used_at, revoked_at) "
                               "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
      insert.bind(1, key.id);
      insert.bind(2, key.name);
      insert.bind(3, key.key_hash);
      insert.bind(4, key.hint);
      insert.bind(5, key.metadata);
      insert.bind(6, ToUnixMillis(key.created_at));
      if (key.last_used_at) insert.bind(7, ToUnixMillis(*key.last_used_at));
      if (key.revoked_at) insert.bind(8, ToUnixMillis(*key.revoked_at));
      insert.exec();
      txn.commit();
      return Status::Ok();
    });
  }

  Result<std::vector<ClientKey>> ListClientKeys() override {
    using Out = Result<std::vector<ClientKey>>;
    return Run<Out>("list client keys", [&]() -> Out {
      SQLite::Statement s(*db_,
                          "SELECT id, name, key_hash, hint, metadata, created_at, last_used_at, "
                          "revoked_at FROM client_keys ORDER BY created_at, id");
      std::vector<ClientKey> out;
      while (s.executeStep()) {
        ClientKey k;
        k.id = s.getColumn(0).getString();
        k.name = s.getColumn(1).getString();
        k.key_hash = s.getColumn(2).getString();
        k.hint = s.getColumn(3).getString();
        k.metadata = s.getColumn(4).getString();
        k.created_at = FromUnixMillis(s.getColumn(5).getInt64());
        if (!s.getColumn(6).isNull()) k.last_used_at = FromUnixMillis(s.getColumn(6).getInt64());
        if (!s.getColumn(7).isNull()) k.revoked_at = FromUnixMillis(s.getColumn(7).getInt64());
        out.push_back(std::move(k));
      }
      return out;
    });
  }

  Status RevokeClientKey(const std::string& id, SystemTime when) override {
    return Run<Status>("revoke client key", [&]() -> Status {
      SQLite::Transaction txn(*db_, SQLite::TransactionBehavior::IMMEDIATE);
      SQLite::Statement s(*db_,
                          "UPDATE client_keys SET revoked_at = COALESCE(revoked_at, ?2) "
                          "WHERE id = ?1");
      s.bind(1, id);
      s.bind(2, ToUnixMillis(when));
      if (s.exec() == 0) return NotFoundError("no client key with id '" + id + "'");
      txn.commit();
      return Status::Ok();
    });
  }

  Status TouchClientKeys(const std::vector<ClientKeyUse>& uses) override {
    if (uses.empty()) return Status::Ok();
    return RunBackground<Status>("touch client keys", [&]() -> Status {
      SQLite::Transaction txn(*bg_, SQLite::TransactionBehavior::IMMEDIATE);
      SQLite::Statement s(*bg_,
                          "UPDATE client_keys SET last_used_at = ?2 WHERE id = ?1 AND "
                          "(last_used_at IS NULL OR last_used_at < ?2)");
      for (const ClientKeyUse& use : uses) {
        s.reset();
        s.bind(1, use.key_id);
        s.bind(2, ToUnixMillis(use.used_at));
        s.exec();
      }
      txn.commit();
      return Status::Ok();
    });
  }

  Result<Config> GetConfig() override {
    return Run<Result<Config>>("get config", [&]() -> Result<Config> {
      SQLite::Statement s(*db_, "SELECT json FROM config WHERE id = 1");
      if (!s.executeStep()) return Config{};
      return internal::StoredConfigFromJson(s.getColumn(0).getString());
    });
  }

  Status PutConfig(const Config& config) override {
    if (auto errors = ValidateConfig(config); !errors.empty()) {
      return InvalidArgumentError(errors.front().message, errors.front().param);
    }
    return Run<Status>("put config", [&]() -> Status {
      SQLite::Transaction txn(*db_, SQLite::TransactionBehavior::IMMEDIATE);
      SQLite::Statement s(*db_,
                          "INSERT INTO config (id, json) VALUES (1, ?1) "
                          "ON CONFLICT (id) DO UPDATE SET json = excluded.json");
      s.bind(1, ConfigToJson(config));
      s.exec();
      txn.commit();
      return Status::Ok();
    });
  }

 private:
  // Runs `body` under mu_, turning anything SQLiteCpp (or the allocator)
  // throws into a Status. A Transaction inside `body` has already rolled back
  // by the time the handler runs.
  template <typename R, typename F>
  R Run(std::string_view what, F&& body) {
    std::lock_guard<std::mutex> lock(mu_);
    try {
      return body();
    } catch (const SQLite::Exception& e) {
      return StatusFromSqlite(what, e);
    } catch (const std::exception& e) {
      return InternalError("sqlite: " + std::string(what) + ": " + e.what());
    }
  }

  // RunBackground(): Run() on the background connection. The StorageWriter's
  // batches wait out another process's lock (busy_timeout) on their own
  // connection, so an admin request is never queued behind them: it waits
  // at most its own busy timeout.
  template <typename R, typename F>
  R RunBackground(std::string_view what, F&& body) {
    std::lock_guard<std::mutex> lock(*bg_mu_);
    try {
      return body();
    } catch (const SQLite::Exception& e) {
      return StatusFromSqlite(what, e);
    } catch (const std::exception& e) {
      return InternalError("sqlite: " + std::string(what) + ": " + e.what());
    }
  }

  std::mutex mu_;
  std::mutex own_bg_mu_;
  // Declared before the statements that borrow them, so they are closed last.
  std::unique_ptr<SQLite::Database> db_;        // guarded by mu_
  std::unique_ptr<SQLite::Database> bg_owned_;  // guarded by own_bg_mu_
  SQLite::Database* const bg_;                  // guarded by *bg_mu_
  std::mutex* const bg_mu_;
  SQLite::Statement insert_event_;  // guarded by *bg_mu_
  SQLite::Statement insert_usage_;  // guarded by *bg_mu_
};

int ReadUserVersion(SQLite::Database& db) { return db.execAndGet("PRAGMA user_version").getInt(); }

Status NewerSchemaError(int found) {
  return FailedPreconditionError("database schema version " + std::to_string(found) +
                                 " is newer than this build supports (" +
                                 std::to_string(kLatestSchemaVersion) + ")");
}

// Applies the missing migration steps, each in its own IMMEDIATE transaction.
// The version is re-read inside each transaction, so two processes opening the
// same new file at once do not both apply a step.
Status Migrate(SQLite::Database& db) {
  for (const Migration& m : kMigrations) {
    SQLite::Transaction txn(db, SQLite::TransactionBehavior::IMMEDIATE);
    const int current = ReadUserVersion(db);
    if (current > kLatestSchemaVersion) return NewerSchemaError(current);
    if (current >= m.version) continue;  // the read-only txn rolls back
    db.exec(m.sql);
    if (m.then != nullptr) m.then(db);
    // A PRAGMA takes no bound parameters; the version is a constant of this file.
    db.exec("PRAGMA user_version = " + std::to_string(m.version));
    txn.commit();
  }
  return Status::Ok();
}

}  // namespace

int SqliteSchemaVersion() { return kLatestSchemaVersion; }

Result<std::unique_ptr<Storage>> OpenSqliteStorage(const SqliteStorageOptions& options) {
  if (options.path.empty()) {
    return InvalidArgumentError("sqlite: the database path must not be empty", "path");
  }
  const std::string what = "open '" + options.path + "'";
  try {
    auto db = std::make_unique<SQLite::Database>(options.path,
                                                 // Every use is under our own mutex.
                                                 SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE |
                                                     SQLite::OPEN_NOMUTEX,
                                                 std::max(options.busy_timeout_ms, 0));
    // Refuse a newer schema before changing anything about the file.
    const int version = ReadUserVersion(*db);
    if (version > kLatestSchemaVersion) return NewerSchemaError(version);
    if (options.path != ":memory:") {
      const std::string mode = db->execAndGet("PRAGMA journal_mode = WAL").getString();
      if (mode != "wal") {
        return FailedPreconditionError("sqlite: " + what +
                                       ": cannot enable WAL journal mode (got '" + mode + "')");
      }
    }
    db->exec("PRAGMA synchronous = FULL");
    db->exec("PRAGMA foreign_keys = ON");
    // Stats read the rollups of a whole day (a few MiB) on every dashboard
    // refresh: keep them in this connection's cache (default 2 MiB).
    db->exec("PRAGMA cache_size = -16384");
    if (version < kLatestSchemaVersion) SWITCHBOARD_RETURN_IF_ERROR(Migrate(*db));
    // A second connection for the background writer (an in-memory database
    // exists once per connection, so it keeps one).
    std::unique_ptr<SQLite::Database> background;
    if (options.path != ":memory:") {
      background = std::make_unique<SQLite::Database>(options.path, SQLite::OPEN_READWRITE,
                                                      std::max(options.busy_timeout_ms, 0));
      background->exec("PRAGMA synchronous = FULL");
      background->exec("PRAGMA foreign_keys = ON");
    }
    return std::unique_ptr<Storage>(
        std::make_unique<SqliteStorage>(std::move(db), std::move(background)));
  } catch (const SQLite::Exception& e) {
    if ((e.getErrorCode() & 0xff) == SQLITE_NOTADB) {
      return FailedPreconditionError("sqlite: " + what + ": not a database: " + e.what());
    }
    return StatusFromSqlite(what, e);
  } catch (const std::exception& e) {
    return InternalError("sqlite: " + what + ": " + e.what());
  }
}

}  // namespace switchboard

#undef SWITCHBOARD_SQLITE_BACKEND_COLUMNS
#undef SWITCHBOARD_SQLITE_EVENT_COLUMNS
#undef SWITCHBOARD_SQLITE_USAGE_COLUMNS
#undef SWITCHBOARD_SQLITE_ROLLUP_COLUMNS
#undef SWITCHBOARD_SQLITE_STATS_COLUMNS
