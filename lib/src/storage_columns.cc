#include "storage_columns.h"

#include <string_view>
#include <utility>

#include "rapidjson/document.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace switchboard::internal {

std::string MappingsToJson(const std::map<std::string, ModelMapping>& mappings) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  writer.StartObject();
  for (const auto& [model, mapping] : mappings) {
    writer.Key(model.data(), static_cast<rapidjson::SizeType>(model.size()));
    writer.StartObject();
    writer.Key("upstream_model");
    writer.String(mapping.upstream_model.data(),
                  static_cast<rapidjson::SizeType>(mapping.upstream_model.size()));
    writer.Key("weight");
    writer.Int(mapping.weight);
    writer.EndObject();
  }
  writer.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

Result<std::map<std::string, ModelMapping>> MappingsFromJson(const std::string& json) {
  rapidjson::Document doc;
  doc.Parse(json.data(), json.size());
  if (doc.HasParseError() || !doc.IsObject()) {
    return InternalError("stored model_mappings is not a JSON object");
  }
  std::map<std::string, ModelMapping> mappings;
  for (const auto& member : doc.GetObject()) {
    const auto& value = member.value;
    if (!value.IsObject() || !value.HasMember("upstream_model") ||
        !value["upstream_model"].IsString() || !value.HasMember("weight") ||
        !value["weight"].IsInt()) {
      return InternalError("stored model_mappings has a malformed entry");
    }
    ModelMapping m;
    m.upstream_model.assign(value["upstream_model"].GetString(),
                            value["upstream_model"].GetStringLength());
    m.weight = value["weight"].GetInt();
    mappings.emplace(std::string(member.name.GetString(), member.name.GetStringLength()),
                     std::move(m));
  }
  return mappings;
}

// Fields missing from the stored document keep their Config{} defaults, so a
// newer build can add settings without a migration.
Result<Config> StoredConfigFromJson(const std::string& json) {
  rapidjson::Document doc;
  doc.Parse(json.data(), json.size());
  if (doc.HasParseError() || !doc.IsObject()) {
    return InternalError("stored config is not a JSON object");
  }
  Config c;
  auto corrupt = [](const char* field) {
    return InternalError(std::string("stored config has a malformed ") + field);
  };
  if (auto it = doc.FindMember("pool_order"); it != doc.MemberEnd()) {
    if (!it->value.IsArray()) return corrupt("pool_order");
    c.pool_order.clear();
    for (const auto& pool : it->value.GetArray()) {
      if (!pool.IsString()) return corrupt("pool_order");
      c.pool_order.emplace_back(pool.GetString(), pool.GetStringLength());
    }
  }
  if (auto it = doc.FindMember("strategy"); it != doc.MemberEnd()) {
    if (!it->value.IsString()) return corrupt("strategy");
    auto strategy =
        ParseStrategy(std::string_view(it->value.GetString(), it->value.GetStringLength()));
    if (!strategy) return corrupt("strategy");
    c.strategy = *strategy;
  }
  const std::pair<const char*, int*> ints[] = {
      {"max_attempts", &c.max_attempts},
      {"cooldown_base_seconds", &c.cooldown_base_seconds},
      {"cooldown_max_seconds", &c.cooldown_max_seconds},
      {"error_threshold", &c.error_threshold},
      {"usage_retention_days", &c.usage_retention_days},
  };
  for (const auto& [field, target] : ints) {
    if (auto it = doc.FindMember(field); it != doc.MemberEnd()) {
      if (!it->value.IsInt()) return corrupt(field);
      *target = it->value.GetInt();
    }
  }
  if (auto it = doc.FindMember("body_limit_bytes"); it != doc.MemberEnd()) {
    if (!it->value.IsInt64()) return corrupt("body_limit_bytes");
    c.body_limit_bytes = it->value.GetInt64();
  }
  return c;
}

}  // namespace switchboard::internal
