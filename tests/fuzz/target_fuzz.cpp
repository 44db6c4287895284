// The host/address normalizer and the rule pattern parsers on arbitrary
// bytes, with the invariants the proxy relies on:
//  - a normalized host normalizes to itself (one spelling per destination);
//  - an address literal's text parses back to the same address;
//  - a name never looks like an address (it does not end in a number).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "sandgate/policy/rule.h"
#include "sandgate/policy/target.h"

using namespace sandgate::policy;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  if (auto t = parse_target(in, 443)) {
    auto again = normalize_host(t->address && t->host.find(':') != std::string::npos ? "[" + t->host + "]" : t->host);
    if (!again || again->host != t->host || again->address != t->address) __builtin_trap();
    if (t->address) {
      auto back = parse_address(t->host);
      if (!back || *back != *t->address) __builtin_trap();
    } else if (!t->host.empty() && t->host.back() >= '0' && t->host.back() <= '9') {
      const auto dot = t->host.rfind('.');
      const auto last = t->host.substr(dot == std::string::npos ? 0 : dot + 1);
      if (last.find_first_not_of("0123456789") == std::string::npos) __builtin_trap();
    }
  }
  (void)parse_host_pattern(in);
  (void)parse_cidr_pattern(in);
  return 0;
}
