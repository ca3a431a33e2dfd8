#include "rotate.h"

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <utility>

#include "switchboard/postgres_storage.h"
#include "switchboard/secrets.h"
#include "switchboard/storage.h"

namespace switchboard::server {

namespace {

Result<std::unique_ptr<KeyCipher>> CipherFrom(const MasterKeyOptions& options,
                                              const std::string& what) {
  Result<MasterKey> key = LoadMasterKey(options);
  if (!key.ok()) return Status(key.status().code(), what + ": " + key.status().message());
  return KeyCipher::Create(*std::move(key));
}

}  // namespace

Result<RotateSummary> RotateMasterKeyCommand(const RotateOptions& options) {
  if (options.new_master_key_file.empty()) {
    return InvalidArgumentError("--new-master-key-file is required", "new_master_key_file");
  }
  const bool postgres = !options.store_url.empty();
  const bool env_set =
      !options.master_key_env.empty() && std::getenv(options.master_key_env.c_str()) != nullptr;

  MasterKeyOptions current;
  current.env_var = options.master_key_env;
  current.key_file = options.master_key_file;
  if (current.key_file.empty() && !postgres) current.key_file = options.db_path + ".key";
  current.create_if_missing = false;
  if (!env_set && current.key_file.empty()) {
    return FailedPreconditionError("the current master key: set $" + options.master_key_env +
                                   " or --master-key-file");
  }
  if (!env_set && !std::filesystem::exists(current.key_file)) {
    return FailedPreconditionError("the current master key file " + current.key_file +
                                   " does not exist");
  }
  Result<std::unique_ptr<KeyCipher>> from = CipherFrom(current, "current master key");
  if (!from.ok()) return from.status();

  RotateSummary summary;
  summary.generated = !std::filesystem::exists(options.new_master_key_file);
  MasterKeyOptions next;
  next.env_var.clear();  // only the file: $SWITCHBOARD_MASTER_KEY is the current key
  next.key_file = options.new_master_key_file;
  next.create_if_missing = true;
  Result<std::unique_ptr<KeyCipher>> to = CipherFrom(next, "new master key");
  if (!to.ok()) return to.status();
  if ((*to)->key_id() == (*from)->key_id()) {
    return FailedPreconditionError("the new master key is the current one");
  }
  summary.new_key_id = (*to)->key_id();

  Result<std::unique_ptr<Storage>> storage =
      postgres ? OpenPostgresStorage({.url = options.store_url})
               : OpenSqliteStorage({.path = options.db_path});
  if (!storage.ok()) {
    const std::string where = postgres ? RedactPostgresUrl(options.store_url) : options.db_path;
    return Status(storage.status().code(), "store " + where + ": " + storage.status().message());
  }
  SWITCHBOARD_RETURN_IF_ERROR(RotateMasterKey(**storage, **from, **to));

  auto backends = (*storage)->ListBackends(BackendFilter{});
  if (!backends.ok()) return backends.status();
  for (const Backend& b : *backends) {
    if (!b.api_key_ciphertext.empty() &&
        KeyCipher::BlobKeyId(b.api_key_ciphertext) == summary.new_key_id) {
      ++summary.keys;
    }
  }
  return summary;
}

}  // namespace switchboard::server
