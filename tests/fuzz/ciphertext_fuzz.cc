// The stored-key decoder (KeyCipher::Decrypt, BlobKeyId, MasterKey::FromBase64
// in lib/src/crypto/secrets.cc) over arbitrary blobs, as a tampered or
// corrupted database row would hold them.
// Invariants: no crash or sanitizer report; a blob either decrypts or fails
// with kInvalidArgument / kFailedPrecondition; a blob that decrypts does so
// only for the backend id it was bound to; a failed decryption's message never
// contains the blob's payload.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "fuzz_util.h"
#include "switchboard/secrets.h"

namespace {

// A fixed master key, so that seeds can hold blobs that really decrypt
// (tests/fuzz/corpus/ciphertext_fuzz/valid_*).
constexpr char kMasterKey[] = "c3dpdGNoYm9hcmQtZnV6ei1tYXN0ZXIta2V5LTMyYiE=";

const switchboard::KeyCipher& Cipher() {
  static const std::unique_ptr<switchboard::KeyCipher> cipher = [] {
    FUZZ_CHECK(switchboard::InitCrypto().ok());
    auto key = switchboard::MasterKey::FromBase64(kMasterKey);
    FUZZ_CHECK(key.ok());
    auto c = switchboard::KeyCipher::Create(std::move(*key));
    FUZZ_CHECK(c.ok());
    return std::move(*c);
  }();
  return *cipher;
}

// `s` with every letter and digit moved to the next one in its class, so
// text echoed from the input changes with it and constant text does not.
std::string Rotate(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'a' && c <= 'z') c = static_cast<char>('a' + (c - 'a' + 1) % 26);
    else if (c >= 'A' && c <= 'Z') c = static_cast<char>('A' + (c - 'A' + 1) % 26);
    else if (c >= '0' && c <= '9') c = static_cast<char>('0' + (c - '0' + 1) % 10);
  }
  return out;
}

// Whether `message(input)` echoes `part` of the input: it contains `part`,
// and for the rotated input it contains the rotated part. (A constant message
// that merely happens to contain the same text fails the second test.)
template <typename Fn>
bool Echoes(Fn message, std::string_view input, std::string_view part) {
  if (part.size() < 12 || message(input).find(part) == std::string::npos) return false;
  const std::string rotated = Rotate(part);
  if (rotated == part) return true;
  return message(Rotate(input)).find(rotated) != std::string::npos;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view blob = switchboard::fuzz::AsView(data, size);
  const switchboard::KeyCipher& cipher = Cipher();

  (void)switchboard::KeyCipher::BlobKeyId(blob);
  auto plain = cipher.Decrypt(blob, "bkd_fuzz");
  if (plain.ok()) {
    // Bound to its backend: the same blob under another id must not open.
    FUZZ_CHECK(!cipher.Decrypt(blob, "bkd_other").ok());
    auto again = cipher.Encrypt(plain->view(), "bkd_fuzz");
    FUZZ_CHECK(again.ok());
    auto round = cipher.Decrypt(*again, "bkd_fuzz");
    FUZZ_CHECK(round.ok() && round->view() == plain->view());
  } else {
    const auto code = plain.status().code();
    FUZZ_CHECK(code == switchboard::StatusCode::kInvalidArgument ||
               code == switchboard::StatusCode::kFailedPrecondition);
    const size_t colon = blob.rfind(':');
    const std::string_view payload = colon == std::string_view::npos ? blob : blob.substr(colon + 1);
    const auto decrypt_message = [&cipher](std::string_view b) {
      auto r = cipher.Decrypt(b, "bkd_fuzz");
      return r.ok() ? std::string() : r.status().message();
    };
    FUZZ_CHECK(!Echoes(decrypt_message, blob, payload));
  }

  const auto key_message = [](std::string_view b) {
    auto key = switchboard::MasterKey::FromBase64(b);
    return key.ok() ? std::string() : key.status().message();
  };
  FUZZ_CHECK(!Echoes(key_message, blob, blob));
  return 0;
}
