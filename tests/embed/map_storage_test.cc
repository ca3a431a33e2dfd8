// Runs the Storage conformance suite on the custom store of
// examples/custom_storage.cpp (examples/map_storage.h).
#include <memory>
#include <tuple>

#include "map_storage.h"

namespace {

struct MapStorageMaker {
  static std::unique_ptr<switchboard::Storage> Make() {
    return std::make_unique<example::MapStorage>(switchboard::NewMemoryStorage());
  }
};

}  // namespace

#define SWITCHBOARD_STORAGE_MAKERS std::tuple<MapStorageMaker>
#include "support/storage_conformance.h"
