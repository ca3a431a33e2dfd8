#include "json/json_scan.h"

namespace switchboard::internal {

namespace {

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

size_t SkipSpace(std::string_view s, size_t i) {
  while (i < s.size() && IsSpace(s[i])) ++i;
  return i;
}

// `i` at an opening quote: the index past the closing one (npos if none).
// Sets *escaped when the string holds a backslash.
size_t SkipString(std::string_view s, size_t i, bool* escaped) {
  for (++i; i < s.size(); ++i) {
    if (s[i] == '\\') {
      *escaped = true;
      ++i;
    } else if (s[i] == '"') {
      return i + 1;
    }
  }
  return std::string_view::npos;
}

// `i` at the first byte of a value: the index past it (npos if malformed).
size_t SkipValue(std::string_view s, size_t i) {
  if (i >= s.size()) return std::string_view::npos;
  bool escaped = false;
  if (s[i] == '"') return SkipString(s, i, &escaped);
  if (s[i] == '{' || s[i] == '[') {
    int depth = 0;
    while (i < s.size()) {
      const char c = s[i];
      if (c == '"') {
        i = SkipString(s, i, &escaped);
        if (i == std::string_view::npos) return i;
        continue;
      }
      if (c == '{' || c == '[') ++depth;
      if (c == '}' || c == ']') {
        if (--depth == 0) return i + 1;
      }
      ++i;
    }
    return std::string_view::npos;
  }
  // A number or a literal: up to the next delimiter.
  while (i < s.size() && s[i] != ',' && s[i] != '}' && s[i] != ']' && !IsSpace(s[i])) ++i;
  return i;
}

}  // namespace

std::optional<std::pair<size_t, size_t>> TopLevelValueSpan(std::string_view json,
                                                           std::string_view key) {
  constexpr size_t npos = std::string_view::npos;
  size_t i = SkipSpace(json, 0);
  if (i >= json.size() || json[i] != '{') return std::nullopt;
  i = SkipSpace(json, i + 1);
  std::optional<std::pair<size_t, size_t>> found;
  while (i < json.size() && json[i] != '}') {
    if (json[i] != '"') return std::nullopt;
    bool escaped = false;
    const size_t key_end = SkipString(json, i, &escaped);
    if (key_end == npos || escaped) return std::nullopt;
    const std::string_view name = json.substr(i + 1, key_end - i - 2);
    i = SkipSpace(json, key_end);
    if (i >= json.size() || json[i] != ':') return std::nullopt;
    i = SkipSpace(json, i + 1);
    const size_t value_end = SkipValue(json, i);
    if (value_end == npos) return std::nullopt;
    if (name == key) {
      if (found || json[i] != '"') return std::nullopt;
      found.emplace(i, value_end);
    }
    i = SkipSpace(json, value_end);
    if (i < json.size() && json[i] == ',') i = SkipSpace(json, i + 1);
  }
  return found;
}

}  // namespace switchboard::internal
