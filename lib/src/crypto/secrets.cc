#include "switchboard/secrets.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cassert>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "switchboard/storage.h"

namespace switchboard {
namespace {

constexpr std::string_view kBlobPrefix = "sb1:";
constexpr size_t kKeyIdHexChars = 8;
constexpr size_t kNonceBytes = crypto_aead_aes256gcm_NPUBBYTES;
constexpr size_t kTagBytes = crypto_aead_aes256gcm_ABYTES;
// API keys are short; the cap keeps a hostile blob from making us allocate
// (and mlock) without bound.
constexpr size_t kMaxPlaintextBytes = 64 * 1024;
constexpr size_t kMaxPayloadBytes = kNonceBytes + kMaxPlaintextBytes + kTagBytes;
constexpr size_t kMaxBlobChars =
    kBlobPrefix.size() + kKeyIdHexChars + 1 +
    sodium_base64_ENCODED_LEN(kMaxPayloadBytes, sodium_base64_VARIANT_ORIGINAL);
// The BLAKE2b key that turns a master key into its id. Changing it changes
// every key id, so it is versioned like the blob format.
constexpr std::string_view kKeyIdContext = "switchboard key id v1";
// A key file holds 44 base64 characters and a newline; anything much bigger
// is not a key file.
constexpr size_t kMaxKeyFileBytes = 4096;

static_assert(MasterKey::kSize == crypto_aead_aes256gcm_KEYBYTES);
static_assert(sizeof(crypto_aead_aes256gcm_state) % 16 == 0,
              "sodium_malloc places a block at the end of its page; a size that is a "
              "multiple of 16 keeps the state 16-byte aligned");

// sodium_init() is idempotent and thread-safe; the static only saves the
// lock it takes on every call.
bool SodiumReady() {
  static const bool ready = sodium_init() >= 0;
  return ready;
}

// sodium_malloc() with the C++ behaviour for running out of memory. Without
// sodium_init() it would abort, so this makes sure it ran.
char* AllocSecure(size_t size) {
  if (!SodiumReady()) throw std::bad_alloc();
  void* p = sodium_malloc(size);
  if (p == nullptr) throw std::bad_alloc();
  return static_cast<char*>(p);
}

std::string ErrnoMessage(int err) { return std::generic_category().message(err); }

std::string_view TrimSpace(std::string_view s) {
  constexpr std::string_view kSpace = " \t\r\n\v\f";
  size_t begin = s.find_first_not_of(kSpace);
  if (begin == std::string_view::npos) return {};
  size_t end = s.find_last_not_of(kSpace);
  return s.substr(begin, end - begin + 1);
}

bool IsLowerHex(std::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

// Decodes `text` into `out` (at most `out_size` bytes); false unless all of
// `text` is base64 of `variant`.
bool DecodeBase64(std::string_view text, int variant, unsigned char* out, size_t out_size,
                  size_t* out_len) {
  return sodium_base642bin(out, out_size, text.data(), text.size(), /*ignore=*/nullptr, out_len,
                           /*b64_end=*/nullptr, variant) == 0;
}

std::string EncodeBase64(const unsigned char* data, size_t size) {
  std::string out(sodium_base64_ENCODED_LEN(size, sodium_base64_VARIANT_ORIGINAL), '\0');
  sodium_bin2base64(out.data(), out.size(), data, size, sodium_base64_VARIANT_ORIGINAL);
  out.pop_back();  // the terminating NUL sodium writes
  return out;
}

std::string ComputeKeyId(std::string_view key) {
  unsigned char hash[crypto_generichash_BYTES_MIN];
  crypto_generichash(hash, sizeof hash, reinterpret_cast<const unsigned char*>(key.data()),
                     key.size(), reinterpret_cast<const unsigned char*>(kKeyIdContext.data()),
                     kKeyIdContext.size());
  char hex[kKeyIdHexChars + 1];
  sodium_bin2hex(hex, sizeof hex, hash, kKeyIdHexChars / 2);
  sodium_memzero(hash, sizeof hash);
  return std::string(hex, kKeyIdHexChars);
}

// A blob taken apart: the key id it names and its decoded payload.
struct ParsedBlob {
  std::string_view key_id;
  std::vector<unsigned char> payload;  // nonce || ciphertext || tag
};

bool ParseBlob(std::string_view blob, ParsedBlob* out) {
  if (blob.size() > kMaxBlobChars) return false;
  if (blob.substr(0, kBlobPrefix.size()) != kBlobPrefix) return false;
  blob.remove_prefix(kBlobPrefix.size());
  if (blob.size() < kKeyIdHexChars + 1 || blob[kKeyIdHexChars] != ':') return false;
  std::string_view key_id = blob.substr(0, kKeyIdHexChars);
  if (!IsLowerHex(key_id)) return false;
  std::string_view b64 = blob.substr(kKeyIdHexChars + 1);
  std::vector<unsigned char> payload(b64.size() / 4 * 3 + 3);
  size_t len = 0;
  if (!DecodeBase64(b64, sodium_base64_VARIANT_ORIGINAL, payload.data(), payload.size(), &len)) {
    return false;
  }
  if (len < kNonceBytes + kTagBytes) return false;
  payload.resize(len);
  out->key_id = key_id;
  out->payload = std::move(payload);
  return true;
}

Status MalformedBlobError() { return InvalidArgumentError("malformed encrypted key"); }

// Writes all of `data` to `fd`, retrying short writes and EINTR. 0 or errno.
int WriteAll(int fd, const char* data, size_t size) {
  while (size > 0) {
    ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return 0;
}

// Creates `file` (which must not exist) with mode 0600 holding `data`, and
// syncs it. 0 or errno; on failure after creating it, `file` is removed.
int WriteNewFile(const std::string& file, const char* data, size_t size) {
  int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return errno;
  int err = ::fchmod(fd, 0600) != 0 ? errno : 0;  // exactly 0600, whatever the umask
  if (err == 0) err = WriteAll(fd, data, size);
  if (err == 0 && ::fsync(fd) != 0) err = errno;
  if (::close(fd) != 0 && err == 0) err = errno;
  if (err != 0) ::unlink(file.c_str());
  return err;
}

// Makes a new directory entry in the directory holding `path` durable.
void SyncParentDirectory(const std::string& path) {
  size_t slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;  // best effort: the file itself is already synced
  ::fsync(fd);
  ::close(fd);
}

// Reads up to `size` bytes of `fd` into `buf`, retrying short reads and
// EINTR. Sets *len; 0 or errno.
int ReadUpTo(int fd, char* buf, size_t size, size_t* len) {
  *len = 0;
  while (*len < size) {
    ssize_t n = ::read(fd, buf + *len, size - *len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (n == 0) break;
    *len += static_cast<size_t>(n);
  }
  return 0;
}

// Reads the key file at `path`. A missing file is kNotFound so the caller
// can decide whether to create it.
Result<MasterKey> ReadKeyFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT) return NotFoundError("master key file " + path + " does not exist");
    return UnavailableError("cannot open master key file " + path + ": " + ErrnoMessage(err));
  }
  // fstat on the open descriptor: the mode checked is that of the file read.
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return UnavailableError("cannot stat master key file " + path + ": " + ErrnoMessage(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return FailedPreconditionError("master key file " + path + " is not a regular file");
  }
  if ((st.st_mode & 077) != 0) {
    ::close(fd);
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return FailedPreconditionError("master key file " + path + " has mode " + mode +
                                   ", open to group or others; run: chmod 600 " + path);
  }
  // A stack buffer, wiped below, so the encoded key leaves no heap copy.
  char buf[kMaxKeyFileBytes + 1];
  size_t len = 0;
  int err = ReadUpTo(fd, buf, sizeof buf, &len);
  ::close(fd);
  std::optional<Result<MasterKey>> key;
  if (err == 0 && len <= kMaxKeyFileBytes) key.emplace(MasterKey::FromBase64({buf, len}));
  sodium_memzero(buf, sizeof buf);
  if (err != 0) {
    return UnavailableError("cannot read master key file " + path + ": " + ErrnoMessage(err));
  }
  if (!key) return InvalidArgumentError("master key file " + path + " is too large to hold a key");
  if (!key->ok()) {
    return Status(key->status().code(), "master key file " + path + ": " + key->status().message());
  }
  return std::move(*key);
}

// Creates the key file at `path` holding a fresh key or, when another process
// got there first, returns the key that process wrote.
//
// The key goes to a private temporary file that is then hard-linked into
// place: link() fails when `path` exists, and no reader ever sees a partly
// written key file. Filesystems without hard links fall back to creating
// `path` itself with O_EXCL.
Result<MasterKey> CreateKeyFile(const std::string& path) {
  auto key = MasterKey::Generate();
  if (!key.ok()) return key.status();

  // "<base64>\n" on the stack, wiped before returning.
  char line[sodium_base64_ENCODED_LEN(MasterKey::kSize, sodium_base64_VARIANT_ORIGINAL) + 1];
  std::string_view bytes = key->bytes();
  sodium_bin2base64(line, sizeof line - 1, reinterpret_cast<const unsigned char*>(bytes.data()),
                    bytes.size(), sodium_base64_VARIANT_ORIGINAL);
  size_t line_len = std::strlen(line);
  line[line_len++] = '\n';

  unsigned char suffix[8];
  randombytes_buf(suffix, sizeof suffix);
  char suffix_hex[sizeof suffix * 2 + 1];
  sodium_bin2hex(suffix_hex, sizeof suffix_hex, suffix, sizeof suffix);
  std::string temp = path + ".tmp-" + suffix_hex;

  int err = WriteNewFile(temp, line, line_len);
  if (err == 0) {
    err = ::link(temp.c_str(), path.c_str()) == 0 ? 0 : errno;
    ::unlink(temp.c_str());
    if (err == EPERM) err = WriteNewFile(path, line, line_len);  // no hard links here
  }
  sodium_memzero(line, sizeof line);

  if (err == EEXIST) {
    // Another process created it first: use its key, so both agree.
    auto theirs = ReadKeyFile(path);
    if (!theirs.ok() && theirs.status().code() == StatusCode::kNotFound) {
      return UnavailableError("master key file " + path + " vanished while being created");
    }
    return theirs;
  }
  if (err != 0) {
    return UnavailableError("cannot create master key file " + path + ": " + ErrnoMessage(err));
  }
  SyncParentDirectory(path);
  return key;
}

}  // namespace

Status InitCrypto() {
  static const Status status = [] {
    if (!SodiumReady()) return FailedPreconditionError("libsodium failed to initialize");
    if (crypto_aead_aes256gcm_is_available() == 0) {
      return FailedPreconditionError(
          "AES-256-GCM is unavailable: this CPU lacks the AES-NI and PCLMUL instructions "
          "libsodium requires for it");
    }
    return Status::Ok();
  }();
  return status;
}

// --- SecretString -----------------------------------------------------------

SecretString::SecretString(std::string_view plain) {
  if (plain.empty()) return;
  char* data = AllocSecure(plain.size());
  std::memcpy(data, plain.data(), plain.size());
  *this = Adopt(data, plain.size());
}

SecretString SecretString::Adopt(char* data, size_t size) {
  assert((data == nullptr) == (size == 0));
  SecretString s;
  s.data_ = data;
  s.size_ = size;
  // Read-only from here on: a stray write through a dangling pointer faults
  // instead of corrupting the secret.
  if (data != nullptr) sodium_mprotect_readonly(data);
  return s;
}

SecretString::SecretString(SecretString&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

SecretString& SecretString::operator=(SecretString&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) sodium_free(data_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

SecretString::~SecretString() {
  // sodium_free makes the pages writable again, wipes them and unmaps them.
  if (data_ != nullptr) sodium_free(data_);
}

// --- MasterKey --------------------------------------------------------------

Result<MasterKey> MasterKey::Generate() {
  if (!SodiumReady()) return FailedPreconditionError("libsodium failed to initialize");
  char* data = AllocSecure(kSize);
  randombytes_buf(data, kSize);
  SecretString secret = SecretString::Adopt(data, kSize);
  std::string key_id = ComputeKeyId(secret.view());
  return MasterKey(std::move(secret), std::move(key_id));
}

Result<MasterKey> MasterKey::FromBase64(std::string_view text) {
  if (!SodiumReady()) return FailedPreconditionError("libsodium failed to initialize");
  text = TrimSpace(text);
  // Decoded straight into sodium memory. Input that decodes to more than
  // kSize bytes fails to decode at all.
  char* data = AllocSecure(kSize);
  auto* out = reinterpret_cast<unsigned char*>(data);
  size_t len = 0;
  bool decoded = DecodeBase64(text, sodium_base64_VARIANT_ORIGINAL, out, kSize, &len) ||
                 DecodeBase64(text, sodium_base64_VARIANT_ORIGINAL_NO_PADDING, out, kSize, &len);
  if (!decoded || len != kSize) {
    sodium_free(data);
    return InvalidArgumentError("master key must be standard base64 of exactly 32 bytes");
  }
  SecretString secret = SecretString::Adopt(data, kSize);
  std::string key_id = ComputeKeyId(secret.view());
  return MasterKey(std::move(secret), std::move(key_id));
}

std::string MasterKey::ToBase64() const {
  std::string_view key = bytes();
  return EncodeBase64(reinterpret_cast<const unsigned char*>(key.data()), key.size());
}

Result<MasterKey> LoadMasterKey(const MasterKeyOptions& options) {
  if (!options.env_var.empty()) {
    const char* value = std::getenv(options.env_var.c_str());
    if (value != nullptr && value[0] != '\0') {
      auto key = MasterKey::FromBase64(value);
      if (!key.ok()) {
        return Status(key.status().code(), "$" + options.env_var + ": " + key.status().message());
      }
      return key;
    }
  }
  if (options.key_file.empty()) {
    std::string how =
        options.env_var.empty()
            ? std::string("configure a master key file")
            : "set $" + options.env_var + " to a base64 32-byte key or configure a master key file";
    return FailedPreconditionError("no master key: " + how);
  }
  auto key = ReadKeyFile(options.key_file);
  if (key.ok() || key.status().code() != StatusCode::kNotFound) return key;
  if (!options.create_if_missing) {
    return FailedPreconditionError("master key file " + options.key_file +
                                   " does not exist and creating it is disabled");
  }
  return CreateKeyFile(options.key_file);
}

// --- KeyCipher --------------------------------------------------------------

Result<std::unique_ptr<KeyCipher>> KeyCipher::Create(MasterKey key) {
  SWITCHBOARD_RETURN_IF_ERROR(InitCrypto());
  if (key.bytes().size() != MasterKey::kSize) {
    return InvalidArgumentError("master key is empty (moved from?)");
  }
  char* state = AllocSecure(sizeof(crypto_aead_aes256gcm_state));
  assert(reinterpret_cast<uintptr_t>(state) % alignof(crypto_aead_aes256gcm_state) == 0);
  crypto_aead_aes256gcm_beforenm(reinterpret_cast<crypto_aead_aes256gcm_state*>(state),
                                 reinterpret_cast<const unsigned char*>(key.bytes().data()));
  return std::unique_ptr<KeyCipher>(new KeyCipher(
      std::move(key), SecretString::Adopt(state, sizeof(crypto_aead_aes256gcm_state))));
}

Result<std::string> KeyCipher::Encrypt(std::string_view plaintext,
                                       std::string_view backend_id) const {
  if (plaintext.size() > kMaxPlaintextBytes) {
    return InvalidArgumentError("API key is too long (at most " +
                                std::to_string(kMaxPlaintextBytes) + " bytes)");
  }
  std::vector<unsigned char> payload(kNonceBytes + plaintext.size() + kTagBytes);
  unsigned char* nonce = payload.data();
  randombytes_buf(nonce, kNonceBytes);
  unsigned long long ciphertext_len = 0;
  crypto_aead_aes256gcm_encrypt_afternm(
      payload.data() + kNonceBytes, &ciphertext_len,
      reinterpret_cast<const unsigned char*>(plaintext.data()), plaintext.size(),
      reinterpret_cast<const unsigned char*>(backend_id.data()), backend_id.size(),
      /*nsec=*/nullptr, nonce,
      reinterpret_cast<const crypto_aead_aes256gcm_state*>(state_.view().data()));
  assert(ciphertext_len == plaintext.size() + kTagBytes);
  std::string blob(kBlobPrefix);
  blob += key_id();
  blob += ':';
  blob += EncodeBase64(payload.data(), payload.size());
  return blob;
}

Result<SecretString> KeyCipher::Decrypt(std::string_view blob, std::string_view backend_id) const {
  ParsedBlob parsed;
  if (!ParseBlob(blob, &parsed)) return MalformedBlobError();
  if (parsed.key_id != key_id()) {
    return FailedPreconditionError("encrypted under master key " + std::string(parsed.key_id) +
                                   ", current key is " + key_id());
  }
  const unsigned char* nonce = parsed.payload.data();
  const unsigned char* ciphertext = nonce + kNonceBytes;
  size_t ciphertext_len = parsed.payload.size() - kNonceBytes;
  size_t plain_len = ciphertext_len - kTagBytes;
  // Straight into sodium memory; at least one byte so the pointer is real.
  char* plain = AllocSecure(plain_len > 0 ? plain_len : 1);
  unsigned long long out_len = 0;
  int rc = crypto_aead_aes256gcm_decrypt_afternm(
      reinterpret_cast<unsigned char*>(plain), &out_len, /*nsec=*/nullptr, ciphertext,
      ciphertext_len, reinterpret_cast<const unsigned char*>(backend_id.data()), backend_id.size(),
      nonce, reinterpret_cast<const crypto_aead_aes256gcm_state*>(state_.view().data()));
  if (rc != 0 || out_len != plain_len) {
    sodium_free(plain);
    return InvalidArgumentError(
        "encrypted key does not authenticate (wrong master key, tampered, or belongs to "
        "another backend)");
  }
  if (plain_len == 0) {
    sodium_free(plain);
    return SecretString();
  }
  return SecretString::Adopt(plain, plain_len);
}

std::optional<std::string> KeyCipher::BlobKeyId(std::string_view blob) {
  ParsedBlob parsed;
  if (!ParseBlob(blob, &parsed)) return std::nullopt;
  return std::string(parsed.key_id);
}

// --- Rotation ---------------------------------------------------------------

Status RotateMasterKey(Storage& storage, const KeyCipher& from, const KeyCipher& to) {
  auto backends = storage.ListBackends(BackendFilter{});
  if (!backends.ok()) return backends.status();
  std::vector<ApiKeyUpdate> updates;
  for (const Backend& backend : *backends) {
    if (backend.api_key_ciphertext.empty()) continue;
    // Already rotated by an earlier, interrupted run.
    if (KeyCipher::BlobKeyId(backend.api_key_ciphertext) == to.key_id()) continue;
    auto plain = from.Decrypt(backend.api_key_ciphertext, backend.id);
    if (!plain.ok()) {
      return Status(plain.status().code(), "backend " + backend.name + " (" + backend.id +
                                               "): " + plain.status().message());
    }
    auto blob = to.Encrypt(plain->view(), backend.id);
    if (!blob.ok()) return blob.status();
    updates.push_back(ApiKeyUpdate{backend.id, std::move(*blob)});
  }
  if (updates.empty()) return Status::Ok();
  return storage.ReplaceApiKeys(updates);
}

}  // namespace switchboard
