#include "admin_api.h"

#include <charconv>
#include <optional>

#include "dashboard_assets.h"
#include "http_server.h"
#include "http_util.h"
#include "switchboard/json.h"

namespace switchboard::server {
namespace {

using httplib::Request;
using httplib::Response;

void SendJson(Response& res, int status, std::string body) {
  res.status = status;
  res.body = std::move(body);
  SetHeader(res, "Content-Type", "application/json");
  SetHeader(res, "Cache-Control", "no-store");
}

// 400 for malformed JSON, 422 for a named field, 404, 409, ...
void SendStatus(Response& res, const Status& status) {
  const int http = HttpStatusFor(status, /*field_errors_422=*/true);
  SendError(res, Api::kOpenAI, http, status.message(), "", status.param());
  SetHeader(res, "Cache-Control", "no-store");
}

// An integer query parameter in [min, max]; `fallback` when absent.
Result<int64_t> IntParam(const Request& req, const char* name, int64_t fallback, int64_t min,
                         int64_t max) {
  if (!req.has_param(name)) return fallback;
  const std::string text = req.get_param_value(name);
  int64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value < min || value > max) {
    return InvalidArgumentError(
        "must be an integer between " + std::to_string(min) + " and " + std::to_string(max), name);
  }
  return value;
}

}  // namespace

std::vector<AdminRoute> AdminApi::Routes() {
  AdminService& a = admin_;
  std::vector<AdminRoute> routes;
  using Handler = std::function<void(const Request&, Response&, const std::string&)>;
  auto add = [&routes](std::string method, std::string pattern, std::string example,
                       Handler handler) {
    routes.push_back(
        {std::move(method), std::move(pattern), std::move(example), std::move(handler)});
  };

  add("GET", "/admin/backends", "/admin/backends",
      [&a]([[maybe_unused]] const Request& req, Response& res,
           [[maybe_unused]] const std::string& body) {
        BackendFilter filter;
        if (req.has_param("pool")) filter.pool = req.get_param_value("pool");
        if (req.has_param("enabled")) {
          const std::string v = req.get_param_value("enabled");
          if (v != "true" && v != "false") {
            return SendStatus(res, InvalidArgumentError("must be true or false", "enabled"));
          }
          filter.enabled = v == "true";
        }
        auto list = a.ListBackends(filter);
        if (!list.ok()) return SendStatus(res, list.status());
        SendJson(res, 200, BackendListToJson(*list));
      });
  add("POST", "/admin/backends", "/admin/backends",
      [&a]([[maybe_unused]] const Request& req, Response& res,
           [[maybe_unused]] const std::string& body) {
        auto b = a.CreateBackend(body);
        if (!b.ok()) return SendStatus(res, b.status());
        SendJson(res, 201, BackendToJson(*b));
      });
  add("GET", R"(/admin/backends/([^/]+))", "/admin/backends/bkd_x",
      [&a]([[maybe_unused]] const Request& req, Response& res,
           [[maybe_unused]] const std::string& body) {
        auto b = a.GetBackend(req.matches[1]);
        if (!b.ok()) return SendStatus(res, b.status());
        SendJson(res, 200, BackendToJson(*b));
      });
  add("PATCH", R"(/admin/backends/([^/]+))", "/admin/backends/bkd_x",
      [&a]([[maybe_unused]] const Request& req, Response& res,
           [[maybe_unused]] const std::string& body) {
        auto b = a.UpdateBackend(req.matches[1], body);
        if (!b.ok()) return SendStatus(res, b.status());
        SendJson(res, 200, BackendToJson(*b));
      });
  add("DELETE", R"(/admin/backends/([^/]+))", "/admin/backends/bkd_x",
      [&a]([[maybe_unused]] const Request& req, Response& res,
           [[maybe_unused]] const std::string& body) {
        if (Status s = a.DeleteBackend(req.matches[1]); !s.ok()) return SendStatus(res, s);
        res.status = 204;
      });
  add("POST", R"(/admin/backends/([^/]+)/cooldown/reset)", "/admin/backends/bkd_x/cooldown/reset",
      [&a]([[maybe_unused]] const Request& req, Response& res,
           [[maybe_unused]] const std::string& body) {
        auto b = a.ResetCooldown(req.matches[1]);
        if (!b.ok()) return SendStatus(res, b.status());
        SendJson(res, 200, BackendToJson(*b));
      });
  add("GET", "/admin/pools", "/admin/pools",
      [&a](const Request&, Response& res, const std::string&) {
        auto pools = a.Pools();
        if (!pools.ok()) return SendStatus(res, pools.status());
        SendJson(res, 200, PoolStatsToJson(*pools));
      });
  add("GET", "/admin/stats", "/admin/stats",
      [&a]([[maybe_unused]] const Request& req, Response& res,
           [[maybe_unused]] const std::string& body) {
        auto window = IntParam(req, "window", 3600, 1, 30 * 86400);
        if (!window.ok()) return SendStatus(res, window.status());
        auto stats = a.Stats(*window);
        if (!stats.ok()) return SendStatus(res, stats.status());
        SendJson(res, 200, UsageStatsToJson(*stats, static_cast<int>(*window)));
      });
  add("GET", "/admin/usage", "/admin/usage",
      [&a]([[maybe_unused]] const Request& req, Response& res,
           [[maybe_unused]] const std::string& body) {
        auto limit = IntParam(req, "limit", 100, 1, 1000);
        if (!limit.ok()) return SendStatus(res, limit.status());
        std::optional<int64_t> before;
        if (req.has_param("before")) {
          auto cursor = IntParam(req, "before", 0, 1, INT64_MAX);
          if (!cursor.ok()) return SendStatus(res, cursor.status());
          before = *cursor;
        }
        auto page = a.Usage(static_cast<int>(*limit), before);
        if (!page.ok()) return SendStatus(res, page.status());
        SendJson(res, 200, UsagePageToJson(*page));
      });
  add("GET", "/admin/cooldowns", "/admin/cooldowns",
      [&a]([[maybe_unused]] const Request& req, Response& res,
           [[maybe_unused]] const std::string& body) {
        auto limit = IntParam(req, "limit", 100, 1, 1000);
        if (!limit.ok()) return SendStatus(res, limit.status());
        auto events = a.Cooldowns(static_cast<int>(*limit));
        if (!events.ok()) return SendStatus(res, events.status());
        SendJson(res, 200, CooldownEventsToJson(*events));
      });
  add("GET", "/admin/config", "/admin/config",
      [&a](const Request&, Response& res, const std::string&) {
        auto config = a.GetConfig();
        if (!config.ok()) return SendStatus(res, config.status());
        SendJson(res, 200, ConfigToJson(*config));
      });
  add("PATCH", "/admin/config", "/admin/config",
      [&a]([[maybe_unused]] const Request& req, Response& res,
           [[maybe_unused]] const std::string& body) {
        auto config = a.PatchConfig(body);
        if (!config.ok()) return SendStatus(res, config.status());
        SendJson(res, 200, ConfigToJson(*config));
      });
  add("GET", "/admin/keys", "/admin/keys", [&a](const Request&, Response& res, const std::string&) {
    auto keys = a.ListClientKeys();
    if (!keys.ok()) return SendStatus(res, keys.status());
    SendJson(res, 200, ClientKeyListToJson(*keys));
  });
  add("POST", "/admin/keys", "/admin/keys",
      [&a]([[maybe_unused]] const Request& req, Response& res, const std::string& body) {
        auto created = a.CreateClientKey(body);
        if (!created.ok()) return SendStatus(res, created.status());
        SendJson(res, 201, CreatedClientKeyToJson(*created));
      });
  add("DELETE", R"(/admin/keys/([^/]+))", "/admin/keys/key_x",
      [&a](const Request& req, Response& res, [[maybe_unused]] const std::string& body) {
        if (Status s = a.RevokeClientKey(req.matches[1]); !s.ok()) return SendStatus(res, s);
        res.status = 204;
      });
  return routes;
}

