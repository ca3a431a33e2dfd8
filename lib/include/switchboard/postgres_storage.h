// switchboard/postgres_storage.h
// A Storage over PostgreSQL, so that several gateway instances can share one
// store. Built when the library was configured with SWITCHBOARD_WITH_POSTGRES
// (libpq); otherwise OpenPostgresStorage() answers kFailedPrecondition.
//
//   auto storage = switchboard::OpenPostgresStorage(
//       {.url = "postgres://switchboard:secret@db.internal:5432/switchboard"});
//   if (!storage.ok()) return storage.status();   // the message never holds the password
//   SWITCHBOARD_RETURN_IF_ERROR((*storage)->CreateBackend(backend));
//
// See docs/storage.md ("PostgreSQL") for the schema, migrations and what
// differs from SQLite.
#ifndef SWITCHBOARD_POSTGRES_STORAGE_H_
#define SWITCHBOARD_POSTGRES_STORAGE_H_

#include <memory>
#include <string>
#include <string_view>

#include "switchboard/status.h"
#include "switchboard/storage.h"

namespace switchboard {

struct PostgresStorageOptions {
  // A libpq connection URI ("postgres://user:password@host:port/db?sslmode=require")
  // or key/value string ("host=... dbname=..."). Libpq's environment
  // variables (PGPASSWORD, PGSSLMODE, ...) and ~/.pgpass apply as usual.
  std::string url;
  // The schema the tables live in, created if missing. Empty: the
  // connection's search_path decides (normally "public").
  std::string schema;
  // At most this many connections are open at once; callers beyond wait for one.
  int max_connections = 4;
  // Seconds a new connection may take to open before kUnavailable.
  int connect_timeout_seconds = 5;
};

// Connects, creates the schema if needed and migrates it (under an advisory
// lock, so instances starting together apply each step once). kUnavailable
// when the server cannot be reached or refuses the login, kFailedPrecondition
// when the schema is newer than this build understands or the library was
// built without PostgreSQL support, kInvalidArgument for an empty url.
// Error messages never contain the password.
//
// The returned Storage is thread-safe: a pool of up to max_connections
// connections, each used by one call at a time. A connection that breaks
// (the server restarted, a proxy cut it) is dropped and the call is retried
// once on a new one, unless the break came while committing.
Result<std::unique_ptr<Storage>> OpenPostgresStorage(const PostgresStorageOptions& options);

// The schema version OpenPostgresStorage() migrates to.
int PostgresSchemaVersion();

// Whether this build includes the PostgreSQL store.
bool PostgresStorageSupported();

// True when `store` names a PostgreSQL store: it starts with "postgres://"
// or "postgresql://".
bool IsPostgresUrl(std::string_view store);

// `url` with the password of its user-info part (and any "password=" query
// parameter) replaced by "***", for logs and error messages.
std::string RedactPostgresUrl(std::string_view url);

}  // namespace switchboard

#endif  // SWITCHBOARD_POSTGRES_STORAGE_H_
