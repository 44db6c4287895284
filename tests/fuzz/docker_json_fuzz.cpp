// Docker proxy-config.json import on arbitrary bytes.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "sandgate/config/policy_file.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto r = sandgate::config::load_policy_text(text, "fuzz.json", sandgate::config::Format::docker_json);
  if (!r && r.error().empty()) __builtin_trap();
  return 0;
}