void AdminApi::Register(httplib::Server& server) {
  for (AdminRoute& route : Routes()) {
    auto authorized = [this](const Request& req, Response& res) {
      if (auth_.Verify(BearerToken(req))) return true;
      SendError(res, Api::kOpenAI, 401, "Missing or invalid admin token.", "invalid_admin_token");
      SetHeader(res, "WWW-Authenticate", "Bearer");
      return false;
    };
    if (route.method == "GET") {
      server.Get(route.pattern,
                 [authorized, handler = route.handler](const Request& req, Response& res) {
                   if (authorized(req, res)) handler(req, res, "");
                 });
      continue;
    }
    // Methods with a body read it themselves (the catch-all routes take
    // content readers too, and those are matched first), after auth, within
    // the limit.
    auto with_body = [authorized, handler = route.handler](const Request& req, Response& res,
                                                           const httplib::ContentReader& reader) {
      if (!authorized(req, res)) {
        if (HasRequestBody(req)) CloseConnectionAfter(res);
        return;
      }
      std::string body;
      const BodyRead read = ReadBody(req, res, reader, AdminApi::kMaxBody, &body);
      if (read != BodyRead::kOk) {
        CloseConnectionAfter(res);
        if (read == BodyRead::kTooLarge) {
          SendError(res, Api::kOpenAI, 413, "admin request bodies are limited to 1 MiB");
        } else {
          SendError(res, Api::kOpenAI, 400, "the request body could not be read");
        }
        return;
      }
      handler(req, res, body);
    };
    if (route.method == "POST") server.Post(route.pattern, with_body);
    if (route.method == "PATCH") server.Patch(route.pattern, with_body);
    if (route.method == "DELETE") server.Delete(route.pattern, with_body);
  }
  // The dashboard: static, no data, so no auth; the page asks for the token.
  server.Get(R"(/|/assets/[A-Za-z0-9._-]+)", [](const Request& req, Response& res) {
    const EmbeddedAsset* asset = FindAsset(req.path);
    if (asset == nullptr) {
      SendError(res, Api::kOpenAI, 404, "Unknown request URL: GET " + req.path);
      return;
    }
    res.set_content(std::string(asset->body), std::string(asset->content_type));
    SetHeader(res, "Cache-Control", "no-cache");
    SetHeader(res, "X-Content-Type-Options", "nosniff");
    SetHeader(res, "Referrer-Policy", "no-referrer");
    SetHeader(res, "Content-Security-Policy",
              "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
              "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'");
  });
}

}  // namespace switchboard::server
