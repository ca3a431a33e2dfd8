// The JSON columns both SQL stores keep: a backend's model mappings and the
// config document. Private to the library.
#ifndef SWITCHBOARD_SRC_STORAGE_COLUMNS_H_
#define SWITCHBOARD_SRC_STORAGE_COLUMNS_H_

#include <map>
#include <string>

#include "switchboard/config.h"
#include "switchboard/status.h"
#include "switchboard/types.h"

namespace switchboard::internal {

// {"<model>":{"upstream_model":"...","weight":N},...}
std::string MappingsToJson(const std::map<std::string, ModelMapping>& mappings);
// kInternal when the stored text is not what MappingsToJson() writes.
Result<std::map<std::string, ModelMapping>> MappingsFromJson(const std::string& json);

// The stored config (written with ConfigToJson() of switchboard/json.h).
// Fields missing from the document keep their Config{} defaults and unknown
// ones are ignored, so builds can add settings without a migration and an
// older build still reads a newer document. kInternal for a malformed field.
Result<Config> StoredConfigFromJson(const std::string& json);

}  // namespace switchboard::internal

#endif  // SWITCHBOARD_SRC_STORAGE_COLUMNS_H_
