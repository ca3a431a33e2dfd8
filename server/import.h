// server/import.h
// Backends from outside the admin API: the --import file and the demo's
// built-in backends. Both are applied at start, idempotently by name.
//
//   SWITCHBOARD_RETURN_IF_ERROR(ImportBackendsFile("backends.json", storage, cipher, now));
#ifndef SWITCHBOARD_SERVER_IMPORT_H_
#define SWITCHBOARD_SERVER_IMPORT_H_

#include <string>

#include "switchboard/json.h"
#include "switchboard/secrets.h"
#include "switchboard/status.h"
#include "switchboard/storage.h"
#include "switchboard/types.h"

namespace switchboard::server {

enum class UpsertResult { kCreated, kUpdated, kUnchanged };

// Creates the backend `input` names, or updates the one already stored under
// that name (it keeps its id, created_at and routing state). The result has
// `source`. An api_key in `input` is encrypted bound to the backend's id (an
// empty one clears the key); without one, a stored key stays. Field errors
// come back as kInvalidArgument with param() naming the field (prefixed with
// `param_prefix`); messages never contain the key.
Result<UpsertResult> UpsertBackend(Storage& storage, const KeyCipher& cipher,
                                   const BackendInput& input, BackendSource source, SystemTime now,
                                   const std::string& param_prefix = "");

struct ImportSummary {
  int created = 0;
  int updated = 0;
  int unchanged = 0;
};

// Reads `path` (a JSON array of backend objects, or {"backends":[...]}) and
// upserts each with source "import". Stops at the first invalid entry: the
// error's param() is "[i].field". kUnavailable when the file cannot be read.
Result<ImportSummary> ImportBackendsFile(const std::string& path, Storage& storage,
                                         const KeyCipher& cipher, SystemTime now);

}  // namespace switchboard::server

#endif  // SWITCHBOARD_SERVER_IMPORT_H_
