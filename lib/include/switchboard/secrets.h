// switchboard/secrets.h
// API keys at rest: AES-256-GCM (libsodium) under a master key that never
// enters the database. Each ciphertext is bound to its backend id (associated
// data), so a blob copied onto another row does not decrypt.
//
//   auto key = switchboard::LoadMasterKey({.key_file = "switchboard.key"});
//   auto cipher = switchboard::KeyCipher::Create(std::move(*key));
//   std::string blob = *cipher->Encrypt("sk-...", backend.id);   // "sb1:<kid>:<b64>"
//   SecretString plain = *cipher->Decrypt(blob, backend.id);
#ifndef SWITCHBOARD_SECRETS_H_
#define SWITCHBOARD_SECRETS_H_

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "switchboard/status.h"

namespace switchboard {

class Storage;

// Checks that libsodium initializes and that this CPU has AES-256-GCM
// (AES-NI + PCLMUL). kFailedPrecondition with a clear message otherwise.
// Safe to call repeatedly and from several threads.
Status InitCrypto();

// A secret held in sodium-allocated memory (guarded pages, excluded from core
// dumps where possible) and wiped when dropped. Move-only.
class SecretString {
 public:
  SecretString() = default;
  explicit SecretString(std::string_view plain);
  SecretString(SecretString&& other) noexcept;
  SecretString& operator=(SecretString&& other) noexcept;
  SecretString(const SecretString&) = delete;
  SecretString& operator=(const SecretString&) = delete;
  ~SecretString();

  // The secret's bytes; valid while *this lives and is not moved from.
  std::string_view view() const { return {data_, size_}; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }

 private:
  // MasterKey and KeyCipher fill sodium memory themselves (random bytes, a
  // decoded key, a decrypted API key) so no copy of it lands on the heap.
  friend class MasterKey;
  friend class KeyCipher;
  // Takes ownership of `size` bytes at `data`, which sodium_malloc returned
  // (nullptr when size is 0).
  static SecretString Adopt(char* data, size_t size);

  char* data_ = nullptr;
  size_t size_ = 0;
};

// The 32-byte master key. Move-only; wiped when dropped.
class MasterKey {
 public:
  static constexpr size_t kSize = 32;

  // A fresh random key. REQUIRES: InitCrypto().ok()
  static Result<MasterKey> Generate();
  // Standard base64 (padding optional) of exactly 32 bytes; kInvalidArgument
  // otherwise (the message never echoes the input).
  static Result<MasterKey> FromBase64(std::string_view text);

  std::string ToBase64() const;
  // 8 hex characters identifying the key (a keyed hash, not the key).
  const std::string& key_id() const { return key_id_; }
  std::string_view bytes() const { return secret_.view(); }

 private:
  MasterKey(SecretString secret, std::string key_id)
      : secret_(std::move(secret)), key_id_(std::move(key_id)) {}
  SecretString secret_;
  std::string key_id_;
};

struct MasterKeyOptions {
  // Environment variable holding the base64 key; checked first.
  std::string env_var = "SWITCHBOARD_MASTER_KEY";
  // File holding the base64 key; created with mode 0600 when absent and
  // `create_if_missing`.
  std::string key_file;
  bool create_if_missing = true;
};

// The master key from $env_var, else from key_file (created when absent).
// kInvalidArgument for a malformed key; kFailedPrecondition when no source is
// configured, or when the key file can be read by group or others (fix with
// chmod 600); kUnavailable when the file cannot be read or written.
Result<MasterKey> LoadMasterKey(const MasterKeyOptions& options);

// Encrypts and decrypts API keys under one master key. Thread-safe.
class KeyCipher {
 public:
  KeyCipher(const KeyCipher&) = delete;
  KeyCipher& operator=(const KeyCipher&) = delete;

  // kFailedPrecondition when InitCrypto() fails.
  static Result<std::unique_ptr<KeyCipher>> Create(MasterKey key);

  // "sb1:<key id>:<base64(nonce || ciphertext || tag)>", a fresh random nonce
  // each call, `backend_id` as associated data.
  Result<std::string> Encrypt(std::string_view plaintext, std::string_view backend_id) const;

  // kInvalidArgument for a malformed or truncated blob, kFailedPrecondition
  // when it was made under another master key, kInvalidArgument ("does not
  // authenticate") on a wrong key, tampering or another backend's id.
  Result<SecretString> Decrypt(std::string_view blob, std::string_view backend_id) const;

  const std::string& key_id() const { return key_.key_id(); }

  // The key id a blob names, or nullopt when the blob is malformed.
  static std::optional<std::string> BlobKeyId(std::string_view blob);

 private:
  KeyCipher(MasterKey key, SecretString state) : key_(std::move(key)), state_(std::move(state)) {}
  MasterKey key_;
  // The expanded AES-256-GCM key (crypto_aead_aes256gcm_state, 16-byte
  // aligned) in sodium memory; read-only after Create().
  SecretString state_;
};

// Re-encrypts every backend's API key from `from` to `to` in one transaction
// (Storage::ReplaceApiKeys): afterwards either every key is under `to` or,
// on any failure, every key is still under `from`. Keys already under `to`
// are left as they are, so an interrupted rotation can be run again.
Status RotateMasterKey(Storage& storage, const KeyCipher& from, const KeyCipher& to);

}  // namespace switchboard

#endif  // SWITCHBOARD_SECRETS_H_
