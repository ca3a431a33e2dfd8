#include "switchboard/storage.h"

namespace switchboard {

Result<std::vector<PoolStats>> Storage::GetPoolStats(SystemTime now) {
  auto backends = ListBackends(BackendFilter{});
  if (!backends.ok()) return backends.status();
  auto config = GetConfig();
  if (!config.ok()) return config.status();
  return ComputePoolStats(*backends, *config, now);
}

namespace {
Status NoClientKeys() {
  return FailedPreconditionError("this store does not keep client keys");
}
}  // namespace

Status Storage::CreateClientKey(const ClientKey&) { return NoClientKeys(); }
Result<std::vector<ClientKey>> Storage::ListClientKeys() { return std::vector<ClientKey>{}; }
Status Storage::RevokeClientKey(const std::string&, SystemTime) { return NoClientKeys(); }
Status Storage::TouchClientKeys(const std::vector<ClientKeyUse>&) { return NoClientKeys(); }

}  // namespace switchboard
