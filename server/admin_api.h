// server/admin_api.h
// The admin API (/admin/...) over AdminService, and the dashboard's assets.
// Every admin route is listed in AdminRoutes(), and RegisterAdminRoutes()
// wraps each handler in the token check, so a route cannot be added without
// auth (tests walk the table).
//
//   AdminApi api(admin_service, admin_auth);
//   api.Register(http_server);   // before any catch-all routes
#ifndef SWITCHBOARD_SERVER_ADMIN_API_H_
#define SWITCHBOARD_SERVER_ADMIN_API_H_

#include <httplib.h>

#include <functional>
#include <string>
#include <vector>

#include "admin_auth.h"
#include "switchboard/admin.h"

namespace switchboard::server {

struct AdminRoute {
  std::string method;   // "GET", "POST", "PATCH", "DELETE"
  std::string pattern;  // httplib regex, e.g. R"(/admin/backends/([^/]+))"
  std::string example;  // a concrete path matching `pattern`, for tests
  // Runs after auth, with the request body read (limited to kMaxBody).
  std::function<void(const httplib::Request&, httplib::Response&, const std::string& body)> handler;
};

class AdminApi {
 public:
  // Both must outlive the API.
  AdminApi(AdminService& admin, const AdminAuth& auth) : admin_(admin), auth_(auth) {}

  // The admin routes, handlers unwrapped (no auth check).
  std::vector<AdminRoute> Routes();

  // Registers every route behind the admin token, plus the dashboard (GET /
  // and /assets/*, no auth: it holds no data). Call before catch-all routes.
  void Register(httplib::Server& server);

  // Largest admin request body.
  static constexpr size_t kMaxBody = 1 << 20;

 private:
  AdminService& admin_;
  const AdminAuth& auth_;
};

}  // namespace switchboard::server

#endif  // SWITCHBOARD_SERVER_ADMIN_API_H_
