// OpenRedisSharedState() in a build without hiredis (SWITCHBOARD_WITH_REDIS off).
#include "switchboard/redis_shared_state.h"

namespace switchboard {

Result<std::unique_ptr<SharedState>> OpenRedisSharedState(RedisSharedStateOptions) {
  return FailedPreconditionError(
      "this build of switchboard has no Redis support (configure with "
      "SWITCHBOARD_WITH_REDIS=ON and libhiredis-dev installed)");
}

bool RedisSupported() { return false; }

}  // namespace switchboard
