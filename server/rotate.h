// server/rotate.h
// `switchboard rotate-master-key`: re-encrypts every stored API key under a
// new master key, in one transaction, with the server stopped.
//
//   Result<RotateSummary> done = RotateMasterKeyCommand({.db_path = "switchboard.db",
//                                                         .new_master_key_file = "new.key"});
#ifndef SWITCHBOARD_SERVER_ROTATE_H_
#define SWITCHBOARD_SERVER_ROTATE_H_

#include <string>

#include "switchboard/status.h"

namespace switchboard::server {

struct RotateOptions {
  // The store, as for `serve`: a SQLite file, or a PostgreSQL URL in store_url.
  std::string db_path = "switchboard.db";
  std::string store_url;
  // The current master key: $master_key_env, else master_key_file, else (for
  // SQLite) "<db_path>.key". Never generated: a key that does not exist
  // cannot have encrypted anything.
  std::string master_key_file;
  std::string master_key_env = "SWITCHBOARD_MASTER_KEY";
  // The new master key: read when the file exists, else generated and written
  // there (mode 0600, synced) before the store is touched.
  std::string new_master_key_file;
};

struct RotateSummary {
  int keys = 0;              // API keys now under the new master key
  bool generated = false;    // the new key file was created by this run
  std::string new_key_id;    // the new master key's id (not secret)
};

// Re-encrypts every backend's API key from the current to the new master key
// in one transaction (see RotateMasterKey): a crash leaves every key under
// the old or every key under the new one, and a second run finishes the job.
// kFailedPrecondition when the new key equals the current one or a stored
// key does not decrypt under the current one.
Result<RotateSummary> RotateMasterKeyCommand(const RotateOptions& options);

}  // namespace switchboard::server

#endif  // SWITCHBOARD_SERVER_ROTATE_H_
