// Nesting-depth guards for JSON, shared by the parsers that must bound how
// deep a hostile document may go (RapidJSON's writer, and its recursive
// parser, recurse once per level).
#ifndef SWITCHBOARD_SRC_JSON_JSON_DEPTH_H_
#define SWITCHBOARD_SRC_JSON_JSON_DEPTH_H_

#include <string_view>

#include "rapidjson/document.h"

namespace switchboard::internal {

// Whether the JSON text `text` nests arrays and objects deeper than `limit`
// (brackets inside strings do not count). Checked before a parse whose
// result is walked recursively; invalid JSON is the parser's to refuse.
inline bool TextNestsDeeperThan(std::string_view text, int limit) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > limit) return true;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return false;
}

// True when `v` nests more than `limit` containers deep (a scalar has depth
// 0). Recurses at most `limit` + 1 levels.
inline bool ValueDeeperThan(const rapidjson::Value& v, int limit) {
  if (v.IsObject()) {
    if (limit == 0) return true;
    for (const auto& m : v.GetObject()) {
      if (ValueDeeperThan(m.value, limit - 1)) return true;
    }
  } else if (v.IsArray()) {
    if (limit == 0) return true;
    for (const auto& e : v.GetArray()) {
      if (ValueDeeperThan(e, limit - 1)) return true;
    }
  }
  return false;
}

}  // namespace switchboard::internal

#endif  // SWITCHBOARD_SRC_JSON_JSON_DEPTH_H_
