#include "import.h"

#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "support/makers.h"

namespace {

using switchboard::BackendSource;
using switchboard::KeyCipher;
using switchboard::Storage;
using switchboard::server::ImportBackendsFile;

std::unique_ptr<KeyCipher> MakeCipher() {
  REQUIRE(switchboard::InitCrypto().ok());
  auto key = switchboard::MasterKey::Generate();
  REQUIRE(key.ok());
  auto cipher = KeyCipher::Create(*std::move(key));
  REQUIRE(cipher.ok());
  return *std::move(cipher);
}

// A file holding `text`, removed when dropped.
class TempFile {
 public:
  explicit TempFile(const std::string& text) {
    static int counter = 0;
    path_ = (std::filesystem::temp_directory_path() /
             ("switchboard-import-test-" + std::to_string(::getpid()) + "-" +
              std::to_string(++counter) + ".json"))
                .string();
    std::ofstream(path_) << text;
  }
  ~TempFile() { std::filesystem::remove(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

constexpr char kTwoBackends[] = R"([
  {"name": "openai-main", "api_base_url": "https://api.openai.com/v1",
   "api_key": "sk-import-secret-0123456789abcdef", "model_mappings": {"gpt-4o": "gpt-4o-2024"}},
  {"name": "local", "api_base_url": "http://127.0.0.1:9/v1", "pool": "fallback",
   "model_mappings": {"*": "*"}}
])";

}  // namespace

TEST_CASE("Importing creates backends with source import and an encrypted key", "[import]") {
  auto storage = switchboard::NewMemoryStorage();
  auto cipher = MakeCipher();
  TempFile file(kTwoBackends);

  auto summary =
      ImportBackendsFile(file.path(), *storage, *cipher, switchboard::testing::TestEpoch());
  REQUIRE(summary.ok());
  CHECK(summary->created == 2);
  auto main = storage->GetBackendByName("openai-main");
  REQUIRE(main.ok());
  CHECK(main->source == BackendSource::kImport);
  CHECK(main->id.rfind("bkd_", 0) == 0);
  CHECK(main->api_key_hint == "...cdef");
  CHECK(main->api_key_ciphertext.find("sk-import") == std::string::npos);
  auto plain = cipher->Decrypt(main->api_key_ciphertext, main->id);
  REQUIRE(plain.ok());
  CHECK(plain->view() == "sk-import-secret-0123456789abcdef");
  auto local = storage->GetBackendByName("local");
  REQUIRE(local.ok());
  CHECK_FALSE(local->api_key_set());
  CHECK(local->pool == "fallback");
}

TEST_CASE("Importing the same file again changes nothing", "[import]") {
  auto storage = switchboard::NewMemoryStorage();
  auto cipher = MakeCipher();
  TempFile file(kTwoBackends);
  REQUIRE(
      ImportBackendsFile(file.path(), *storage, *cipher, switchboard::testing::TestEpoch()).ok());
  auto before = storage->GetBackendByName("openai-main");
  REQUIRE(before.ok());

  auto again = ImportBackendsFile(file.path(), *storage, *cipher,
                                  switchboard::testing::TestEpoch() + std::chrono::hours(1));
  REQUIRE(again.ok());
  CHECK(again->unchanged == 2);
  auto after = storage->GetBackendByName("openai-main");
  REQUIRE(after.ok());
  CHECK(*after == *before);
}

TEST_CASE("Importing updates a backend by name and keeps its id", "[import]") {
  auto storage = switchboard::NewMemoryStorage();
  auto cipher = MakeCipher();
  REQUIRE(storage->CreateBackend(switchboard::testing::MakeBackend("local")).ok());
  TempFile file(kTwoBackends);

  auto summary = ImportBackendsFile(file.path(), *storage, *cipher,
                                    switchboard::testing::TestEpoch() + std::chrono::hours(1));
  REQUIRE(summary.ok());
  CHECK(summary->created == 1);
  CHECK(summary->updated == 1);
  auto local = storage->GetBackendByName("local");
  REQUIRE(local.ok());
  CHECK(local->id == "bkd_local");
  CHECK(local->pool == "fallback");
  CHECK(local->source == BackendSource::kImport);
  CHECK(local->created_at == switchboard::testing::TestEpoch());
}

TEST_CASE("An invalid entry names its field, stores nothing and never echoes the key", "[import]") {
  auto storage = switchboard::NewMemoryStorage();
  auto cipher = MakeCipher();
  TempFile file(R"([
    {"name": "good", "api_base_url": "https://a.example/v1", "api_key": "sk-good-secret-000000001"},
    {"name": "bad", "api_base_url": "ftp://b.example", "api_key": "sk-bad-secret-000000002"}
  ])");

  auto summary =
      ImportBackendsFile(file.path(), *storage, *cipher, switchboard::testing::TestEpoch());
  REQUIRE_FALSE(summary.ok());
  CHECK(summary.status().code() == switchboard::StatusCode::kInvalidArgument);
  CHECK(summary.status().param() == "[1].api_base_url");
  CHECK(summary.status().ToString().find("secret") == std::string::npos);
  auto all = storage->ListBackends({});
  REQUIRE(all.ok());
  CHECK(all->empty());
}

TEST_CASE("An import entry without a name is refused", "[import]") {
  auto storage = switchboard::NewMemoryStorage();
  auto cipher = MakeCipher();
  TempFile file(R"([{"api_base_url": "https://a.example/v1"}])");
  auto summary =
      ImportBackendsFile(file.path(), *storage, *cipher, switchboard::testing::TestEpoch());
  REQUIRE_FALSE(summary.ok());
  CHECK(summary.status().param() == "[0].name");
}

TEST_CASE("An import file naming one backend twice is refused", "[import]") {
  auto storage = switchboard::NewMemoryStorage();
  auto cipher = MakeCipher();
  TempFile file(R"([{"name": "a", "api_base_url": "https://a.example/v1"},
                    {"name": "a", "api_base_url": "https://b.example/v1"}])");
  auto summary =
      ImportBackendsFile(file.path(), *storage, *cipher, switchboard::testing::TestEpoch());
  REQUIRE_FALSE(summary.ok());
  CHECK(summary.status().param() == "[1].name");
}

TEST_CASE("A missing import file is kUnavailable", "[import]") {
  auto storage = switchboard::NewMemoryStorage();
  auto cipher = MakeCipher();
  auto summary = ImportBackendsFile("/nonexistent/backends.json", *storage, *cipher,
                                    switchboard::testing::TestEpoch());
  REQUIRE_FALSE(summary.ok());
  CHECK(summary.status().code() == switchboard::StatusCode::kUnavailable);
}
