#include "switchboard/metrics.h"

#include <cstdio>

#include "switchboard/router.h"

namespace switchboard {
namespace {

// Escapes a label value: backslash, double quote and newline.
std::string Label(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string Number(double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  return buf;
}

void Header(std::string* out, const char* name, const char* type, const char* help) {
  *out += "# HELP ";
  *out += name;
  *out += ' ';
  *out += help;
  *out += "\n# TYPE ";
  *out += name;
  *out += ' ';
  *out += type;
  *out += '\n';
}

}  // namespace

void Metrics::Histogram::Observe(double seconds) {
  for (size_t i = 0; i < kBuckets.size(); ++i) {
    if (seconds <= kBuckets[i]) {
      ++counts[i];
      break;
    }
  }
  ++count;
  sum += seconds;
}

void Metrics::RecordRequest(std::string_view model, std::string_view backend, int status,
                            int attempts) {
  std::lock_guard<std::mutex> lock(mu_);
  ++requests_[{std::string(model), std::string(backend), status}];
  ++attempts_[attempts];
}

void Metrics::RecordAttempt(std::string_view backend, std::string_view outcome, Duration latency,
                            Duration ttfb) {
  std::lock_guard<std::mutex> lock(mu_);
  const std::string name(backend);
  ++upstream_[{name, std::string(outcome)}];
  latency_[name].Observe(std::chrono::duration<double>(latency).count());
  if (ttfb > Duration::zero()) ttfb_[name].Observe(std::chrono::duration<double>(ttfb).count());
}

std::string Metrics::RenderPrometheus(const Router& router) const {
  std::string out;
  out.reserve(8192);
  {
    std::lock_guard<std::mutex> lock(mu_);
    Header(&out, "switchboard_requests_total", "counter",
           "Client requests by canonical model, answering backend and final status.");
    for (const auto& [key, count] : requests_) {
      const auto& [model, backend, status] = key;
      out += "switchboard_requests_total{model=\"" + Label(model) + "\",backend=\"" +
             Label(backend) + "\",status=\"" + std::to_string(status) + "\"} " +
             std::to_string(count) + '\n';
    }
    Header(&out, "switchboard_request_attempts_total", "counter",
           "Client requests by the number of upstream attempts they took.");
    for (const auto& [attempts, count] : attempts_) {
      out += "switchboard_request_attempts_total{attempts=\"" + std::to_string(attempts) +
             "\"} " + std::to_string(count) + '\n';
    }
    Header(&out, "switchboard_upstream_attempts_total", "counter",
           "Upstream attempts by backend and outcome.");
    for (const auto& [key, count] : upstream_) {
      out += "switchboard_upstream_attempts_total{backend=\"" + Label(key.first) +
             "\",outcome=\"" + Label(key.second) + "\"} " + std::to_string(count) + '\n';
    }
    auto histograms = [&out](const char* name, const char* help,
                             const std::map<std::string, Histogram>& by_backend) {
      Header(&out, name, "histogram", help);
      for (const auto& [backend, h] : by_backend) {
        uint64_t cumulative = 0;
        const std::string label = "backend=\"" + Label(backend) + "\"";
        for (size_t i = 0; i < kBuckets.size(); ++i) {
          cumulative += h.counts[i];
          out += std::string(name) + "_bucket{" + label + ",le=\"" + Number(kBuckets[i]) +
                 "\"} " + std::to_string(cumulative) + '\n';
        }
        out += std::string(name) + "_bucket{" + label + ",le=\"+Inf\"} " +
               std::to_string(h.count) + '\n';
        out += std::string(name) + "_sum{" + label + "} " + Number(h.sum) + '\n';
        out += std::string(name) + "_count{" + label + "} " + std::to_string(h.count) + '\n';
      }
    };
    histograms("switchboard_upstream_latency_seconds",
               "Upstream attempt latency, request sent to response complete.", latency_);
    histograms("switchboard_upstream_ttfb_seconds",
               "Upstream time to first byte (response head).", ttfb_);
  }
  Header(&out, "switchboard_in_flight_requests", "gauge", "Client requests being served.");
  out += "switchboard_in_flight_requests " + std::to_string(in_flight()) + '\n';
  Header(&out, "switchboard_overloaded_requests_total", "counter",
         "Client requests refused with 503 at the in-flight limit.");
  out += "switchboard_overloaded_requests_total " + std::to_string(overloaded()) + '\n';

  if (const SharedState* shared = router.shared_state()) {
    Header(&out, "switchboard_shared_state_up", "gauge",
           "1 while the state shared with other instances is reachable.");
    out += "switchboard_shared_state_up " + std::string(shared->connected() ? "1" : "0") + '\n';
    Header(&out, "switchboard_shared_state_instances", "gauge",
           "Instances sharing the state (the last count seen while unreachable).");
    out += "switchboard_shared_state_instances " + std::to_string(shared->instances()) + '\n';
    Header(&out, "switchboard_limit_divisor", "gauge",
           "What each backend's limits are divided by locally: 1, or the instance count while "
           "the shared state is unreachable.");
    out += "switchboard_limit_divisor " + std::to_string(router.limit_divisor()) + '\n';
  }

  const auto snapshot = router.snapshot();
  const auto live = router.LiveStates();
  const SystemTime now = router.clock().WallNow();
  Header(&out, "switchboard_backend_up", "gauge",
         "1 when the backend can be tried now (enabled, not cooling, not in error).");
  std::string cooldown, consecutive, in_flight, tokens;
  for (size_t i = 0; i < live.size() && i < snapshot->entries().size(); ++i) {
    const Backend& b = snapshot->entries()[i].backend;
    const BackendLiveState& s = live[i];
    const std::string label = "{backend=\"" + Label(b.name) + "\",pool=\"" + Label(b.pool) + "\"}";
    const bool cooling = s.state.cooldown_until && *s.state.cooldown_until > now;
    const bool up = b.enabled && s.state.status != BackendStatus::kError && !cooling;
    out += "switchboard_backend_up" + label + (up ? " 1\n" : " 0\n");
    const double remaining =
        cooling ? std::chrono::duration<double>(*s.state.cooldown_until - now).count() : 0;
    cooldown += "switchboard_backend_cooldown_seconds" + label + " " + Number(remaining) + '\n';
    consecutive += "switchboard_backend_consecutive_429" + label + " " +
                   std::to_string(s.state.consecutive_429_count) + '\n';
    in_flight += "switchboard_backend_in_flight" + label + " " +
                 std::to_string(s.limiter.in_flight) + '\n';
    if (b.rpm_limit > 0) {
      tokens += "switchboard_backend_rpm_tokens" + label + " " +
                Number(s.limiter.request_tokens) + '\n';
    }
  }
  Header(&out, "switchboard_backend_cooldown_seconds", "gauge",
         "Seconds until the backend's cooldown ends (0 when not cooling).");
  out += cooldown;
  Header(&out, "switchboard_backend_consecutive_429", "gauge",
         "Consecutive 429 answers from the backend.");
  out += consecutive;
  Header(&out, "switchboard_backend_in_flight", "gauge", "Requests in flight to the backend.");
  out += in_flight;
  Header(&out, "switchboard_backend_rpm_tokens", "gauge",
         "Request tokens available in the backend's rpm bucket (limited backends only).");
  out += tokens;
  return out;
}

}  // namespace switchboard
