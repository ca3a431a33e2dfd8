// The admin API's input side: a backend create/patch body
// (ParseBackendInput + ApplyBackendInput + ValidateBackend, json.cc and
// types.cc), an import file (ParseBackendImport) and a config patch
// (ApplyConfigJson + ValidateConfig).
// Invariants: no crash or sanitizer report; a malformed document has no
// param, a field error names one; a backend that validates has an http or
// https base URL; and the wire form of a valid backend parses back to the
// same backend (BackendToJson is a fixed point after one round trip).
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_util.h"
#include "switchboard/config.h"
#include "switchboard/json.h"
#include "switchboard/types.h"

namespace {

using switchboard::Backend;

Backend Base() {
  Backend b;
  b.id = "bkd_fuzz";
  b.name = "fuzz";
  b.api_base_url = "https://api.example.test/v1";
  b.model_mappings["gpt-4o"] = {"gpt-4o-upstream", 1};
  return b;
}

bool HasHttpScheme(std::string_view url) {
  auto starts = [&](std::string_view p) {
    if (url.size() < p.size()) return false;
    for (size_t i = 0; i < p.size(); ++i) {
      if (std::tolower(static_cast<unsigned char>(url[i])) != p[i]) return false;
    }
    return true;
  };
  return starts("http://") || starts("https://");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view json = switchboard::fuzz::AsView(data, size);

  auto input = switchboard::ParseBackendInput(json);
  if (input.ok()) {
    Backend b = Base();
    switchboard::ApplyBackendInput(*input, &b);
    if (switchboard::ValidateBackend(b).empty()) {
      FUZZ_CHECK(HasHttpScheme(b.api_base_url));
      const std::string wire = switchboard::BackendToJson(b);
      auto again = switchboard::ParseBackendInput(wire);
      FUZZ_CHECK(again.ok());
      Backend b2 = Base();
      switchboard::ApplyBackendInput(*again, &b2);
      FUZZ_CHECK(switchboard::ValidateBackend(b2).empty());
      FUZZ_CHECK(switchboard::BackendToJson(b2) == wire);
    }
  } else {
    FUZZ_CHECK(input.status().code() == switchboard::StatusCode::kInvalidArgument);
  }

  auto import = switchboard::ParseBackendImport(json);
  if (!import.ok()) {
    FUZZ_CHECK(import.status().code() == switchboard::StatusCode::kInvalidArgument);
  }

  switchboard::Config config;
  const switchboard::Status applied = switchboard::ApplyConfigJson(json, &config);
  if (applied.ok()) {
    (void)switchboard::ValidateConfig(config);
    (void)switchboard::ConfigToJson(config);
  } else {
    FUZZ_CHECK(applied.code() == switchboard::StatusCode::kInvalidArgument);
  }
  return 0;
}
