// switchboard/switchboard.h
// The umbrella header: everything an embedder needs to route LLM requests.
//
//   #include <switchboard/switchboard.h>
//   auto storage = switchboard::OpenSqliteStorage({.path = "switchboard.db"});
//   switchboard::Router router(switchboard::Clock::Real(), nullptr);
//   router.LoadFrom(**storage);
//   switchboard::RoutePlan plan = router.Route("gpt-4o");
#ifndef SWITCHBOARD_SWITCHBOARD_H_
#define SWITCHBOARD_SWITCHBOARD_H_

#include "switchboard/admin.h"
#include "switchboard/clock.h"
#include "switchboard/config.h"
#include "switchboard/cooldown_manager.h"
#include "switchboard/json.h"
#include "switchboard/metrics.h"
#include "switchboard/pool_manager.h"
#include "switchboard/proxy.h"
#include "switchboard/rate_limiter.h"
#include "switchboard/router.h"
#include "switchboard/secrets.h"
#include "switchboard/shared_state.h"
#include "switchboard/status.h"
#include "switchboard/storage.h"
#include "switchboard/storage_writer.h"
#include "switchboard/types.h"
#include "switchboard/upstream.h"

#endif  // SWITCHBOARD_SWITCHBOARD_H_
