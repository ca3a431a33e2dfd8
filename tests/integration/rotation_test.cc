// `switchboard rotate-master-key`: every stored API key moves to the new
// master key in one transaction; a kill -9 at any moment leaves every key
// decryptable under exactly one of the two keys, and a second run finishes.
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <fstream>
#include <random>
#include <thread>

#include "harness.h"
#include "switchboard/secrets.h"
#include "switchboard/storage.h"

namespace switchboard::testing {
namespace {

// Runs the server binary with `args` and the environment `env` added to a
// scrubbed copy of ours. Returns the pid (the caller waits or kills it).
pid_t Spawn(const std::vector<std::string>& args, const std::vector<std::string>& env_extra) {
  std::vector<std::string> argv_s = {SWITCHBOARD_BINARY};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<std::string> env_s;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    if (std::string_view(*e).rfind("SWITCHBOARD_", 0) == 0) continue;
    env_s.emplace_back(*e);
  }
  env_s.insert(env_s.end(), env_extra.begin(), env_extra.end());
  std::vector<char*> argv, envp;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : env_s) envp.push_back(e.data());
  envp.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  pid_t pid = -1;
  if (posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), envp.data()) != 0) pid = -1;
  posix_spawn_file_actions_destroy(&actions);
  return pid;
}

int WaitExit(pid_t pid) {
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid) return -1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + WTERMSIG(status);
}

std::unique_ptr<KeyCipher> CipherFromBase64(const std::string& b64) {
  auto key = MasterKey::FromBase64(b64);
  REQUIRE(key.ok());
  auto cipher = KeyCipher::Create(*std::move(key));
  REQUIRE(cipher.ok());
  return *std::move(cipher);
}

std::unique_ptr<KeyCipher> CipherFromFile(const std::string& path) {
  MasterKeyOptions options;
  options.env_var.clear();
  options.key_file = path;
  options.create_if_missing = false;
  auto key = LoadMasterKey(options);
  INFO(key.status().message());
  REQUIRE(key.ok());
  auto cipher = KeyCipher::Create(*std::move(key));
  REQUIRE(cipher.ok());
  return *std::move(cipher);
}

// How many stored keys decrypt to their expected plaintext under each cipher.
struct KeyCensus {
  int under_old = 0, under_new = 0, broken = 0;
};

KeyCensus Census(const std::string& db, const KeyCipher& old_cipher, const KeyCipher& new_cipher,
                 const std::map<std::string, std::string>& plaintext_by_name) {
  auto storage = OpenSqliteStorage({.path = db});
  REQUIRE(storage.ok());
  auto backends = (*storage)->ListBackends(BackendFilter{});
  REQUIRE(backends.ok());
  KeyCensus census;
  for (const switchboard::Backend& b : *backends) {
    const std::string& want = plaintext_by_name.at(b.name);
    if (auto p = old_cipher.Decrypt(b.api_key_ciphertext, b.id); p.ok() && p->view() == want) {
      ++census.under_old;
    } else if (auto q = new_cipher.Decrypt(b.api_key_ciphertext, b.id);
               q.ok() && q->view() == want) {
      ++census.under_new;
    } else {
      ++census.broken;
    }
  }
  return census;
}

}  // namespace

TEST_CASE("rotate-master-key moves every key to the new master key; the server then forwards "
          "with the same upstream key, which the old master key no longer decrypts",
          "[rotation]") {
  MockUpstream mock;
  mock.SetDefault("/v1/chat/completions", ChatCompletionReply("gpt-4o-upstream", "ok"));
  TempDir dir;
  REQUIRE(!dir.path().empty());
  BackendSpec spec = Backend("primary", mock.base_url(), "primary");
  spec.api_key = "sk-rotation-upstream-key-1";
  std::string old_key;
  {
    ServerProcess server({.backends = {spec}, .dir = dir.path()});
    INFO(server.error());
    REQUIRE(server.ok());
    old_key = server.master_key();
    REQUIRE(server.Stop() == 0);
  }
  const std::string new_key_file = dir.path() + "/new.key";
  const pid_t pid = Spawn({"rotate-master-key", "--db", dir.path() + "/sb.db",
                           "--new-master-key-file", new_key_file},
                          {"SWITCHBOARD_MASTER_KEY=" + old_key});
  REQUIRE(pid > 0);
  REQUIRE(WaitExit(pid) == 0);
  REQUIRE(std::filesystem::exists(new_key_file));
  CHECK((std::filesystem::status(new_key_file).permissions() & std::filesystem::perms::all) ==
        (std::filesystem::perms::owner_read | std::filesystem::perms::owner_write));
  const auto census = Census(dir.path() + "/sb.db", *CipherFromBase64(old_key),
                             *CipherFromFile(new_key_file), {{"primary", spec.api_key}});
  CHECK(census.under_new == 1);
  CHECK(census.under_old == 0);

  // Running it again changes nothing and succeeds.
  const pid_t again = Spawn({"rotate-master-key", "--db", dir.path() + "/sb.db",
                             "--new-master-key-file", new_key_file},
                            {"SWITCHBOARD_MASTER_KEY=" + old_key});
  REQUIRE(again > 0);
  CHECK(WaitExit(again) == 0);

  {
    // The new key (what the operator now passes as --master-key-file or in
    // $SWITCHBOARD_MASTER_KEY): the same upstream key goes out.
    std::string new_key;
    std::getline(std::ifstream(new_key_file), new_key);
    ServerProcess server({.dir = dir.path(), .master_key = new_key});
    INFO(server.error());
    REQUIRE(server.ok());
    auto res = httplib::Client("127.0.0.1", server.port())
                   .Post("/v1/chat/completions", ChatBody("gpt-4o"), "application/json");
    REQUIRE(res);
    CHECK(res->status == 200);
    REQUIRE(mock.request_count() == 1);
    REQUIRE(mock.requests()[0].header("authorization") != nullptr);
    CHECK(*mock.requests()[0].header("authorization") == "Bearer " + spec.api_key);
    CHECK(server.Stop() == 0);
  }
  {
    ServerProcess server({.dir = dir.path(), .master_key = old_key});
    REQUIRE(server.ok());
    auto res = httplib::Client("127.0.0.1", server.port())
                   .Post("/v1/chat/completions", ChatBody("gpt-4o"), "application/json");
    REQUIRE(res);
    // The old key cannot decrypt the upstream key: no request goes out with garbage.
    CHECK(res->status >= 500);
    CHECK(mock.request_count() == 1);  // only the one above
    CHECK(server.output().find("sk-rotation") == std::string::npos);
  }
}

