#include "cli.h"

#include <catch2/catch.hpp>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace {

using switchboard::server::Cli;
using switchboard::server::EnvLookup;
using switchboard::server::ParseCommandLine;

EnvLookup Env(std::map<std::string, std::string> vars = {}) {
  return [vars](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

}  // namespace

TEST_CASE("serve reads every flag", "[cli]") {
  Cli cli =
      ParseCommandLine({"serve", "--listen", "0.0.0.0:9000", "--db", "x.db", "--master-key-file",
                        "k.key", "--import", "b.json", "--drain-seconds", "3"},
                       Env());
  REQUIRE(cli.action == Cli::Action::kServe);
  CHECK(cli.options.listen == "0.0.0.0:9000");
  CHECK(cli.options.db_path == "x.db");
  CHECK(cli.options.master_key_file == "k.key");
  CHECK(cli.options.import_file == "b.json");
  CHECK(cli.options.drain_timeout == std::chrono::seconds(3));
  CHECK_FALSE(cli.options.demo);
  CHECK(cli.options.client_keys.empty());
}

TEST_CASE("serve has the documented defaults", "[cli]") {
  Cli cli = ParseCommandLine({"serve"}, Env());
  REQUIRE(cli.action == Cli::Action::kServe);
  CHECK(cli.options.listen == "127.0.0.1:8080");
  CHECK(cli.options.db_path == "switchboard.db");
  CHECK(cli.options.master_key_file.empty());
  CHECK(cli.options.drain_timeout == std::chrono::seconds(10));
}

TEST_CASE("serve accepts --flag=value", "[cli]") {
  Cli cli = ParseCommandLine({"serve", "--listen=127.0.0.1:0", "--db=a.db"}, Env());
  REQUIRE(cli.action == Cli::Action::kServe);
  CHECK(cli.options.listen == "127.0.0.1:0");
  CHECK(cli.options.db_path == "a.db");
}

TEST_CASE("environment variables are the defaults of the flags", "[cli]") {
  Cli cli = ParseCommandLine({"serve"}, Env({{"SWITCHBOARD_LISTEN", "127.0.0.1:7000"},
                                             {"SWITCHBOARD_DB", "env.db"},
                                             {"SWITCHBOARD_CLIENT_KEYS", " k1, k2 ,,k3 "}}));
  REQUIRE(cli.action == Cli::Action::kServe);
  CHECK(cli.options.listen == "127.0.0.1:7000");
  CHECK(cli.options.db_path == "env.db");
  CHECK(cli.options.client_keys == std::vector<std::string>{"k1", "k2", "k3"});
}

TEST_CASE("flags win over environment variables", "[cli]") {
  Cli cli = ParseCommandLine(
      {"serve", "--listen", "127.0.0.1:1", "--db", "flag.db"},
      Env({{"SWITCHBOARD_LISTEN", "127.0.0.1:7000"}, {"SWITCHBOARD_DB", "env.db"}}));
  REQUIRE(cli.action == Cli::Action::kServe);
  CHECK(cli.options.listen == "127.0.0.1:1");
  CHECK(cli.options.db_path == "flag.db");
}

TEST_CASE("A demo without a database uses a temporary store", "[cli]") {
  Cli cli = ParseCommandLine({"serve", "--demo"}, Env());
  REQUIRE(cli.action == Cli::Action::kServe);
  CHECK(cli.options.demo);
  CHECK(cli.options.db_path.empty());

  Cli with_db = ParseCommandLine({"serve", "--demo", "--db", "d.db"}, Env());
  CHECK(with_db.options.db_path == "d.db");
  Cli with_env = ParseCommandLine({"serve", "--demo"}, Env({{"SWITCHBOARD_DB", "e.db"}}));
  CHECK(with_env.options.db_path == "e.db");
}

TEST_CASE("unknown flags and arguments are usage errors", "[cli]") {
  CHECK(ParseCommandLine({"serve", "--bogus"}, Env()).action == Cli::Action::kUsageError);
  CHECK(ParseCommandLine({"serve", "extra"}, Env()).action == Cli::Action::kUsageError);
  CHECK(ParseCommandLine({"--bogus"}, Env()).action == Cli::Action::kUsageError);
  CHECK(ParseCommandLine({"frobnicate"}, Env()).action == Cli::Action::kUsageError);
  CHECK(ParseCommandLine({}, Env()).action == Cli::Action::kUsageError);
  Cli cli = ParseCommandLine({"serve", "--bogus"}, Env());
  CHECK(cli.error.find("--bogus") != std::string::npos);
}

TEST_CASE("a flag without its value is a usage error", "[cli]") {
  CHECK(ParseCommandLine({"serve", "--listen"}, Env()).action == Cli::Action::kUsageError);
  CHECK(ParseCommandLine({"serve", "--db="}, Env()).action == Cli::Action::kUsageError);
  CHECK(ParseCommandLine({"serve", "--demo=yes"}, Env()).action == Cli::Action::kUsageError);
}

TEST_CASE("bad listen addresses and drain periods are usage errors", "[cli]") {
  CHECK(ParseCommandLine({"serve", "--listen", "8080"}, Env()).action == Cli::Action::kUsageError);
  CHECK(ParseCommandLine({"serve", "--listen", "127.0.0.1:70000"}, Env()).action ==
        Cli::Action::kUsageError);
  CHECK(ParseCommandLine({"serve"}, Env({{"SWITCHBOARD_LISTEN", "nope"}})).action ==
        Cli::Action::kUsageError);
  CHECK(ParseCommandLine({"serve", "--drain-seconds", "-1"}, Env()).action ==
        Cli::Action::kUsageError);
  CHECK(ParseCommandLine({"serve", "--drain-seconds", "ten"}, Env()).action ==
        Cli::Action::kUsageError);
}

TEST_CASE("help and version are recognized", "[cli]") {
  CHECK(ParseCommandLine({"--help"}, Env()).action == Cli::Action::kHelp);
  CHECK(ParseCommandLine({"-h"}, Env()).action == Cli::Action::kHelp);
  CHECK(ParseCommandLine({"--version"}, Env()).action == Cli::Action::kVersion);
  CHECK(ParseCommandLine({"serve", "--help"}, Env()).action == Cli::Action::kServeHelp);
  CHECK(ParseCommandLine({"serve", "--db", "x", "-h"}, Env()).action == Cli::Action::kServeHelp);
  CHECK(switchboard::server::VersionText().rfind("switchboard ", 0) == 0);
}

TEST_CASE("ParseListenAddress reads hosts, IPv6 in brackets and ports", "[cli]") {
  using switchboard::server::ParseListenAddress;
  auto v4 = ParseListenAddress("127.0.0.1:8080");
  REQUIRE(v4.ok());
  CHECK(v4->host == "127.0.0.1");
  CHECK(v4->port == 8080);
  auto any = ParseListenAddress("127.0.0.1:0");
  REQUIRE(any.ok());
  CHECK(any->port == 0);
  auto v6 = ParseListenAddress("[::1]:9");
  REQUIRE(v6.ok());
  CHECK(v6->host == "::1");
  CHECK(v6->port == 9);
  CHECK(ParseListenAddress("localhost:80").ok());
  CHECK_FALSE(ParseListenAddress("::1:80").ok());
  CHECK_FALSE(ParseListenAddress(":80").ok());
  CHECK_FALSE(ParseListenAddress("host:").ok());
  CHECK_FALSE(ParseListenAddress("host:65536").ok());
  CHECK_FALSE(ParseListenAddress("[::1]80").ok());
  CHECK_FALSE(ParseListenAddress("ho st:80").ok());
  CHECK(switchboard::server::FormatHostPort("::1", 9) == "[::1]:9");
  CHECK(switchboard::server::FormatHostPort("127.0.0.1", 0) == "127.0.0.1:0");
}

TEST_CASE("rotate-master-key reads its flags and needs the new key file", "[cli]") {
  Cli cli = ParseCommandLine({"rotate-master-key", "--db", "x.db", "--master-key-file", "old.key",
                              "--new-master-key-file=new.key"},
                             Env());
  REQUIRE(cli.action == Cli::Action::kRotateMasterKey);
  CHECK(cli.rotate.db_path == "x.db");
  CHECK(cli.rotate.master_key_file == "old.key");
  CHECK(cli.rotate.new_master_key_file == "new.key");

  Cli from_env = ParseCommandLine({"rotate-master-key", "--new-master-key-file", "n.key"},
                                  Env({{"SWITCHBOARD_DB", "env.db"}}));
  REQUIRE(from_env.action == Cli::Action::kRotateMasterKey);
  CHECK(from_env.rotate.db_path == "env.db");

  CHECK(ParseCommandLine({"rotate-master-key", "--db", "x.db"}, Env()).action ==
        Cli::Action::kUsageError);
  CHECK(ParseCommandLine({"rotate-master-key", "--new-master-key-file"}, Env()).action ==
        Cli::Action::kUsageError);
  CHECK(ParseCommandLine({"rotate-master-key", "--new-master-key-file", "n", "--listen", "x"},
                         Env())
            .action == Cli::Action::kUsageError);
  CHECK(ParseCommandLine({"rotate-master-key", "--new-master-key-file", "n", "--store", "mysql://x"},
                         Env())
            .action == Cli::Action::kUsageError);
  CHECK(ParseCommandLine({"rotate-master-key", "--help"}, Env()).action ==
        Cli::Action::kRotateMasterKeyHelp);
}

TEST_CASE("serve reads the capacity from --max-connections and --max-in-flight, within bounds",
          "[cli]") {
  Cli cli = ParseCommandLine({"serve", "--max-connections", "512", "--max-in-flight=400"}, Env());
  REQUIRE(cli.action == Cli::Action::kServe);
  CHECK(cli.options.http.max_threads == 512);
  CHECK(cli.options.max_in_flight == 400);

  Cli defaults = ParseCommandLine({"serve"}, Env());
  CHECK(defaults.options.http.max_threads == 2048);
  CHECK(defaults.options.max_in_flight == 0);  // the server derives 1920

  // 512 connections keep 32 threads: at most 480 proxied requests.
  Cli too_many = ParseCommandLine({"serve", "--max-connections", "512", "--max-in-flight", "481"},
                                  Env());
  CHECK(too_many.action == Cli::Action::kUsageError);
  CHECK(too_many.error.find("at most 480") != std::string::npos);
  for (const char* bad : {"0", "-5", "many", "15", "40000"}) {
    INFO(bad);
    CHECK(ParseCommandLine({"serve", "--max-connections", bad}, Env()).action ==
          Cli::Action::kUsageError);
  }
  CHECK(ParseCommandLine({"serve", "--max-in-flight", "0"}, Env()).action ==
        Cli::Action::kUsageError);
}

TEST_CASE("serve takes the shared state from --redis or $SWITCHBOARD_REDIS, only as a redis URL",
          "[cli]") {
  Cli cli = ParseCommandLine({"serve", "--redis", "redis://127.0.0.1:6379/2"}, Env());
  REQUIRE(cli.action == Cli::Action::kServe);
  CHECK(cli.options.shared_state_url == "redis://127.0.0.1:6379/2");
  Cli from_env =
      ParseCommandLine({"serve"}, Env({{"SWITCHBOARD_REDIS", "redis://:pw@cache:6379"}}));
  CHECK(from_env.options.shared_state_url == "redis://:pw@cache:6379");
  CHECK(ParseCommandLine({"serve"}, Env()).options.shared_state_url.empty());
  Cli bad = ParseCommandLine({"serve", "--redis", "http://user:secret-pw@cache:6379"}, Env());
  CHECK(bad.action == Cli::Action::kUsageError);
  CHECK(bad.error.find("secret-pw") == std::string::npos);
}
