// switchboard: the gateway's command line. See `switchboard --help`.
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "cli.h"
#include "server.h"

namespace sbs = switchboard::server;

int main(int argc, char** argv) {
  // Before any thread exists: SIGINT/SIGTERM are taken by sigwait() on one
  // thread (no work ever runs in a signal handler), and a client that hangs
  // up must not kill the process with SIGPIPE.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);
  // No core dumps, not dumpable: the master key and API keys stay in memory.
  if (const std::string problem = sbs::HardenProcess(); !problem.empty()) {
    std::fprintf(stderr, "switchboard: warning: %s\n", problem.c_str());
  }

  const std::vector<std::string> args(argv + 1, argv + argc);
  sbs::Cli cli = sbs::ParseCommandLine(args, sbs::GetEnv);
  switch (cli.action) {
    case sbs::Cli::Action::kHelp:
      std::fputs(sbs::HelpText().c_str(), stdout);
      return 0;
    case sbs::Cli::Action::kServeHelp:
      std::fputs(sbs::ServeHelpText().c_str(), stdout);
      return 0;
    case sbs::Cli::Action::kVersion:
      std::printf("%s\n", sbs::VersionText().c_str());
      return 0;
    case sbs::Cli::Action::kUsageError:
      std::fprintf(stderr, "switchboard: %s\n\n%s", cli.error.c_str(),
                   args.empty()                       ? sbs::HelpText().c_str()
                   : args[0] == "serve"               ? sbs::ServeHelpText().c_str()
                   : args[0] == "rotate-master-key"   ? sbs::RotateHelpText().c_str()
                                                      : sbs::HelpText().c_str());
      return 2;
    case sbs::Cli::Action::kRotateMasterKeyHelp:
      std::fputs(sbs::RotateHelpText().c_str(), stdout);
      return 0;
    case sbs::Cli::Action::kRotateMasterKey: {
      switchboard::Result<sbs::RotateSummary> done = sbs::RotateMasterKeyCommand(cli.rotate);
      if (!done.ok()) {
        std::fprintf(stderr, "switchboard: rotate-master-key: %s\n",
                     done.status().message().c_str());
        return 1;
      }
      std::printf("switchboard: %d API key(s) now under master key %s%s; start the server with "
                  "--master-key-file %s\n",
                  done->keys, done->new_key_id.c_str(),
                  done->generated ? " (generated)" : "", cli.rotate.new_master_key_file.c_str());
      return 0;
    }
    case sbs::Cli::Action::kServe:
      break;
  }

  const bool demo = cli.options.demo;
  const auto drain = cli.options.drain_timeout;
  sbs::Server server(std::move(cli.options));
  if (switchboard::Status s = server.Start(); !s.ok()) {
    std::fprintf(stderr, "switchboard: %s\n", s.message().c_str());
    return 1;
  }
  // Tests and scripts wait for exactly this line.
  std::printf("switchboard listening on %s\n", server.url().c_str());
  std::fflush(stdout);
  if (demo) {
    std::fprintf(stderr,
                 "switchboard: demo mode: backends demo-primary (pool primary, answers every "
                 "4th request with 429) and demo-fallback (pool fallback) are mock upstreams in "
                 "this process; store: %s\n"
                 "  try: curl -N %s/v1/chat/completions -H 'content-type: application/json' "
                 "-d '{\"model\":\"gpt-4o-mini\",\"stream\":true,\"messages\":[{\"role\":"
                 "\"user\",\"content\":\"hi\"}]}'\n",
                 server.db_path().c_str(), server.url().c_str());
  }

  std::atomic<bool> exiting{false};
  std::thread signals([&] {
    int signals_seen = 0;
    for (;;) {
      int sig = 0;
      if (sigwait(&stop_signals, &sig) != 0) continue;
      if (exiting) return;
      if (++signals_seen == 1) {
        std::fprintf(stderr,
                     "switchboard: %s: finishing requests in flight (up to %llds; again to stop "
                     "now)\n",
                     sig == SIGINT ? "interrupted" : "terminated",
                     static_cast<long long>(
                         std::chrono::duration_cast<std::chrono::seconds>(drain).count()));
        server.Shutdown();
      } else {
        server.Shutdown(/*immediate=*/true);
      }
    }
  });

  const switchboard::Status run = server.Run();
  exiting = true;
  pthread_kill(signals.native_handle(), SIGTERM);  // wakes sigwait(); blocked, so never fatal
  signals.join();
  if (!run.ok()) {
    std::fprintf(stderr, "switchboard: %s\n", run.ToString().c_str());
    return 1;
  }
  return 0;
}
