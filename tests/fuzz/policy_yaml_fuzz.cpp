// The policy YAML loader on arbitrary bytes: it must never crash, and a file
// that loads must decide queries without failing.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "sandgate/config/policy_file.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto r = sandgate::config::load_policy_text(text, "fuzz.yaml", sandgate::config::Format::yaml);
  if (r) {
    auto t = sandgate::policy::parse_target("a.example.com:443", 443);
    const sandgate::policy::Address a[] = {sandgate::policy::Address::from_v4(0x0a000001)};
    (void)r->default_policy->check(*t, a);
  } else if (r.error().empty()) {
    __builtin_trap();  // a failed load must say why
  }
  return 0;
}
