// Scale-out, end to end: three real `switchboard serve` processes on one
// PostgreSQL store (the ctest fixture postgres_server, a fresh schema per
// test) and one Redis (a private redis-server per test, started and stopped
// with tests/redis/redis_fixture.sh), against in-process mock upstreams.
//
//   * a global rpm_limit of 60 holds within 5% under load spread over all three;
//   * a 429 seen by one instance cools the backend on the others within 100 ms,
//     before their next request;
//   * an admin change made on one instance routes on the others within 1 s;
//   * with Redis killed mid-load no request is lost, each instance falls back
//     to limit / 3 and says so in /metrics; with Redis back it recovers.
#include <sys/stat.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"
#include "postgres_test_env.h"

namespace switchboard::testing {
namespace {

const std::string kChatPath = "/v1/chat/completions";
const std::string kAdminToken = "admin-token-for-the-scale-out-tests-0123";

httplib::Headers AdminHeaders() { return {{"Authorization", "Bearer " + kAdminToken}}; }

// A redis-server of the test's own, through the fixture script.
class PrivateRedis {
 public:
  PrivateRedis() {
    char pattern[] = "/tmp/switchboard-redis-XXXXXX";
    const char* dir = ::mkdtemp(pattern);
    REQUIRE(dir != nullptr);
    dir_ = dir;
    REQUIRE(Run("start"));
    std::ifstream in(dir_ + "/url");
    std::getline(in, url_);
    REQUIRE(url_.rfind("redis://", 0) == 0);
  }
  ~PrivateRedis() {
    Run("stop");
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  PrivateRedis(const PrivateRedis&) = delete;
  PrivateRedis& operator=(const PrivateRedis&) = delete;

  const std::string& url() const { return url_; }
  // Kills it, and starts it again on the same port (with nothing in it).
  bool Halt() { return Run("halt"); }
  bool Resume() { return Run("resume"); }

 private:
  bool Run(const std::string& verb) {
    const std::string command =
        std::string(SWITCHBOARD_REDIS_FIXTURE) + " " + verb + " " + dir_ + " >/dev/null 2>&1";
    return std::system(command.c_str()) == 0;
  }
  std::string dir_;
  std::string url_;
};

std::string SchemaUrl(const std::string& schema) {
  return RequireTestPostgresUrl() + "?options=-c%20search_path%3D" + schema;
}

std::string FreshStore() {
  const std::string schema = FreshSchemaName();
  RawPostgres raw(RequireTestPostgresUrl());
  REQUIRE(raw.ok());
  raw.Query("CREATE SCHEMA " + schema);
  return SchemaUrl(schema);
}

// Three instances on one store and one Redis.
struct Cluster {
  std::string store = FreshStore();
  PrivateRedis redis;
  std::string master_key = NewMasterKeyBase64();
  std::vector<std::unique_ptr<TestServer>> servers;

