#include "dashboard_assets.h"

namespace switchboard::server {

const EmbeddedAsset* FindAsset(std::string_view path) {
  // A handful of entries: a linear scan beats building an index.
  for (const EmbeddedAsset& asset : EmbeddedAssets()) {
    if (asset.path == path) return &asset;
  }
  return nullptr;
}

}  // namespace switchboard::server
