// The real `switchboard serve` binary as a child process, for end-to-end
// tests: a fresh temporary directory holds its database and the --import file
// written from a list of backends (typically pointing at MockUpstreams), a
// fresh master key goes in through SWITCHBOARD_MASTER_KEY, and the server
// listens on 127.0.0.1 on a port it picks itself.
//
//   switchboard::testing::MockUpstream mock;
//   switchboard::testing::ServerProcess server({.backends = {{.name = "primary",
//                                                             .api_base_url = mock.base_url()}}});
//   REQUIRE(server.ok());                       // else server.error() says why
//   httplib::Client client(server.host(), server.port());
//   ...
//   CHECK(server.Stop() == 0);                  // SIGTERM; SIGKILL only past the bound
//
// Every wait is bounded. Only the child this object started is ever
// signalled, by its PID, and only until it has been reaped. Linux/POSIX only.
#ifndef SWITCHBOARD_TESTS_SUPPORT_SERVER_PROCESS_H_
#define SWITCHBOARD_TESTS_SUPPORT_SERVER_PROCESS_H_

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

extern char** environ;

namespace switchboard::testing {

// One entry of the --import file (the admin API's wire form).
struct BackendSpec {
  std::string name;
  std::string api_base_url;  // e.g. MockUpstream::base_url()
  std::string api_key = "sk-backend-test-key";
  std::string pool = "primary";
  int timeout_seconds = 30;
  // Canonical model -> the backend's upstream model id.
  std::vector<std::pair<std::string, std::string>> models = {{"gpt-4o", "gpt-4o-upstream"}};
  std::string api = "openai";
  int64_t rpm_limit = 0;
  int64_t max_concurrency = 0;
  bool enabled = true;
};

// A JSON string literal for `s` (quoted, escaped).
inline std::string JsonQuote(std::string_view s) {
  std::string out = "\"";
  for (const char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", static_cast<unsigned>(c));
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

// The --import file for `backends`: a JSON array of backend objects.
inline std::string BackendsJson(const std::vector<BackendSpec>& backends) {
  std::string out = "[";
  for (size_t i = 0; i < backends.size(); ++i) {
    const BackendSpec& b = backends[i];
    if (i > 0) out += ",";
    out += "\n  {\"name\":" + JsonQuote(b.name) + ",\"api_base_url\":" + JsonQuote(b.api_base_url) +
           ",\"api_key\":" + JsonQuote(b.api_key) + ",\"api\":" + JsonQuote(b.api) +
           ",\"pool\":" + JsonQuote(b.pool) +
           ",\"timeout_seconds\":" + std::to_string(b.timeout_seconds) +
           ",\"rpm_limit\":" + std::to_string(b.rpm_limit) +
           ",\"max_concurrency\":" + std::to_string(b.max_concurrency) +
           ",\"enabled\":" + (b.enabled ? "true" : "false") + ",\"model_mappings\":{";
    for (size_t m = 0; m < b.models.size(); ++m) {
      if (m > 0) out += ",";
      out += JsonQuote(b.models[m].first) +
             ":{\"upstream_model\":" + JsonQuote(b.models[m].second) + ",\"weight\":1}";
    }
    out += "}}";
  }
  return out + "\n]\n";
}

// Standard base64 with padding.
inline std::string Base64(const unsigned char* data, size_t size) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  for (size_t i = 0; i < size; i += 3) {
    uint32_t n = static_cast<uint32_t>(data[i]) << 16;
    if (i + 1 < size) n |= static_cast<uint32_t>(data[i + 1]) << 8;
    if (i + 2 < size) n |= data[i + 2];
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
    out += i + 1 < size ? kAlphabet[(n >> 6) & 63] : '=';
    out += i + 2 < size ? kAlphabet[n & 63] : '=';
  }
  return out;
}

// A fresh random master key, base64 of 32 bytes.
inline std::string NewMasterKeyBase64() {
  unsigned char key[32];
  std::random_device rd;
  for (unsigned char& b : key) b = static_cast<unsigned char>(rd());
  return Base64(key, sizeof(key));
}

struct ServerProcessOptions {
  // Written to <dir>/backends.json and passed as --import (none: no --import).
  std::vector<BackendSpec> backends;
  // Non-empty: SWITCHBOARD_CLIENT_KEYS, comma-separated.
  std::vector<std::string> client_keys;
  // More environment variables ("NAME=value"), e.g. SWITCHBOARD_ADMIN_TOKEN.
  std::vector<std::string> env;
  // More arguments after the ones above, e.g. {"--drain-seconds", "1"}.
  std::vector<std::string> extra_args;
  // The binary; empty: the SWITCHBOARD_BINARY compile definition.
  std::string binary;
  // An existing directory for the database and import file, kept afterwards
  // (to restart a server on the same store). Empty: a fresh temporary one,
  // removed afterwards.
  std::string dir;
  // Base64 of 32 bytes. Empty: a fresh random key (see master_key()).
  std::string master_key;
  // How long the server may take to print its listening line (a sanitized
  // build on a loaded machine is slow to start).
  std::chrono::milliseconds start_timeout = std::chrono::seconds(60);
};

// Not thread-safe to start and stop; output() and the accessors are safe
// from any thread.
class ServerProcess {
 public:
  static constexpr std::string_view kListeningLine = "switchboard listening on http://";

  // Starts the server and waits for its listening line (bounded by
  // options.start_timeout). Check ok(); on failure error() says why, with
  // the server's output.
  explicit ServerProcess(ServerProcessOptions options) : options_(std::move(options)) { Start(); }

  ~ServerProcess() {
    Stop();
    if (reader_.joinable()) reader_.join();
    if (!dir_.empty() && !keep_dir_) {
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
    }
  }

  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  bool ok() const { return port_ > 0; }
  const std::string& error() const { return error_; }

  const std::string& host() const { return host_; }
  int port() const { return port_; }
  std::string base_url() const { return "http://" + host_ + ":" + std::to_string(port_); }
  pid_t pid() const { return pid_; }
  // The temporary directory with the database and the import file.
  const std::string& dir() const { return dir_; }
  std::string db_path() const { return dir_ + "/sb.db"; }
  // Keep dir() after destruction (to inspect a failure by hand).
  void KeepDir() { keep_dir_ = true; }
  // The master key the server was given (base64).
  const std::string& master_key() const { return master_key_; }

  // Everything the server wrote so far, stdout and stderr interleaved as
  // they were read.
  std::string output() const {
    std::lock_guard<std::mutex> lock(mu_);
    return output_;
  }

  // True once output() contains `needle`; false after `timeout`.
  bool WaitForOutput(std::string_view needle, std::chrono::milliseconds timeout) const {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return output_.find(needle) != std::string::npos; });
  }

