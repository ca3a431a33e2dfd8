// server/dashboard_assets.h
// The operator dashboard's files (HTML, JS, CSS, Chart.js), compiled into the
// binary by cmake/EmbedAssets.cmake, so that nothing is installed beside it.
//
//   if (const EmbeddedAsset* a = FindAsset(req.path)) {
//     res.set_content(std::string(a->body), std::string(a->content_type));
//   }
#ifndef SWITCHBOARD_SERVER_DASHBOARD_ASSETS_H_
#define SWITCHBOARD_SERVER_DASHBOARD_ASSETS_H_

#include <span>
#include <string_view>

namespace switchboard::server {

// One embedded file. All views refer to static storage.
struct EmbeddedAsset {
  std::string_view path;          // URL path: "/", "/assets/app.js", ...
  std::string_view content_type;  // with "; charset=utf-8" for text types
  std::string_view body;
};

// Every embedded asset (generated code). Thread-safe; static storage.
std::span<const EmbeddedAsset> EmbeddedAssets();

// The asset served at the URL path `path` (exact match, no query string), or
// nullptr. "/" is the dashboard page; the rest live under "/assets/".
// Thread-safe; the result points to static storage.
const EmbeddedAsset* FindAsset(std::string_view path);

}  // namespace switchboard::server

#endif  // SWITCHBOARD_SERVER_DASHBOARD_ASSETS_H_
