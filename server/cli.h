// server/cli.h
// The `switchboard` command line, parsed apart from main() so it can be
// tested.
//
//   Cli cli = ParseCommandLine({"serve", "--listen", "127.0.0.1:0"}, GetEnv);
//   if (cli.action == Cli::Action::kUsageError) { Print(cli.error); return 2; }
#ifndef SWITCHBOARD_SERVER_CLI_H_
#define SWITCHBOARD_SERVER_CLI_H_

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "rotate.h"
#include "server.h"
#include "switchboard/status.h"

namespace switchboard::server {

struct Cli {
  enum class Action {
    kServe,       // run the server with `options`
    kHelp,        // print HelpText(), exit 0
    kServeHelp,   // print ServeHelpText(), exit 0
    kVersion,     // print VersionText(), exit 0
    kUsageError,  // print `error` and a hint to stderr, exit 2
    kRotateMasterKey,      // run RotateMasterKeyCommand(rotate)
    kRotateMasterKeyHelp,  // print RotateHelpText(), exit 0
  };
  Action action = Action::kUsageError;
  ServerOptions options;
  RotateOptions rotate;
  std::string error;
};

// Looks up an environment variable; nullopt when unset.
using EnvLookup = std::function<std::optional<std::string>(const std::string& name)>;

// The process environment.
std::optional<std::string> GetEnv(const std::string& name);

// Parses the arguments after the program name:
//   switchboard serve [--listen HOST:PORT] [--db PATH] [--master-key-file PATH] [--admin-token-file PATH]
//                     [--import FILE] [--demo] [--drain-seconds N] [--store URL] [--redis URL]
//                     [--header-timeout N] [--body-timeout N] [--idle-timeout N]
//                     [--connect-timeout N] [--request-timeout N]
//                     [--max-connections N] [--max-in-flight N]
//   switchboard rotate-master-key --new-master-key-file PATH [--db PATH | --store URL]
//                                 [--master-key-file PATH]
//   switchboard --version | --help | serve --help | rotate-master-key --help
// Flags take "--flag VALUE" or "--flag=VALUE". SWITCHBOARD_LISTEN and
// SWITCHBOARD_DB are the defaults of --listen and --db; SWITCHBOARD_CLIENT_KEYS
// (comma-separated) sets the client keys. With --demo and neither --db nor
// SWITCHBOARD_DB, options.db_path is "" (the server uses a temporary store).
Cli ParseCommandLine(const std::vector<std::string>& args, const EnvLookup& env);

std::string HelpText();
std::string ServeHelpText();
std::string RotateHelpText();
std::string VersionText();  // "switchboard 0.1.0"

struct ListenAddress {
  std::string host;  // "127.0.0.1", "::1", "localhost"
  int port = 0;      // 0..65535; 0 picks a free port
};
// "HOST:PORT" or "[IPV6]:PORT". kInvalidArgument otherwise.
Result<ListenAddress> ParseListenAddress(std::string_view text);
// "HOST:PORT", bracketing an IPv6 host.
std::string FormatHostPort(const std::string& host, int port);

// Makes the process safer to hold secrets in, before any thread or secret
// exists: no core dumps (RLIMIT_CORE 0, soft and hard) and not dumpable
// (PR_SET_DUMPABLE 0), so neither a crash nor another process of the same
// user (ptrace, /proc/<pid>/mem, /proc/<pid>/environ with
// SWITCHBOARD_MASTER_KEY) can read the master key or API keys. Sanitizer
// builds stay dumpable: LeakSanitizer stops the world through ptrace.
// Returns what could not be done ("" when everything was).
std::string HardenProcess();

// "a, b,,c" -> {"a", "b", "c"}: comma-separated, trimmed, empty ones dropped.
std::vector<std::string> SplitKeys(std::string_view text);

}  // namespace switchboard::server

#endif  // SWITCHBOARD_SERVER_CLI_H_