  // Sends `sig` to the child while it has not been reaped. False otherwise.
  bool Signal(int sig) {
    if (pid_ <= 0 || exit_status_) return false;
    return ::kill(pid_, sig) == 0;
  }

  // Waits up to `bound` for the child to exit and reaps it. Its exit code, or
  // 128 + the signal that killed it; nullopt if it is still running.
  std::optional<int> WaitForExit(std::chrono::milliseconds bound) {
    if (exit_status_ || pid_ <= 0) return exit_status_;
    const auto deadline = std::chrono::steady_clock::now() + bound;
    for (;;) {
      int status = 0;
      const pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        exit_status_ = WIFEXITED(status)     ? WEXITSTATUS(status)
                       : WIFSIGNALED(status) ? 128 + WTERMSIG(status)
                                             : -1;
        return exit_status_;
      }
      if (r < 0 && errno != EINTR) {
        exit_status_ = -1;  // not our child any more: never signal it again
        return exit_status_;
      }
      if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }

  // SIGTERM, up to `grace` for a clean exit, then SIGKILL. Returns the exit
  // status (see WaitForExit); -1 when nothing was started. Idempotent.
  int Stop(std::chrono::milliseconds grace = std::chrono::seconds(15)) {
    if (pid_ <= 0) return -1;
    if (!exit_status_) {
      Signal(SIGTERM);
      if (!WaitForExit(grace)) {
        Signal(SIGKILL);
        WaitForExit(std::chrono::seconds(30));
      }
    }
    // The pipes reach EOF once the child is gone; the reader polls a stop
    // flag too, so this join is bounded either way.
    stop_reader_ = true;
    if (reader_.joinable()) reader_.join();
    return exit_status_.value_or(-1);
  }

  // The exit status once reaped.
  std::optional<int> exit_status() const { return exit_status_; }

 private:
  void Fail(const std::string& why) {
    error_ = why + "\n---- switchboard output ----\n" + output();
    port_ = 0;
  }

  void Start() {
    std::string binary = options_.binary;
#ifdef SWITCHBOARD_BINARY
    if (binary.empty()) binary = SWITCHBOARD_BINARY;
#endif
    if (binary.empty()) return Fail("no server binary (define SWITCHBOARD_BINARY)");

    if (!options_.dir.empty()) {
      dir_ = options_.dir;
      keep_dir_ = true;
    } else {
      std::error_code ec;
      std::filesystem::path base = std::filesystem::temp_directory_path(ec);
      if (ec) base = "/tmp";
      std::string templ = (base / "switchboard-it-XXXXXX").string();
      if (::mkdtemp(templ.data()) == nullptr) {
        return Fail(std::string("mkdtemp: ") + std::strerror(errno));
      }
      dir_ = templ;
    }
    master_key_ = options_.master_key.empty() ? NewMasterKeyBase64() : options_.master_key;

    std::vector<std::string> args = {binary, "serve", "--listen", "127.0.0.1:0", "--db", db_path()};
    if (!options_.backends.empty()) {
      const std::string import = dir_ + "/backends.json";
      std::ofstream(import) << BackendsJson(options_.backends);
      args.push_back("--import");
      args.push_back(import);
    }
    args.insert(args.end(), options_.extra_args.begin(), options_.extra_args.end());

    std::vector<std::string> env;
    for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
      // Only what this object sets: no listen address, database, keys or
      // client keys leak in from the test's environment.
      if (std::string_view(*e).rfind("SWITCHBOARD_", 0) == 0) continue;
      env.emplace_back(*e);
    }
    env.push_back("SWITCHBOARD_MASTER_KEY=" + master_key_);
    if (!options_.client_keys.empty()) {
      std::string keys;
      for (const std::string& k : options_.client_keys) keys += (keys.empty() ? "" : ",") + k;
      env.push_back("SWITCHBOARD_CLIENT_KEYS=" + keys);
    }
    env.insert(env.end(), options_.env.begin(), options_.env.end());