TEST_CASE("kill -9 at random moments of a rotation (20 rounds) leaves every key decryptable "
          "under one of the two master keys, and a final run moves them all",
          "[rotation]") {
  constexpr int kBackends = 400;
  constexpr int kRounds = 20;
  TempDir dir;
  REQUIRE(!dir.path().empty());
  std::vector<BackendSpec> specs;
  std::map<std::string, std::string> plaintext;
  for (int i = 0; i < kBackends; ++i) {
    BackendSpec b = Backend("b" + std::to_string(i), "http://127.0.0.1:9/v1", "primary");
    b.api_key = "sk-rotation-" + std::to_string(i) + "-0123456789abcdef";
    plaintext[b.name] = b.api_key;
    specs.push_back(b);
  }
  std::string old_key;
  {
    ServerProcess server({.backends = specs, .dir = dir.path()});
    INFO(server.error());
    REQUIRE(server.ok());
    old_key = server.master_key();
    REQUIRE(server.Stop() == 0);
  }
  const std::string db = dir.path() + "/sb.db";
  const std::string new_key_file = dir.path() + "/new.key";
  std::mt19937 rng(std::random_device{}());
  int killed_mid_way = 0;
  std::unique_ptr<KeyCipher> new_cipher;
  const auto old_cipher = CipherFromBase64(old_key);
  for (int round = 0; round < kRounds; ++round) {
    // Start each round from the old key so every kill lands in a real rotation.
    if (new_cipher) {
      const std::string back_file = dir.path() + "/back-" + std::to_string(round) + ".key";
      std::ofstream(back_file) << old_key << "\n";
      std::filesystem::permissions(back_file, std::filesystem::perms::owner_read |
                                                  std::filesystem::perms::owner_write);
      const pid_t back = Spawn({"rotate-master-key", "--db", db, "--master-key-file",
                                new_key_file, "--new-master-key-file", back_file},
                               {});
      REQUIRE(back > 0);
      REQUIRE(WaitExit(back) == 0);
      std::filesystem::remove(back_file);
    }
    const pid_t pid = Spawn({"rotate-master-key", "--db", db, "--new-master-key-file", new_key_file},
                            {"SWITCHBOARD_MASTER_KEY=" + old_key});
    REQUIRE(pid > 0);
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 150000));
    ::kill(pid, SIGKILL);
    const int exit_code = WaitExit(pid);
    if (exit_code == 128 + SIGKILL) ++killed_mid_way;
    if (!new_cipher && std::filesystem::exists(new_key_file)) {
      // The new key file is complete before the store is touched; a kill
      // while writing it leaves no store change.
      MasterKeyOptions options;
      options.env_var.clear();
      options.key_file = new_key_file;
      options.create_if_missing = false;
      if (auto key = LoadMasterKey(options); key.ok()) {
        new_cipher = *KeyCipher::Create(*std::move(key));
      } else {
        std::filesystem::remove(new_key_file);  // torn by the kill: nothing used it
      }
    }
    INFO("round " << round << " exit " << exit_code);
    if (new_cipher) {
      const KeyCensus census = Census(db, *old_cipher, *new_cipher, plaintext);
      CHECK(census.broken == 0);
      // One transaction: all or nothing.
      CHECK((census.under_old == kBackends || census.under_new == kBackends));
    }
  }
  // The last run completes the rotation.
  const pid_t last = Spawn({"rotate-master-key", "--db", db, "--new-master-key-file", new_key_file},
                           {"SWITCHBOARD_MASTER_KEY=" + old_key});
  REQUIRE(last > 0);
  REQUIRE(WaitExit(last) == 0);
  if (!new_cipher) new_cipher = CipherFromFile(new_key_file);
  const KeyCensus census = Census(db, *old_cipher, *new_cipher, plaintext);
  CHECK(census.under_new == kBackends);
  CHECK(census.broken == 0);
  INFO("runs killed before finishing: " << killed_mid_way);
  CHECK(killed_mid_way > 0);
}

}  // namespace switchboard::testing
