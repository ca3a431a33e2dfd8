// Byte-level lookups in JSON text the caller has already validated, for the
// request path: the proxy splices the upstream model into the client's bytes
// instead of re-serializing the whole document.
#ifndef SWITCHBOARD_SRC_JSON_JSON_SCAN_H_
#define SWITCHBOARD_SRC_JSON_JSON_SCAN_H_

#include <cstddef>
#include <optional>
#include <string_view>
#include <utility>

namespace switchboard::internal {

// [begin, end) of the string value of the top-level member `key` of the JSON
// object `json`, quotes included. nullopt unless the member is there exactly
// once, with a string value, and no top-level key holds an escape (which
// could spell `key` differently): then the caller falls back to a parser.
// REQUIRES: `json` is valid JSON (checked by a parser before).
std::optional<std::pair<size_t, size_t>> TopLevelValueSpan(std::string_view json,
                                                           std::string_view key);

}  // namespace switchboard::internal

#endif  // SWITCHBOARD_SRC_JSON_JSON_SCAN_H_
