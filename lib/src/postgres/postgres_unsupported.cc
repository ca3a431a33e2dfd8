// OpenPostgresStorage() in a build without libpq (SWITCHBOARD_WITH_POSTGRES off).
#include "switchboard/postgres_storage.h"

namespace switchboard {

Result<std::unique_ptr<Storage>> OpenPostgresStorage(const PostgresStorageOptions&) {
  return FailedPreconditionError(
      "this build of switchboard has no PostgreSQL support (configure with "
      "SWITCHBOARD_WITH_POSTGRES=ON and libpq-dev installed)");
}

int PostgresSchemaVersion() { return 0; }

bool PostgresStorageSupported() { return false; }

}  // namespace switchboard
