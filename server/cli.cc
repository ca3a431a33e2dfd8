#include "cli.h"

#include <sys/prctl.h>
#include <sys/resource.h>

#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <utility>
#include <cstring>

#include "switchboard/postgres_storage.h"

namespace switchboard::server {

namespace {

constexpr int kMaxDrainSeconds = 3600;
constexpr int kMaxTimeoutSeconds = 3600;
constexpr int kMaxConnections = 32768;  // a thread each

Cli UsageError(std::string message) {
  Cli cli;
  cli.action = Cli::Action::kUsageError;
  cli.error = std::move(message);
  return cli;
}

std::optional<int> ParseInt(std::string_view text) {
  int value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty()) return std::nullopt;
  return value;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// "--flag=VALUE" -> {"--flag", "VALUE"}; anything else -> {arg, nullopt}.
std::pair<std::string, std::optional<std::string>> SplitFlag(const std::string& arg) {
  if (arg.rfind("--", 0) == 0) {
    if (const size_t eq = arg.find('='); eq != std::string::npos) {
      return {arg.substr(0, eq), arg.substr(eq + 1)};
    }
  }
  return {arg, std::nullopt};
}

Cli ParseServe(const std::vector<std::string>& args, size_t first, const EnvLookup& env) {
  Cli cli;
  cli.action = Cli::Action::kServe;
  ServerOptions& o = cli.options;
  bool db_given = false;
  if (auto listen = env("SWITCHBOARD_LISTEN"); listen && !listen->empty()) o.listen = *listen;
  if (auto db = env("SWITCHBOARD_DB"); db && !db->empty()) {
    o.db_path = *db;
    db_given = true;
  }
  if (auto keys = env("SWITCHBOARD_CLIENT_KEYS"); keys) o.client_keys = SplitKeys(*keys);
  if (auto store = env("SWITCHBOARD_STORE"); store && !store->empty()) o.store_url = *store;
  if (auto redis = env("SWITCHBOARD_REDIS"); redis && !redis->empty()) {
    o.shared_state_url = *redis;
  }

  for (size_t i = first; i < args.size(); ++i) {
    auto [flag, inline_value] = SplitFlag(args[i]);
    // The flag's value: "--flag=VALUE" or the next argument.
    auto value = [&]() -> std::optional<std::string> {
      if (inline_value) return inline_value;
      if (i + 1 >= args.size()) return std::nullopt;
      return args[++i];
    };
    if (flag == "--help" || flag == "-h") {
      cli.action = Cli::Action::kServeHelp;
      return cli;
    }
    if (flag == "--demo") {
      if (inline_value) return UsageError("--demo takes no value");
      o.demo = true;
      continue;
    }
    // Timeouts, in whole seconds.
    struct TimeoutFlag {
      const char* name;
      std::chrono::nanoseconds* nanos;  // one of these two is set
      std::chrono::milliseconds* millis;
      int min;
    };
    const TimeoutFlag timeouts[] = {
        {"--header-timeout", nullptr, &o.http.header_timeout, 1},
        {"--body-timeout", nullptr, &o.http.body_timeout, 1},
        {"--idle-timeout", nullptr, &o.http.keep_alive_timeout, 1},
        {"--connect-timeout", &o.proxy.connect_timeout, nullptr, 1},
        {"--request-timeout", &o.proxy.request_timeout, nullptr, 0},
    };
    const TimeoutFlag* timeout = nullptr;
    for (const TimeoutFlag& t : timeouts) {
      if (flag == t.name) timeout = &t;
    }
    if (timeout != nullptr) {
      std::optional<std::string> v = value();
      if (!v) return UsageError(flag + " needs a value");
      std::optional<int> seconds = ParseInt(*v);
      if (!seconds || *seconds < timeout->min || *seconds > kMaxTimeoutSeconds) {
        return UsageError(flag + " must be a whole number of seconds from " +
                          std::to_string(timeout->min) + " to " +
                          std::to_string(kMaxTimeoutSeconds));
      }
      if (timeout->nanos != nullptr) *timeout->nanos = std::chrono::seconds(*seconds);
      if (timeout->millis != nullptr) *timeout->millis = std::chrono::seconds(*seconds);
      continue;
    }
    // Capacity: connection threads and proxied requests in flight.
    if (flag == "--max-connections" || flag == "--max-in-flight") {
      std::optional<std::string> v = value();
      if (!v) return UsageError(flag + " needs a value");
      std::optional<int> n = ParseInt(*v);
      const int min = flag == "--max-connections" ? 16 : 1;
      if (!n || *n < min || *n > kMaxConnections) {
        return UsageError(flag + " must be a whole number from " + std::to_string(min) + " to " +
                          std::to_string(kMaxConnections));
      }
      if (flag == "--max-connections") {
        o.http.max_threads = static_cast<size_t>(*n);
      } else {
        o.max_in_flight = static_cast<size_t>(*n);
      }
      continue;
    }
    std::string* target = nullptr;
    if (flag == "--listen") target = &o.listen;
    if (flag == "--db") target = &o.db_path;
    if (flag == "--master-key-file") target = &o.master_key_file;
    if (flag == "--import") target = &o.import_file;
    if (flag == "--admin-token-file") target = &o.admin_token_file;
    if (flag == "--store") target = &o.store_url;
    if (flag == "--redis") target = &o.shared_state_url;
    if (target != nullptr || flag == "--drain-seconds") {
      std::optional<std::string> v = value();
      if (!v) return UsageError(flag + " needs a value");
      if (v->empty()) return UsageError(flag + " must not be empty");
      if (flag == "--drain-seconds") {
        std::optional<int> seconds = ParseInt(*v);
        if (!seconds || *seconds < 0 || *seconds > kMaxDrainSeconds) {
          return UsageError("--drain-seconds must be a whole number of seconds from 0 to " +
                            std::to_string(kMaxDrainSeconds));
        }
        o.drain_timeout = std::chrono::seconds(*seconds);
        continue;
      }
      *target = *v;
      if (flag == "--db") db_given = true;
      continue;
    }
    if (flag.rfind("-", 0) == 0) return UsageError("unknown flag " + flag);
    return UsageError("unexpected argument " + flag);
  }
  if (Result<ListenAddress> listen = ParseListenAddress(o.listen); !listen.ok()) {
    return UsageError("--listen " + listen.status().message());
  }
  if (!o.store_url.empty() && !IsPostgresUrl(o.store_url)) {
    return UsageError("--store must be a postgres:// or postgresql:// URL");
  }
  if (!o.shared_state_url.empty() && o.shared_state_url.rfind("redis://", 0) != 0) {
    return UsageError("--redis must be a redis:// URL");
  }
  if (o.max_in_flight > UsableThreads(o.http.max_threads)) {
    return UsageError("--max-in-flight must be at most " +
                      std::to_string(UsableThreads(o.http.max_threads)) + " with " +
                      std::to_string(o.http.max_threads) +
                      " connections: the rest are kept for /healthz and the admin API");
  }
  if (o.demo && !db_given) o.db_path.clear();  // a temporary store (see ServerOptions)
  return cli;
}

Cli ParseRotate(const std::vector<std::string>& args, size_t first, const EnvLookup& env) {
  Cli cli;
  cli.action = Cli::Action::kRotateMasterKey;
  RotateOptions& o = cli.rotate;
  if (auto db = env("SWITCHBOARD_DB"); db && !db->empty()) o.db_path = *db;
  if (auto store = env("SWITCHBOARD_STORE"); store && !store->empty()) o.store_url = *store;
  for (size_t i = first; i < args.size(); ++i) {
    auto [flag, inline_value] = SplitFlag(args[i]);
    if (flag == "--help" || flag == "-h") {
      cli.action = Cli::Action::kRotateMasterKeyHelp;
      return cli;
    }
    std::string* target = nullptr;
    if (flag == "--db") target = &o.db_path;
    if (flag == "--store") target = &o.store_url;
    if (flag == "--master-key-file") target = &o.master_key_file;
    if (flag == "--new-master-key-file") target = &o.new_master_key_file;
    if (target == nullptr) {
      if (flag.rfind("-", 0) == 0) return UsageError("unknown flag " + flag);
      return UsageError("unexpected argument " + flag);
    }
    std::optional<std::string> v = inline_value;
    if (!v && i + 1 < args.size()) v = args[++i];
    if (!v) return UsageError(flag + " needs a value");
    if (v->empty()) return UsageError(flag + " must not be empty");
    *target = *v;
  }
  if (o.new_master_key_file.empty()) return UsageError("--new-master-key-file is required");
  if (!o.store_url.empty() && !IsPostgresUrl(o.store_url)) {
    return UsageError("--store must be a postgres:// or postgresql:// URL");
  }
  return cli;
}

}  // namespace

std::string HardenProcess() {
  std::string problems;
  const rlimit no_core{0, 0};
  if (::setrlimit(RLIMIT_CORE, &no_core) != 0) {
    problems += std::string("setrlimit(RLIMIT_CORE): ") + std::strerror(errno);
  }
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
  if (::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
    if (!problems.empty()) problems += "; ";
    problems += std::string("prctl(PR_SET_DUMPABLE): ") + std::strerror(errno);
  }
#endif
  return problems;
}

std::optional<std::string> GetEnv(const std::string& name) {
  const char* value = std::getenv(name.c_str());
  if (value == nullptr) return std::nullopt;
  return std::string(value);
}

Cli ParseCommandLine(const std::vector<std::string>& args, const EnvLookup& env) {
  if (args.empty()) return UsageError("no command given");
  const std::string& first = args[0];
  if (first == "--help" || first == "-h" || first == "help") {
    Cli cli;
    cli.action = Cli::Action::kHelp;
    return cli;
  }
  if (first == "--version" || first == "-V" || first == "version") {
    Cli cli;
    cli.action = Cli::Action::kVersion;
    return cli;
  }
  if (first == "serve") return ParseServe(args, 1, env);
  if (first == "rotate-master-key") return ParseRotate(args, 1, env);
  if (first.rfind("-", 0) == 0) return UsageError("unknown flag " + first);
  return UsageError("unknown command " + first);
}

std::string HelpText() {
  return "switchboard routes LLM API traffic over pools of upstream accounts.\n"
         "\n"
         "Usage:\n"
         "  switchboard serve [flags]    run the gateway (see: switchboard serve --help)\n"
         "  switchboard rotate-master-key --new-master-key-file PATH [flags]\n"
         "                               re-encrypt the stored API keys under a new master key\n"
         "  switchboard --version        print the version\n"
         "  switchboard --help           print this help\n"
         "\n"
         "Try it with no account anywhere:\n"
         "  switchboard serve --demo\n";
}

std::string ServeHelpText() {
  return "Usage: switchboard serve [flags]\n"
         "\n"
         "Serves the OpenAI-compatible API (/v1/chat/completions, /v1/completions,\n"
         "/v1/embeddings, /v1/models), /v1/messages, /healthz and /metrics.\n"
         "\n"
         "Flags:\n"
         "  --listen HOST:PORT      address to listen on (default 127.0.0.1:8080;\n"
         "                          port 0 picks a free one)          [$SWITCHBOARD_LISTEN]\n"
         "  --db PATH               SQLite database (default switchboard.db)  [$SWITCHBOARD_DB]\n"
         "  --store URL             PostgreSQL store instead of --db, shared by instances:\n"
         "                          postgres://USER[:PASSWORD]@HOST:PORT/DB  [$SWITCHBOARD_STORE]\n"
         "  --redis URL             share rate limits, concurrency caps and backend health\n"
         "                          with every instance on this Redis, and announce admin\n"
         "                          changes to them: redis://[:PASSWORD@]HOST:PORT[/DB]\n"
         "                          [$SWITCHBOARD_REDIS]\n"
         "  --master-key-file PATH  master key file (default: PATH.key beside the database;\n"
         "                          created with mode 0600 when missing)\n"
         "  --import FILE           create or update backends (by name) from a JSON array\n"
         "  --admin-token-file PATH file holding the admin token (first line)\n"
         "  --demo                  start built-in mock upstreams and demo backends; without\n"
         "                          --db the store lives in a temporary directory\n"
         "  --drain-seconds N       on SIGTERM/SIGINT, let requests finish for up to N\n"
         "                          seconds (default 10)\n"
         "  --header-timeout N      a request's line and headers must arrive within N\n"
         "                          seconds (default 10)\n"
         "  --body-timeout N        a request's body must arrive within N seconds of its\n"
         "                          headers (default 60)\n"
         "  --idle-timeout N        close a keep-alive connection idle for N seconds\n"
         "                          (default 5)\n"
         "  --connect-timeout N     upstream connect timeout in seconds (default 10)\n"
         "  --request-timeout N     deadline for a whole proxied request across all its\n"
         "                          attempts, in seconds; 0: the sum of the backends'\n"
         "                          timeouts (default 0)\n"
         "  --max-connections N     connections served at once, a thread each (default\n"
         "                          2048); more wait for a free one\n"
         "  --max-in-flight N       proxied requests (streams included) at once; more get\n"
         "                          503 server_overloaded with Retry-After: 1 (default:\n"
         "                          --max-connections less 1/16 of it, at least 8, kept\n"
         "                          for /healthz, /metrics and the admin API)\n"
         "  -h, --help              print this help\n"
         "\n"
         "Environment:\n"
         "  SWITCHBOARD_MASTER_KEY   base64 master key (32 bytes); overrides the key file\n"
         "  SWITCHBOARD_ADMIN_TOKEN  the admin API token; overrides --admin-token-file. With\n"
         "                           neither, a token is generated on first start, printed\n"
         "                           once, and only its hash kept (PATH.admin-token.sha256)\n"
         "  SWITCHBOARD_CLIENT_KEYS  comma-separated keys clients must send, as\n"
         "                           'Authorization: Bearer KEY' or 'x-api-key: KEY'\n";
}

std::string RotateHelpText() {
  return "Usage: switchboard rotate-master-key --new-master-key-file PATH [flags]\n"
         "\n"
         "Re-encrypts every stored API key under a new master key, in one transaction:\n"
         "after a crash every key is under the old key or every key under the new one,\n"
         "and running the command again finishes the job. Stop the server first; start it\n"
         "again with --master-key-file PATH (or the new key in $SWITCHBOARD_MASTER_KEY).\n"
         "\n"
         "Flags:\n"
         "  --new-master-key-file PATH  the new key: read when the file exists, else a new\n"
         "                              one is generated there (mode 0600) before the store\n"
         "                              is touched\n"
         "  --db PATH                   SQLite database (default switchboard.db)  [$SWITCHBOARD_DB]\n"
         "  --store URL                 PostgreSQL store instead of --db  [$SWITCHBOARD_STORE]\n"
         "  --master-key-file PATH      the current key file (default: PATH.key beside the\n"
         "                              database); $SWITCHBOARD_MASTER_KEY overrides it\n"
         "  -h, --help                  print this help\n";
}

std::string VersionText() { return std::string("switchboard ") + SWITCHBOARD_VERSION; }

Result<ListenAddress> ParseListenAddress(std::string_view text) {
  ListenAddress out;
  std::string_view port;
  if (!text.empty() && text.front() == '[') {
    const size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return InvalidArgumentError("must be HOST:PORT or [IPV6]:PORT");
    }
    out.host = std::string(text.substr(1, close - 1));
    port = text.substr(close + 2);
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) return InvalidArgumentError("must be HOST:PORT");
    out.host = std::string(text.substr(0, colon));
    if (out.host.find(':') != std::string::npos) {
      return InvalidArgumentError("IPv6 hosts go in brackets: [::1]:8080");
    }
    port = text.substr(colon + 1);
  }
  if (out.host.empty()) return InvalidArgumentError("needs a host, e.g. 127.0.0.1:8080");
  for (char c : out.host) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '-' || c == ':' || c == '%' || c == '_';
    if (!ok) return InvalidArgumentError("has an invalid host");
  }
  std::optional<int> p = ParseInt(port);
  if (!p || *p < 0 || *p > 65535) return InvalidArgumentError("needs a port from 0 to 65535");
  out.port = *p;
  return out;
}

std::string FormatHostPort(const std::string& host, int port) {
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

std::vector<std::string> SplitKeys(std::string_view text) {
  std::vector<std::string> out;
  while (!text.empty()) {
    const size_t comma = text.find(',');
    const std::string_view part = Trim(text.substr(0, comma));
    if (!part.empty()) out.emplace_back(part);
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  return out;
}

}  // namespace switchboard::server
