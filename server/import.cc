#include "import.h"

#include <fstream>
#include <sstream>
#include <utility>
#include <vector>

namespace switchboard::server {

namespace {

struct PreparedBackend {
  Backend backend;
  UpsertResult result = UpsertResult::kUnchanged;
};

// Builds the backend `input` describes (without storing it) and validates it.
Result<PreparedBackend> Prepare(Storage& storage, const KeyCipher& cipher,
                                const BackendInput& input, BackendSource source, SystemTime now,
                                const std::string& param_prefix) {
  if (!input.name.has_value()) return InvalidArgumentError("is required", param_prefix + "name");
  PreparedBackend out;
  Result<Backend> existing = storage.GetBackendByName(*input.name);
  if (existing.ok()) {
    out.backend = *existing;
    out.result = UpsertResult::kUpdated;
  } else if (existing.status().code() == StatusCode::kNotFound) {
    out.backend.id = NewBackendId();
    out.backend.created_at = now;
    out.result = UpsertResult::kCreated;
  } else {
    return existing.status();
  }
  const Backend before = out.backend;
  ApplyBackendInput(input, &out.backend);
  out.backend.source = source;
  if (input.api_key.has_value()) {
    const std::string& key = *input.api_key;
    bool same_key = false;
    if (!key.empty() && !before.api_key_ciphertext.empty()) {
      // Re-importing the same key keeps its ciphertext, so an unchanged file
      // changes nothing.
      Result<SecretString> old = cipher.Decrypt(before.api_key_ciphertext, before.id);
      same_key = old.ok() && old->view() == key;
    }
    if (key.empty()) {
      out.backend.api_key_ciphertext.clear();
      out.backend.api_key_hint.clear();
    } else if (!same_key) {
      Result<std::string> blob = cipher.Encrypt(key, out.backend.id);
      if (!blob.ok()) return blob.status();
      out.backend.api_key_ciphertext = *std::move(blob);
      out.backend.api_key_hint = ApiKeyHint(key);
    }
  }
  if (std::vector<FieldError> errors = ValidateBackend(out.backend); !errors.empty()) {
    return InvalidArgumentError(errors.front().message, param_prefix + errors.front().param);
  }
  if (out.result == UpsertResult::kUpdated) {
    if (out.backend == before) {
      out.result = UpsertResult::kUnchanged;
    } else {
      out.backend.updated_at = now;
    }
  } else {
    out.backend.updated_at = now;
  }
  return out;
}

Status Store(Storage& storage, const PreparedBackend& p) {
  switch (p.result) {
    case UpsertResult::kCreated:
      return storage.CreateBackend(p.backend);
    case UpsertResult::kUpdated:
      return storage.UpdateBackend(p.backend);
    case UpsertResult::kUnchanged:
      return Status::Ok();
  }
  return Status::Ok();
}

}  // namespace

Result<UpsertResult> UpsertBackend(Storage& storage, const KeyCipher& cipher,
                                   const BackendInput& input, BackendSource source, SystemTime now,
                                   const std::string& param_prefix) {
  Result<PreparedBackend> p = Prepare(storage, cipher, input, source, now, param_prefix);
  if (!p.ok()) return p.status();
  SWITCHBOARD_RETURN_IF_ERROR(Store(storage, *p));
  return p->result;
}

Result<ImportSummary> ImportBackendsFile(const std::string& path, Storage& storage,
                                         const KeyCipher& cipher, SystemTime now) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return UnavailableError("cannot read import file " + path);
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return UnavailableError("cannot read import file " + path);

  Result<std::vector<BackendInput>> inputs = ParseBackendImport(text.str());
  if (!inputs.ok()) return inputs.status();

  // Validate every entry before storing any, so a bad file changes nothing.
  std::vector<PreparedBackend> prepared;
  for (size_t i = 0; i < inputs->size(); ++i) {
    const BackendInput& input = (*inputs)[i];
    const std::string prefix = "[" + std::to_string(i) + "].";
    for (const PreparedBackend& earlier : prepared) {
      if (input.name.has_value() && earlier.backend.name == *input.name) {
        return InvalidArgumentError("names a backend an earlier entry already names",
                                    prefix + "name");
      }
    }
    Result<PreparedBackend> p =
        Prepare(storage, cipher, input, BackendSource::kImport, now, prefix);
    if (!p.ok()) return p.status();
    prepared.push_back(*std::move(p));
  }
  ImportSummary summary;
  for (const PreparedBackend& p : prepared) {
    SWITCHBOARD_RETURN_IF_ERROR(Store(storage, p));
    switch (p.result) {
      case UpsertResult::kCreated:
        ++summary.created;
        break;
      case UpsertResult::kUpdated:
        ++summary.updated;
        break;
      case UpsertResult::kUnchanged:
        ++summary.unchanged;
        break;
    }
  }
  return summary;
}

}  // namespace switchboard::server
