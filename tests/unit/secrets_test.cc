#include "switchboard/secrets.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <unordered_set>
#include <utility>
#include <vector>

#include "support/makers.h"
#include "switchboard/storage.h"

namespace switchboard {
namespace {

using ::switchboard::testing::MakeBackend;

constexpr std::string_view kAlphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
constexpr size_t kNonceBytes = 12;
constexpr size_t kTagBytes = 16;
constexpr std::string_view kNotAuthentic = "does not authenticate";

// Standard padded base64, written out here so the tests do not share code
// (or a bug) with the implementation.
std::string Base64Encode(std::string_view in) {
  std::string out;
  for (size_t i = 0; i < in.size(); i += 3) {
    uint32_t n = static_cast<uint8_t>(in[i]) << 16;
    if (i + 1 < in.size()) n |= static_cast<uint8_t>(in[i + 1]) << 8;
    if (i + 2 < in.size()) n |= static_cast<uint8_t>(in[i + 2]);
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
    out += i + 1 < in.size() ? kAlphabet[(n >> 6) & 63] : '=';
    out += i + 2 < in.size() ? kAlphabet[n & 63] : '=';
  }
  return out;
}

std::string Base64Decode(std::string_view in) {
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    if (c == '=') break;
    acc = (acc << 6) | static_cast<uint32_t>(kAlphabet.find(c));
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  return out;
}

// "sb1:<kid>:" and the decoded nonce || ciphertext || tag of a blob.
std::pair<std::string, std::string> SplitBlob(const std::string& blob) {
  size_t colon = blob.find(':', 4);
  return {blob.substr(0, colon + 1), Base64Decode(blob.substr(colon + 1))};
}

std::unique_ptr<KeyCipher> NewCipher() {
  auto key = MasterKey::Generate();
  REQUIRE(key.ok());
  auto cipher = KeyCipher::Create(std::move(*key));
  REQUIRE(cipher.ok());
  return std::move(*cipher);
}

std::string Encrypt(const KeyCipher& cipher, std::string_view plain, std::string_view backend) {
  auto blob = cipher.Encrypt(plain, backend);
  REQUIRE(blob.ok());
  return *blob;
}

// A fresh directory under the system temp dir, removed with its contents.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "sb_secrets_XXXXXX").string();
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string File(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// Sets an environment variable for one test.
class ScopedEnv {
 public:
  ScopedEnv(std::string name, const std::string& value) : name_(std::move(name)) {
    REQUIRE(::setenv(name_.c_str(), value.c_str(), 1) == 0);
  }
  ~ScopedEnv() { ::unsetenv(name_.c_str()); }

 private:
  std::string name_;
};

void WriteFile(const std::string& path, const std::string& contents, mode_t mode) {
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << contents;
  }
  REQUIRE(::chmod(path.c_str(), mode) == 0);
}

mode_t FileMode(const std::string& path) {
  struct stat st;
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

// Backends stored with API keys "sk-<name>" encrypted under `cipher`.
std::unique_ptr<Storage> StorageWithKeys(const KeyCipher& cipher,
                                         const std::vector<std::string>& names) {
  auto storage = NewMemoryStorage();
  for (const std::string& name : names) {
    Backend b = MakeBackend(name);
    b.api_key_ciphertext = Encrypt(cipher, "sk-" + name, b.id);
    REQUIRE(storage->CreateBackend(b).ok());
  }
  return storage;
}

std::map<std::string, std::string> StoredCiphertexts(Storage& storage) {
  auto backends = storage.ListBackends(BackendFilter{});
  REQUIRE(backends.ok());
  std::map<std::string, std::string> out;
  for (const Backend& b : *backends) out[b.id] = b.api_key_ciphertext;
  return out;
}

}  // namespace

// --- InitCrypto ---------------------------------------------------------------

TEST_CASE("InitCrypto succeeds on this machine and can be called repeatedly", "[secrets]") {
  REQUIRE(InitCrypto().ok());
  CHECK(InitCrypto().ok());
}

// --- SecretString -------------------------------------------------------------

TEST_CASE("SecretString holds a copy of its bytes, NULs included", "[secrets]") {
  std::string plain("sk-\0abc", 7);
  SecretString secret(plain);
  plain[0] = 'X';
  CHECK(secret.view() == std::string_view("sk-\0abc", 7));
  CHECK(secret.size() == 7);
  CHECK(SecretString("").empty());
  CHECK(SecretString().view().empty());
}

TEST_CASE("SecretString move construction and assignment leave the source empty", "[secrets]") {
  SecretString a("sk-first");
  SecretString b(std::move(a));
  CHECK(a.empty());  // NOLINT(bugprone-use-after-move): moved-from state is specified
  CHECK(a.view().empty());
  CHECK(b.view() == "sk-first");

  SecretString c("sk-second");
  c = std::move(b);
  CHECK(b.empty());  // NOLINT(bugprone-use-after-move)
  CHECK(c.view() == "sk-first");

  c = std::move(c);  // self-move keeps the value
  CHECK(c.view() == "sk-first");
}

// --- MasterKey ----------------------------------------------------------------

TEST_CASE("MasterKey round-trips through base64 with the same key id", "[secrets]") {
  auto key = MasterKey::Generate();
  REQUIRE(key.ok());
  REQUIRE(key->bytes().size() == MasterKey::kSize);
  std::string b64 = key->ToBase64();
  CHECK(b64.size() == 44);
  CHECK(b64 == Base64Encode(key->bytes()));

  auto again = MasterKey::FromBase64(b64);
  REQUIRE(again.ok());
  CHECK(again->bytes() == key->bytes());
  CHECK(again->key_id() == key->key_id());
}

TEST_CASE("MasterKey::FromBase64 accepts unpadded input and surrounding whitespace", "[secrets]") {
  auto key = MasterKey::Generate();
  REQUIRE(key.ok());
  std::string b64 = key->ToBase64();
  std::string unpadded = b64.substr(0, b64.find('='));
  for (const std::string& text : {unpadded, "  " + b64 + "\n", "\t" + unpadded + "\r\n"}) {
    auto parsed = MasterKey::FromBase64(text);
    REQUIRE(parsed.ok());
    CHECK(parsed->key_id() == key->key_id());
  }
}

TEST_CASE("MasterKey::FromBase64 rejects anything but 32 bytes of base64 without echoing it",
          "[secrets]") {
  std::string b64 = Base64Encode(std::string(32, 'k'));
  const std::vector<std::string> bad = {
      "",
      "   \n",
      Base64Encode(std::string(31, 'k')),
      Base64Encode(std::string(33, 'k')),
      Base64Encode(std::string(64, 'k')),
      "not-base64-at-all-but-long-enough-to-look-like-a-key!!",
      b64.substr(0, 40),
      "x" + b64,
      b64.substr(0, 20) + " " + b64.substr(20),
      // URL-safe alphabet is not standard base64.
      "_-" + b64.substr(2),
  };
  for (const std::string& text : bad) {
    auto key = MasterKey::FromBase64(text);
    REQUIRE_FALSE(key.ok());
    CHECK(key.status().code() == StatusCode::kInvalidArgument);
    std::string_view trimmed = text;
    while (!trimmed.empty() && std::isspace(static_cast<unsigned char>(trimmed.front()))) {
      trimmed.remove_prefix(1);
    }
    if (trimmed.size() >= 4) {
      CHECK(key.status().message().find(trimmed.substr(0, 4)) == std::string::npos);
    }
  }
}

TEST_CASE("MasterKey key ids are 8 lowercase hex characters and differ between keys", "[secrets]") {
  std::set<std::string> ids;
  for (int i = 0; i < 50; ++i) {
    auto key = MasterKey::Generate();
    REQUIRE(key.ok());
    const std::string& id = key->key_id();
    REQUIRE(id.size() == 8);
    CHECK(id.find_first_not_of("0123456789abcdef") == std::string::npos);
    // The id is derived from the key but is not a piece of it.
    CHECK(key->ToBase64().find(id) == std::string::npos);
    ids.insert(id);
  }
  CHECK(ids.size() == 50);
}

TEST_CASE("MasterKey key id is the keyed BLAKE2b of the key, truncated to 4 bytes", "[secrets]") {
  // Stored blobs name their key by id, so the derivation is part of the
  // format. Expected values from Python: hashlib.blake2b(key,
  // key=b"switchboard key id v1", digest_size=16).hexdigest()[:8].
  std::string counting;
  for (int i = 0; i < 32; ++i) counting += static_cast<char>(i);
  auto zeros = MasterKey::FromBase64(Base64Encode(std::string(32, '\0')));
  auto ascending = MasterKey::FromBase64(Base64Encode(counting));
  REQUIRE(zeros.ok());
  REQUIRE(ascending.ok());
  CHECK(zeros->key_id() == "c2c6464d");
  CHECK(ascending->key_id() == "7f496d80");
}

// --- LoadMasterKey ------------------------------------------------------------

TEST_CASE("LoadMasterKey prefers the environment variable over the key file", "[secrets]") {
  TempDir dir;
  auto file_key = MasterKey::Generate();
  auto env_key = MasterKey::Generate();
  REQUIRE(file_key.ok());
  REQUIRE(env_key.ok());
  std::string path = dir.File("master.key");
  WriteFile(path, file_key->ToBase64() + "\n", 0600);
  ScopedEnv env("SWITCHBOARD_TEST_MASTER_KEY_ENV_WINS", env_key->ToBase64());

  auto loaded =
      LoadMasterKey({.env_var = "SWITCHBOARD_TEST_MASTER_KEY_ENV_WINS", .key_file = path});
  REQUIRE(loaded.ok());
  CHECK(loaded->key_id() == env_key->key_id());
}

TEST_CASE("LoadMasterKey reports a malformed environment variable by name, not value",
          "[secrets]") {
  ScopedEnv env("SWITCHBOARD_TEST_MASTER_KEY_MALFORMED", "c2stbm90LWEta2V5");
  auto loaded = LoadMasterKey({.env_var = "SWITCHBOARD_TEST_MASTER_KEY_MALFORMED"});
  REQUIRE_FALSE(loaded.ok());
  CHECK(loaded.status().code() == StatusCode::kInvalidArgument);
  CHECK(loaded.status().message().find("SWITCHBOARD_TEST_MASTER_KEY_MALFORMED") !=
        std::string::npos);
  CHECK(loaded.status().message().find("c2stbm90") == std::string::npos);
}

TEST_CASE("LoadMasterKey falls back to the key file when the variable is unset or empty",
          "[secrets]") {
  TempDir dir;
  auto file_key = MasterKey::Generate();
  REQUIRE(file_key.ok());
  std::string path = dir.File("master.key");
  WriteFile(path, file_key->ToBase64() + "\n", 0600);
  ScopedEnv env("SWITCHBOARD_TEST_MASTER_KEY_EMPTY", "");

  for (std::string var :
       {"SWITCHBOARD_TEST_MASTER_KEY_EMPTY", "SWITCHBOARD_TEST_MASTER_KEY_NEVER_SET", ""}) {
    auto loaded = LoadMasterKey({.env_var = var, .key_file = path});
    REQUIRE(loaded.ok());
    CHECK(loaded->key_id() == file_key->key_id());
  }
}

TEST_CASE("LoadMasterKey creates a missing key file with mode 0600 and reloads the same key",
          "[secrets]") {
  TempDir dir;
  std::string path = dir.File("master.key");
  auto created = LoadMasterKey({.env_var = "", .key_file = path});
  REQUIRE(created.ok());
  CHECK(FileMode(path) == 0600);

  std::ifstream in(path);
  std::string contents((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK(contents == created->ToBase64() + "\n");
  // No temporary file is left behind.
  CHECK(std::distance(std::filesystem::directory_iterator(dir.File("")),
                      std::filesystem::directory_iterator()) == 1);

  auto reloaded = LoadMasterKey({.env_var = "", .key_file = path});
  REQUIRE(reloaded.ok());
  CHECK(reloaded->key_id() == created->key_id());
  CHECK(reloaded->bytes() == created->bytes());
}

TEST_CASE("LoadMasterKey agrees on one key when several threads create the file at once",
          "[secrets]") {
  TempDir dir;
  std::string path = dir.File("master.key");
  std::vector<std::optional<std::string>> ids(4);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < ids.size(); ++i) {
    threads.emplace_back([&, i] {
      auto key = LoadMasterKey({.env_var = "", .key_file = path});
      if (key.ok()) ids[i] = key->key_id();
    });
  }
  for (std::thread& t : threads) t.join();
  for (const auto& id : ids) {
    REQUIRE(id.has_value());
    CHECK(*id == *ids[0]);
  }
}

TEST_CASE("LoadMasterKey refuses a key file that group or others can read", "[secrets]") {
  TempDir dir;
  auto key = MasterKey::Generate();
  REQUIRE(key.ok());
  std::string path = dir.File("master.key");
  WriteFile(path, key->ToBase64() + "\n", 0644);

  auto loaded = LoadMasterKey({.env_var = "", .key_file = path});
  REQUIRE_FALSE(loaded.ok());
  CHECK(loaded.status().code() == StatusCode::kFailedPrecondition);
  CHECK(loaded.status().message().find("chmod 600") != std::string::npos);
  CHECK(loaded.status().message().find(key->ToBase64().substr(0, 8)) == std::string::npos);
}

TEST_CASE("LoadMasterKey refuses a malformed key file without echoing it", "[secrets]") {
  TempDir dir;
  std::string path = dir.File("master.key");
  WriteFile(path, "c2stbm90LWEta2V5LWF0LWFsbA==\n", 0600);

  auto loaded = LoadMasterKey({.env_var = "", .key_file = path});
  REQUIRE_FALSE(loaded.ok());
  CHECK(loaded.status().code() == StatusCode::kInvalidArgument);
  CHECK(loaded.status().message().find(path) != std::string::npos);
  CHECK(loaded.status().message().find("c2stbm90") == std::string::npos);
}

TEST_CASE("LoadMasterKey refuses an empty or oversized key file", "[secrets]") {
  TempDir dir;
  for (const std::string& contents : {std::string(), std::string(1 << 20, 'A')}) {
    std::string path = dir.File("master.key");
    WriteFile(path, contents, 0600);
    auto loaded = LoadMasterKey({.env_var = "", .key_file = path});
    REQUIRE_FALSE(loaded.ok());
    CHECK(loaded.status().code() == StatusCode::kInvalidArgument);
  }
}

TEST_CASE("LoadMasterKey fails when no key source is configured", "[secrets]") {
  auto loaded = LoadMasterKey({.env_var = "SWITCHBOARD_TEST_MASTER_KEY_NEVER_SET", .key_file = ""});
  REQUIRE_FALSE(loaded.ok());
  CHECK(loaded.status().code() == StatusCode::kFailedPrecondition);
}

TEST_CASE("LoadMasterKey does not create a missing key file when told not to", "[secrets]") {
  TempDir dir;
  std::string path = dir.File("master.key");
  auto loaded = LoadMasterKey({.env_var = "", .key_file = path, .create_if_missing = false});
  REQUIRE_FALSE(loaded.ok());
  CHECK(loaded.status().code() == StatusCode::kFailedPrecondition);
  CHECK_FALSE(std::filesystem::exists(path));
}

TEST_CASE("LoadMasterKey reports a key file it cannot create as unavailable", "[secrets]") {
  TempDir dir;
  auto loaded = LoadMasterKey({.env_var = "", .key_file = dir.File("missing-dir/master.key")});
  REQUIRE_FALSE(loaded.ok());
  CHECK(loaded.status().code() == StatusCode::kUnavailable);
}

// --- KeyCipher ----------------------------------------------------------------

TEST_CASE("KeyCipher decrypts what it encrypted", "[secrets]") {
  auto cipher = NewCipher();
  const std::vector<std::string> plains = {
      "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789",
      "",
      std::string("bin\0ary\xff\x80", 9),
      std::string(64 * 1024, 'k'),
  };
  for (const std::string& plain : plains) {
    std::string blob = Encrypt(*cipher, plain, "bkd_one");
    auto decrypted = cipher->Decrypt(blob, "bkd_one");
    REQUIRE(decrypted.ok());
    CHECK(decrypted->view() == plain);
  }
}

TEST_CASE("KeyCipher output is sb1, the key id, and base64 of nonce, ciphertext and tag",
          "[secrets]") {
  auto cipher = NewCipher();
  std::string plain = "sk-ant-api03-secret-value";
  std::string blob = Encrypt(*cipher, plain, "bkd_one");
  auto [prefix, payload] = SplitBlob(blob);
  CHECK(prefix == "sb1:" + cipher->key_id() + ":");
  CHECK(payload.size() == kNonceBytes + plain.size() + kTagBytes);
  CHECK(Base64Encode(payload) == blob.substr(prefix.size()));
  CHECK(blob.find('\n') == std::string::npos);
}

TEST_CASE("KeyCipher ciphertext never contains the plaintext", "[secrets]") {
  auto cipher = NewCipher();
  std::string plain = "sk-live-0123456789abcdef0123456789abcdef";
  for (int i = 0; i < 100; ++i) {
    std::string blob = Encrypt(*cipher, plain, "bkd_one");
    std::string payload = SplitBlob(blob).second;
    CHECK(blob.find(plain) == std::string::npos);
    CHECK(payload.find(plain) == std::string::npos);
    CHECK(payload.find("sk-live") == std::string::npos);
    CHECK(blob.find(Base64Encode(plain).substr(0, 12)) == std::string::npos);
  }
}

TEST_CASE("KeyCipher uses a fresh nonce for each of 10,000 encryptions", "[secrets]") {
  auto cipher = NewCipher();
  std::unordered_set<std::string> blobs;
  std::unordered_set<std::string> nonces;
  for (int i = 0; i < 10000; ++i) {
    std::string blob = Encrypt(*cipher, "sk-same-plaintext", "bkd_one");
    nonces.insert(SplitBlob(blob).second.substr(0, kNonceBytes));
    blobs.insert(std::move(blob));
  }
  CHECK(blobs.size() == 10000);
  CHECK(nonces.size() == 10000);
}

TEST_CASE("KeyCipher rejects a blob with any payload byte altered", "[secrets]") {
  auto cipher = NewCipher();
  std::string blob = Encrypt(*cipher, "sk-tamper-target", "bkd_one");
  auto [prefix, payload] = SplitBlob(blob);
  for (size_t i = 0; i < payload.size(); ++i) {
    for (unsigned char flip : {0x01, 0x80, 0xff}) {
      std::string tampered = payload;
      tampered[i] = static_cast<char>(tampered[i] ^ flip);
      auto decrypted = cipher->Decrypt(prefix + Base64Encode(tampered), "bkd_one");
      INFO("byte " << i << " xor " << static_cast<int>(flip));
      REQUIRE_FALSE(decrypted.ok());
      CHECK(decrypted.status().code() == StatusCode::kInvalidArgument);
      CHECK(decrypted.status().message().find(kNotAuthentic) != std::string::npos);
    }
  }
}

TEST_CASE("KeyCipher rejects a blob with any character of its text changed", "[secrets]") {
  auto cipher = NewCipher();
  std::string blob = Encrypt(*cipher, "sk-tamper-target", "bkd_one");
  for (size_t i = 0; i < blob.size(); ++i) {
    for (char c : std::string(kAlphabet) + std::string("=: \n\0", 5)) {
      if (blob[i] == c) continue;
      std::string tampered = blob;
      tampered[i] = c;
      INFO("position " << i << " set to '" << c << "'");
      CHECK_FALSE(cipher->Decrypt(tampered, "bkd_one").ok());
    }
  }
}

TEST_CASE("KeyCipher rejects every truncation of a blob as malformed", "[secrets]") {
  auto cipher = NewCipher();
  std::string blob = Encrypt(*cipher, "sk-truncate-me", "bkd_one");
  for (size_t len = 0; len < blob.size(); ++len) {
    auto decrypted = cipher->Decrypt(blob.substr(0, len), "bkd_one");
    INFO("length " << len);
    REQUIRE_FALSE(decrypted.ok());
    CHECK(decrypted.status().code() == StatusCode::kInvalidArgument);
  }
}

TEST_CASE("KeyCipher rejects a payload too short to hold a nonce and tag", "[secrets]") {
  auto cipher = NewCipher();
  std::string prefix = "sb1:" + cipher->key_id() + ":";
  for (size_t len = 0; len < kNonceBytes + kTagBytes; ++len) {
    auto decrypted = cipher->Decrypt(prefix + Base64Encode(std::string(len, 'x')), "bkd_one");
    INFO("payload bytes " << len);
    REQUIRE_FALSE(decrypted.ok());
    CHECK(decrypted.status().message() == "malformed encrypted key");
  }
}

TEST_CASE("KeyCipher rejects garbage blobs as malformed", "[secrets]") {
  auto cipher = NewCipher();
  std::string kid = cipher->key_id();
  std::string good = Encrypt(*cipher, "sk-good", "bkd_one");
  std::string payload = good.substr(good.rfind(':') + 1);
  std::vector<std::string> garbage = {
      "",
      "sb1:",
      "sb1:zzzzzzzz:",
      "sb1:" + kid,
      "sb1:" + kid + ":",
      "sb1:" + kid + ":!!!!",
      "sb2:" + kid + ":" + payload,
      "SB1:" + kid + ":" + payload,
      "sb1:" + kid.substr(0, 7) + ":" + payload,
      "sb1:" + kid + "0:" + payload,
      "sb1:" + kid + ";" + payload,
      "sb1:ABCDEF01:" + payload,  // key ids are lowercase
      "sb1:" + kid + ":" + payload + "\n",
      "sb1:" + kid + ": " + payload,
      "sb1:" + kid + ":" + payload.substr(0, payload.find('=')),  // padding is required
      "sb1:" + kid + ":" + payload + "AAAA=",
      " " + good,
      std::string("sb1:") + '\0' + kid + ":" + payload,
      "sk-plaintext-key-someone-stored-raw",
      "sb1:" + kid + ":" + std::string(10 * 1024 * 1024, 'A'),
      std::string(10 * 1024 * 1024, 'A'),
  };
  for (const std::string& blob : garbage) {
    auto decrypted = cipher->Decrypt(blob, "bkd_one");
    INFO("blob starts " << blob.substr(0, 40));
    REQUIRE_FALSE(decrypted.ok());
    CHECK(decrypted.status().code() == StatusCode::kInvalidArgument);
    CHECK(decrypted.status().message() == "malformed encrypted key");
  }
}

TEST_CASE("KeyCipher survives random bytes as a blob", "[secrets]") {
  auto cipher = NewCipher();
  std::mt19937 rng(20260101);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_int_distribution<size_t> length(0, 200);
  std::string prefix = "sb1:" + cipher->key_id() + ":";
  for (int i = 0; i < 2000; ++i) {
    std::string junk(length(rng), '\0');
    for (char& c : junk) c = static_cast<char>(byte(rng));
    CHECK_FALSE(cipher->Decrypt(junk, "bkd_one").ok());
    CHECK_FALSE(cipher->Decrypt(prefix + junk, "bkd_one").ok());
    // Valid base64 of random bytes: well-formed, but never authentic.
    CHECK_FALSE(cipher->Decrypt(prefix + Base64Encode(junk), "bkd_one").ok());
  }
}

TEST_CASE("KeyCipher refuses a blob made under another master key by its key id", "[secrets]") {
  auto a = NewCipher();
  auto b = NewCipher();
  REQUIRE(a->key_id() != b->key_id());
  std::string blob = Encrypt(*b, "sk-from-b", "bkd_one");
  auto decrypted = a->Decrypt(blob, "bkd_one");
  REQUIRE_FALSE(decrypted.ok());
  CHECK(decrypted.status().code() == StatusCode::kFailedPrecondition);
  CHECK(decrypted.status().message() ==
        "encrypted under master key " + b->key_id() + ", current key is " + a->key_id());
}

TEST_CASE("KeyCipher reports a blob from another key under its own key id as not authentic",
          "[secrets]") {
  auto a = NewCipher();
  auto b = NewCipher();
  std::string blob = Encrypt(*b, "sk-from-b", "bkd_one");
  std::string relabeled = "sb1:" + a->key_id() + blob.substr(4 + 8);
  REQUIRE(KeyCipher::BlobKeyId(relabeled) == a->key_id());
  auto decrypted = a->Decrypt(relabeled, "bkd_one");
  REQUIRE_FALSE(decrypted.ok());
  CHECK(decrypted.status().code() == StatusCode::kInvalidArgument);
  CHECK(decrypted.status().message().find(kNotAuthentic) != std::string::npos);
}

TEST_CASE("KeyCipher binds a ciphertext to its backend id", "[secrets]") {
  auto cipher = NewCipher();
  std::string blob = Encrypt(*cipher, "sk-bound", "bkd_one");
  const std::vector<std::string> others = {"bkd_two", "bkd_on", "bkd_one ", "",
                                           std::string("bkd_one\0", 8)};
  for (const std::string& other : others) {
    auto decrypted = cipher->Decrypt(blob, other);
    INFO("backend id '" << other << "'");
    REQUIRE_FALSE(decrypted.ok());
    CHECK(decrypted.status().code() == StatusCode::kInvalidArgument);
    CHECK(decrypted.status().message().find(kNotAuthentic) != std::string::npos);
  }
  CHECK(cipher->Decrypt(blob, "bkd_one").ok());
}

TEST_CASE("KeyCipher decrypts under a second cipher built from the same key", "[secrets]") {
  auto key = MasterKey::Generate();
  REQUIRE(key.ok());
  auto copy = MasterKey::FromBase64(key->ToBase64());
  REQUIRE(copy.ok());
  auto first = KeyCipher::Create(std::move(*key));
  auto second = KeyCipher::Create(std::move(*copy));
  REQUIRE(first.ok());
  REQUIRE(second.ok());
  auto decrypted = (*second)->Decrypt(Encrypt(**first, "sk-shared", "bkd_one"), "bkd_one");
  REQUIRE(decrypted.ok());
  CHECK(decrypted->view() == "sk-shared");
}

TEST_CASE("KeyCipher refuses to encrypt an absurdly long key", "[secrets]") {
  auto cipher = NewCipher();
  auto blob = cipher->Encrypt(std::string(64 * 1024 + 1, 'k'), "bkd_one");
  REQUIRE_FALSE(blob.ok());
  CHECK(blob.status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("KeyCipher::Create refuses a moved-from master key", "[secrets]") {
  auto key = MasterKey::Generate();
  REQUIRE(key.ok());
  MasterKey taken = std::move(*key);
  auto cipher = KeyCipher::Create(std::move(*key));  // NOLINT(bugprone-use-after-move)
  REQUIRE_FALSE(cipher.ok());
  CHECK(cipher.status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("KeyCipher encrypts and decrypts from many threads at once", "[secrets]") {
  auto cipher = NewCipher();
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::string backend = "bkd_" + std::to_string(t);
      for (int i = 0; i < 250; ++i) {
        std::string plain = "sk-" + std::to_string(t) + "-" + std::to_string(i);
        auto blob = cipher->Encrypt(plain, backend);
        if (!blob.ok()) {
          ++failures;
          continue;
        }
        auto decrypted = cipher->Decrypt(*blob, backend);
        if (!decrypted.ok() || decrypted->view() != plain) ++failures;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  CHECK(failures == 0);
}

TEST_CASE("KeyCipher::BlobKeyId names the key of well-formed blobs only", "[secrets]") {
  auto cipher = NewCipher();
  std::string blob = Encrypt(*cipher, "sk-id", "bkd_one");
  CHECK(KeyCipher::BlobKeyId(blob) == cipher->key_id());
  CHECK(KeyCipher::BlobKeyId("") == std::nullopt);
  CHECK(KeyCipher::BlobKeyId("sb1:") == std::nullopt);
  CHECK(KeyCipher::BlobKeyId("sb1:zzzzzzzz:") == std::nullopt);
  CHECK(KeyCipher::BlobKeyId("sk-plaintext") == std::nullopt);
  CHECK(KeyCipher::BlobKeyId(blob.substr(0, blob.size() - 8)) == std::nullopt);
}

// --- RotateMasterKey ----------------------------------------------------------

TEST_CASE("RotateMasterKey re-encrypts every key under the new master key", "[secrets]") {
  auto from = NewCipher();
  auto to = NewCipher();
  auto storage = StorageWithKeys(*from, {"alpha", "beta", "gamma"});
  Backend keyless = MakeBackend("no-key");
  REQUIRE(storage->CreateBackend(keyless).ok());

  REQUIRE(RotateMasterKey(*storage, *from, *to).ok());

  auto backends = storage->ListBackends(BackendFilter{});
  REQUIRE(backends.ok());
  REQUIRE(backends->size() == 4);
  for (const Backend& b : *backends) {
    INFO(b.name);
    if (b.name == "no-key") {
      CHECK(b.api_key_ciphertext.empty());
      continue;
    }
    CHECK(KeyCipher::BlobKeyId(b.api_key_ciphertext) == to->key_id());
    auto plain = to->Decrypt(b.api_key_ciphertext, b.id);
    REQUIRE(plain.ok());
    CHECK(plain->view() == "sk-" + b.name);
    CHECK_FALSE(from->Decrypt(b.api_key_ciphertext, b.id).ok());
  }
}

TEST_CASE("RotateMasterKey changes nothing when one stored key is corrupt", "[secrets]") {
  auto from = NewCipher();
  auto to = NewCipher();
  auto storage = StorageWithKeys(*from, {"alpha", "gamma"});
  Backend corrupt = MakeBackend("beta");
  auto [prefix, payload] = SplitBlob(Encrypt(*from, "sk-beta", corrupt.id));
  payload.back() = static_cast<char>(payload.back() ^ 0x01);
  corrupt.api_key_ciphertext = prefix + Base64Encode(payload);
  REQUIRE(storage->CreateBackend(corrupt).ok());
  auto before = StoredCiphertexts(*storage);

  Status status = RotateMasterKey(*storage, *from, *to);
  REQUIRE_FALSE(status.ok());
  CHECK(status.code() == StatusCode::kInvalidArgument);
  CHECK(status.message().find("beta") != std::string::npos);
  CHECK(StoredCiphertexts(*storage) == before);
}

TEST_CASE("RotateMasterKey run a second time changes nothing", "[secrets]") {
  auto from = NewCipher();
  auto to = NewCipher();
  auto storage = StorageWithKeys(*from, {"alpha", "beta"});
  REQUIRE(RotateMasterKey(*storage, *from, *to).ok());
  auto after_first = StoredCiphertexts(*storage);

  REQUIRE(RotateMasterKey(*storage, *from, *to).ok());
  // Re-encrypting would pick fresh nonces, so equal blobs mean untouched.
  CHECK(StoredCiphertexts(*storage) == after_first);
}

TEST_CASE("RotateMasterKey finishes a rotation that covered only some keys", "[secrets]") {
  auto from = NewCipher();
  auto to = NewCipher();
  auto storage = StorageWithKeys(*from, {"alpha", "beta"});
  Backend done = MakeBackend("already-rotated");
  done.api_key_ciphertext = Encrypt(*to, "sk-already-rotated", done.id);
  REQUIRE(storage->CreateBackend(done).ok());

  REQUIRE(RotateMasterKey(*storage, *from, *to).ok());

  auto stored = StoredCiphertexts(*storage);
  CHECK(stored[done.id] == done.api_key_ciphertext);
  for (const auto& [id, blob] : stored) {
    INFO(id);
    CHECK(to->Decrypt(blob, id).ok());
  }
}

}  // namespace switchboard