    int out[2] = {-1, -1};
    int err[2] = {-1, -1};
    if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) {
      return Fail(std::string("pipe2: ") + std::strerror(errno));
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&actions, out[1], 1);
    posix_spawn_file_actions_adddup2(&actions, err[1], 2);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t none, defaults;
    sigemptyset(&none);
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGPIPE);
    sigaddset(&defaults, SIGTERM);
    sigaddset(&defaults, SIGINT);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::vector<char*> envp;
    for (std::string& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    pid_t child = -1;
    const int rc = ::posix_spawn(&child, binary.c_str(), &actions, &attr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    ::close(out[1]);
    ::close(err[1]);
    if (rc != 0) {
      ::close(out[0]);
      ::close(err[0]);
      return Fail("posix_spawn " + binary + ": " + std::strerror(rc));
    }
    pid_ = child;
    reader_ = std::thread([this, o = out[0], e = err[0]] { ReadOutput(o, e); });

    // The listening line, or an early exit, or the start bound.
    const auto deadline = std::chrono::steady_clock::now() + options_.start_timeout;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait_for(lock, std::chrono::milliseconds(20),
                     [&] { return ListeningPortLocked() > 0; });
        if (const int port = ListeningPortLocked(); port > 0) {
          host_ = "127.0.0.1";
          port_ = port;
          return;
        }
      }
      if (const std::optional<int> status = WaitForExit(std::chrono::milliseconds(0))) {
        stop_reader_ = true;
        if (reader_.joinable()) reader_.join();
        return Fail("the server exited with status " + std::to_string(*status) +
                    " before listening");
      }
      if (std::chrono::steady_clock::now() >= deadline) {
        Stop();
        return Fail("no listening line within " + std::to_string(options_.start_timeout.count()) +
                    " ms");
      }
    }
  }

  // The port of "switchboard listening on http://127.0.0.1:PORT\n" in the
  // stdout seen so far; 0 when not there yet. REQUIRES: mu_ held
  int ListeningPortLocked() const {
    const std::string prefix = std::string(kListeningLine) + "127.0.0.1:";
    const size_t at = stdout_.find(prefix);
    if (at == std::string::npos) return 0;
    const size_t digits = at + prefix.size();
    const size_t end = stdout_.find('\n', digits);
    if (end == std::string::npos || end == digits) return 0;
    int port = 0;
    for (size_t i = digits; i < end; ++i) {
      if (stdout_[i] < '0' || stdout_[i] > '9' || port > 65535) return 0;
      port = port * 10 + (stdout_[i] - '0');
    }
    return port > 0 && port <= 65535 ? port : 0;
  }

  // Drains both pipes until EOF on both, or stop_reader_ once the child is
  // gone and nothing more arrives.
  void ReadOutput(int out_fd, int err_fd) {
    pollfd fds[2] = {{out_fd, POLLIN, 0}, {err_fd, POLLIN, 0}};
    int open = 2;
    char buf[8192];
    while (open > 0) {
      const int r = ::poll(fds, 2, 100);
      if (r < 0 && errno != EINTR) break;
      if (r <= 0) {
        if (stop_reader_) break;
        continue;
      }
      for (int i = 0; i < 2; ++i) {
        if (fds[i].fd < 0 || fds[i].revents == 0) continue;
        const ssize_t n = ::read(fds[i].fd, buf, sizeof(buf));
        if (n > 0) {
          {
            std::lock_guard<std::mutex> lock(mu_);
            output_.append(buf, static_cast<size_t>(n));
            if (i == 0) stdout_.append(buf, static_cast<size_t>(n));
          }
          cv_.notify_all();
        } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
          ::close(fds[i].fd);
          fds[i].fd = -1;
          --open;
        }
      }
    }
    for (const pollfd& p : fds) {
      if (p.fd >= 0) ::close(p.fd);
    }
  }

  const ServerProcessOptions options_;
  std::string dir_;
  bool keep_dir_ = false;
  std::string master_key_;
  std::string host_;
  int port_ = 0;
  pid_t pid_ = -1;
  std::optional<int> exit_status_;
  std::string error_;
  std::thread reader_;
  std::atomic<bool> stop_reader_{false};

  mutable std::mutex mu_;
  mutable std::condition_variable cv_;  // output grew
  std::string output_;                  // guarded by mu_
  std::string stdout_;                  // guarded by mu_
};

}  // namespace switchboard::testing

#endif  // SWITCHBOARD_TESTS_SUPPORT_SERVER_PROCESS_H_
