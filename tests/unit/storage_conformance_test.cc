// Runs the Storage conformance suite on both stores switchboard ships.
#include <tuple>

#include "switchboard/storage.h"

namespace {

struct MemoryStorageMaker {
  static std::unique_ptr<switchboard::Storage> Make() { return switchboard::NewMemoryStorage(); }
};

struct SqliteStorageMaker {
  static std::unique_ptr<switchboard::Storage> Make() {
    auto storage = switchboard::OpenSqliteStorage({.path = ":memory:"});
    if (!storage.ok()) return nullptr;
    return std::move(*storage);
  }
};

}  // namespace

#define SWITCHBOARD_STORAGE_MAKERS std::tuple<MemoryStorageMaker, SqliteStorageMaker>
#include "support/storage_conformance.h"
