#include "switchboard/storage.h"

namespace switchboard {

Result<std::vector<PoolStats>> Storage::GetPoolStats(SystemTime now) {
  auto backends = ListBackends(BackendFilter{});
  if (!backends.ok()) return backends.status();
  auto config = GetConfig();
  if (!config.ok()) return config.status();
  return ComputePoolStats(*backends, *config, now);
}

}  // namespace switchboard