  explicit Cluster(std::vector<BackendSpec> backends = {}) {
    for (int i = 0; i < 3; ++i) {
      ServerProcessOptions o;
      // The first imports the backends into the shared store; the others
      // load them from it.
      if (i == 0) o.backends = backends;
      o.env = {"SWITCHBOARD_ADMIN_TOKEN=" + kAdminToken};
      o.extra_args = {"--store", store, "--redis", redis.url(), "--drain-seconds", "1"};
      o.master_key = master_key;
      servers.push_back(std::make_unique<TestServer>(std::move(o)));
    }
  }
  TestServer& operator[](size_t i) { return *servers[i]; }
};

std::string BackendId(TestServer& server, const std::string& name) {
  httplib::Client client = server.Client();
  auto res = client.Get("/admin/backends", AdminHeaders());
  REQUIRE(res);
  REQUIRE(res->status == 200);
  rapidjson::Document doc;
  doc.Parse(res->body.c_str());
  REQUIRE(doc.IsObject());
  for (const auto& b : doc["data"].GetArray()) {
    if (std::string(b["name"].GetString()) == name) return b["id"].GetString();
  }
  FAIL("no backend named " << name);
  return "";
}

std::string BackendStatus(TestServer& server, const std::string& id) {
  httplib::Client client = server.Client();
  auto res = client.Get("/admin/backends/" + id, AdminHeaders());
  if (!res || res->status != 200) return "";
  return JsonStringField(res->body, "status");
}

// A /metrics gauge's value, or -1.
double Gauge(TestServer& server, const std::string& name) {
  httplib::Client client = server.Client();
  auto res = client.Get("/metrics");
  if (!res || res->status != 200) return -1;
  const std::string& body = res->body;
  const size_t at = body.find("\n" + name + " ");
  if (at == std::string::npos) return -1;
  return std::atof(body.c_str() + at + name.size() + 2);
}

TEST_CASE("Three instances hold a global rpm_limit of 60 within 5% under load spread over all",
          "[scale_out]") {
  MockUpstream upstream(32);
  upstream.SetDefault(kChatPath, ChatCompletionReply("limited-upstream", "counted"));
  BackendSpec limited = Backend("limited", upstream.base_url(), "primary");
  limited.models = {{"limited-model", "limited-upstream"}};
  limited.rpm_limit = 60;
  Cluster cluster({limited});

  // 6 clients, 2 per instance, as fast as they get answers, for 15 s: the
  // bucket's 60 plus one a second.
  constexpr int kSeconds = 15;
  std::atomic<int> served{0}, refused{0}, other{0};
  const SteadyTime start = SteadyClock::now();
  const SteadyTime until = start + seconds(kSeconds);
  std::vector<std::thread> clients;
  for (int c = 0; c < 6; ++c) {
    clients.emplace_back([&, c] {
      httplib::Client client = cluster[static_cast<size_t>(c % 3)].Client();
      while (SteadyClock::now() < until) {
        auto res = client.Post(kChatPath, ChatBody("limited-model"), "application/json");
        if (res && res->status == 200) {
          ++served;
        } else if (res && res->status == 429) {
          ++refused;
          std::this_thread::sleep_for(milliseconds(20));
        } else {
          ++other;
        }
      }
    });
  }
  for (auto& t : clients) t.join();
  const double elapsed_s = MillisBetween(start, SteadyClock::now()) / 1000.0;
  const double allowed = 60 + elapsed_s;  // full bucket + refill at 1/s
  std::printf("scale_out: %d served, %d refused (429), %d other in %.1f s; the limit allows %.1f\n",
              served.load(), refused.load(), other.load(), elapsed_s, allowed);
  CHECK(other == 0);
  CHECK(refused > 0);
  CHECK(served >= allowed * 0.95);
  CHECK(served <= allowed * 1.05);
  CHECK(static_cast<double>(upstream.request_count()) == served.load());
}

TEST_CASE("A 429 seen by one instance cools the backend on the others within 100 ms",
          "[scale_out]") {
  MockUpstream hot(8);
  hot.SetDefault(kChatPath, RateLimitedReply(30));
  MockUpstream spare(8);
  spare.SetDefault(kChatPath, ChatCompletionReply("gpt-4o-upstream", "from the spare"));
  Cluster cluster({Backend("hot", hot.base_url(), "primary"),
                   Backend("spare", spare.base_url(), "fallback")});
  const std::string hot_id = BackendId(cluster[0], "hot");
  for (size_t i = 0; i < 3; ++i) REQUIRE(BackendStatus(cluster[i], hot_id) == "healthy");

  httplib::Client a = cluster[0].Client();
  auto first = a.Post(kChatPath, ChatBody("gpt-4o"), "application/json");
  REQUIRE(first);
  CHECK(first->status == 200);
  CHECK(first->get_header_value("x-switchboard-backend") == "spare");
  const SteadyTime answered = SteadyClock::now();
  REQUIRE(hot.request_count() == 1);

  // The others show it cooling within 100 ms of instance A's answer.
  long long cooled_ms = -1;
  while (MillisBetween(answered, SteadyClock::now()) < 2000) {
    if (BackendStatus(cluster[1], hot_id) == "cooling" &&
        BackendStatus(cluster[2], hot_id) == "cooling") {
      cooled_ms = MillisBetween(answered, SteadyClock::now());
      break;
    }
  }
  std::printf("scale_out: the 429 on instance 0 showed on instances 1 and 2 after %lld ms\n",
              cooled_ms);
  CHECK(cooled_ms >= 0);
  CHECK(cooled_ms < 100);
  // Their next requests skip it: the hot backend sees nothing more.
  for (size_t i = 1; i < 3; ++i) {
    httplib::Client c = cluster[i].Client();
    auto res = c.Post(kChatPath, ChatBody("gpt-4o"), "application/json");
    REQUIRE(res);
    CHECK(res->status == 200);
    CHECK(res->get_header_value("x-switchboard-backend") == "spare");
  }
  CHECK(hot.request_count() == 1);
}

TEST_CASE("An admin change on one instance routes on the others within 1 s", "[scale_out]") {
  MockUpstream upstream(8);
  upstream.SetDefault(kChatPath, ChatCompletionReply("new-upstream", "from the new backend"));
  Cluster cluster;
  httplib::Client b = cluster[1].Client();
  auto before = b.Post(kChatPath, ChatBody("new-model"), "application/json");
  REQUIRE(before);
  CHECK(before->status == 404);

  httplib::Client a = cluster[0].Client();
  const std::string body = R"({"name":"new","api_base_url":")" + upstream.base_url() +
                           R"(","api_key":"sk-scale-out-secret","model_mappings":)"
                           R"({"new-model":{"upstream_model":"new-upstream","weight":1}}})";
  auto created = a.Post("/admin/backends", AdminHeaders(), body, "application/json");
  REQUIRE(created);
  REQUIRE(created->status == 201);
  const SteadyTime changed = SteadyClock::now();

