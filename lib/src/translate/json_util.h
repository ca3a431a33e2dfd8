// Small RapidJSON helpers shared by the translators.
#ifndef SWITCHBOARD_TRANSLATE_JSON_UTIL_H_
#define SWITCHBOARD_TRANSLATE_JSON_UTIL_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "json/json_depth.h"
#include "rapidjson/document.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace switchboard::internal {

using JsonWriter = rapidjson::Writer<rapidjson::StringBuffer>;

// Member `name` of `v` when `v` is an object that has it, else nullptr.
inline const rapidjson::Value* Member(const rapidjson::Value& v, const char* name) {
  if (!v.IsObject()) return nullptr;
  auto it = v.FindMember(name);
  return it == v.MemberEnd() ? nullptr : &it->value;
}
inline const rapidjson::Value* Member(const rapidjson::Value* v, const char* name) {
  return v == nullptr ? nullptr : Member(*v, name);
}

inline bool IsString(const rapidjson::Value* v) { return v != nullptr && v->IsString(); }
inline bool IsNullOrAbsent(const rapidjson::Value* v) { return v == nullptr || v->IsNull(); }

inline std::string_view StringOf(const rapidjson::Value* v) {
  if (v == nullptr || !v->IsString()) return {};
  return {v->GetString(), v->GetStringLength()};
}

inline std::optional<int64_t> Int64Of(const rapidjson::Value* v) {
  if (v == nullptr) return std::nullopt;
  if (v->IsInt64()) return v->GetInt64();
  if (v->IsUint64()) return static_cast<int64_t>(INT64_MAX);
  return std::nullopt;
}

// a + b, saturated: token counts come from upstream JSON and may be anything.
inline int64_t SaturatingAdd(int64_t a, int64_t b) {
  int64_t sum = 0;
  if (__builtin_add_overflow(a, b, &sum)) return b > 0 ? INT64_MAX : INT64_MIN;
  return sum;
}

inline void WriteString(JsonWriter& w, std::string_view s) {
  w.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
}
inline void WriteKey(JsonWriter& w, std::string_view s) {
  w.Key(s.data(), static_cast<rapidjson::SizeType>(s.size()));
}

inline std::string Serialize(const rapidjson::Value& v) {
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  v.Accept(w);
  return std::string(buffer.GetString(), buffer.GetSize());
}

// Deepest nesting the translators accept. Writing a value back out recurses
// once per level, so this bounds the stack a hostile body can use.
inline constexpr int kMaxJsonDepth = 200;

// Parses `text` (iteratively, so deep nesting cannot exhaust the stack while
// parsing) and refuses documents nested deeper than kMaxJsonDepth.
inline bool ParseJson(std::string_view text, rapidjson::Document* doc) {
  if (TextNestsDeeperThan(text, kMaxJsonDepth)) return false;
  doc->Parse<rapidjson::kParseIterativeFlag>(text.data(), text.size());
  return !doc->HasParseError();
}

}  // namespace switchboard::internal

#endif  // SWITCHBOARD_TRANSLATE_JSON_UTIL_H_