  for (size_t i = 1; i < 3; ++i) {
    httplib::Client c = cluster[i].Client();
    long long routed_ms = -1;
    while (MillisBetween(changed, SteadyClock::now()) < 5000) {
      auto res = c.Post(kChatPath, ChatBody("new-model"), "application/json");
      if (res && res->status == 200) {
        routed_ms = MillisBetween(changed, SteadyClock::now());
        break;
      }
    }
    std::printf("scale_out: instance %zu routed the new backend %lld ms after it was created\n",
                i, routed_ms);
    CHECK(routed_ms >= 0);
    CHECK(routed_ms < 1000);
  }
}

TEST_CASE("With Redis killed mid-load no request is lost, limits fall back to limit / 3, "
          "and everything recovers when Redis is back",
          "[scale_out]") {
  MockUpstream upstream(32);
  upstream.SetDefault(kChatPath, ChatCompletionReply("gpt-4o-upstream", "served"));
  BackendSpec open = Backend("open", upstream.base_url(), "primary");
  BackendSpec limited = Backend("limited", upstream.base_url(), "primary");
  limited.models = {{"limited-model", "gpt-4o-upstream"}};
  limited.rpm_limit = 60000;  // never the limit here: shows the divisor
  Cluster cluster({open, limited});
  for (size_t i = 0; i < 3; ++i) {
    REQUIRE(Gauge(cluster[i], "switchboard_shared_state_up") == 1);
    REQUIRE(Gauge(cluster[i], "switchboard_limit_divisor") == 1);
  }

  // Steady load on every instance while Redis goes away and comes back.
  std::atomic<bool> stop{false};
  std::atomic<int> served{0};
  std::mutex mu;
  std::vector<std::string> failures;
  std::vector<std::thread> clients;
  for (int c = 0; c < 6; ++c) {
    clients.emplace_back([&, c] {
      httplib::Client client = cluster[static_cast<size_t>(c % 3)].Client();
      while (!stop) {
        const std::string model = c % 2 == 0 ? "gpt-4o" : "limited-model";
        auto res = client.Post(kChatPath, ChatBody(model), "application/json");
        if (res && res->status == 200) {
          ++served;
        } else {
          std::lock_guard<std::mutex> lock(mu);
          failures.push_back(res ? std::to_string(res->status) + " " + res->body.substr(0, 200)
                                 : "no answer");
        }
        std::this_thread::sleep_for(milliseconds(5));
      }
    });
  }
  std::this_thread::sleep_for(seconds(1));
  REQUIRE(cluster.redis.Halt());
  const SteadyTime killed = SteadyClock::now();

  // Every instance notices and divides its limits by the 3 instances it saw.
  for (size_t i = 0; i < 3; ++i) {
    while (MillisBetween(killed, SteadyClock::now()) < 10000 &&
           Gauge(cluster[i], "switchboard_shared_state_up") != 0) {
      std::this_thread::sleep_for(milliseconds(50));
    }
    CHECK(Gauge(cluster[i], "switchboard_shared_state_up") == 0);
    CHECK(Gauge(cluster[i], "switchboard_limit_divisor") == 3);
    CHECK(Gauge(cluster[i], "switchboard_shared_state_instances") == 3);
    CHECK(cluster[i].output().find("shared state unreachable") != std::string::npos);
  }
  // The limited backend's local bucket holds a third of its 60,000.
  const std::string tokens = R"(switchboard_backend_rpm_tokens{backend="limited",pool="primary"})";
  for (size_t i = 0; i < 3; ++i) {
    const double available = Gauge(cluster[i], tokens);
    INFO("instance " << i << ": " << available << " tokens");
    CHECK(available >= 0);
    CHECK(available <= 20000);
  }
  const int served_before = served.load();
  std::this_thread::sleep_for(seconds(2));
  CHECK(served.load() > served_before);  // still serving without Redis

  REQUIRE(cluster.redis.Resume());
  const SteadyTime restarted = SteadyClock::now();
  for (size_t i = 0; i < 3; ++i) {
    while (MillisBetween(restarted, SteadyClock::now()) < 15000 &&
           Gauge(cluster[i], "switchboard_shared_state_up") != 1) {
      std::this_thread::sleep_for(milliseconds(50));
    }
    CHECK(Gauge(cluster[i], "switchboard_shared_state_up") == 1);
    CHECK(Gauge(cluster[i], "switchboard_limit_divisor") == 1);
    CHECK(cluster[i].output().find("shared state reachable again") != std::string::npos);
  }
  std::this_thread::sleep_for(seconds(1));
  stop = true;
  for (auto& t : clients) t.join();
  std::printf("scale_out: %d requests served across the Redis outage, %zu failed\n",
              served.load(), failures.size());
  INFO((failures.empty() ? std::string() : failures.front()));
  CHECK(failures.empty());
}

}  // namespace
}  // namespace switchboard::testing
