// Exact and wildcard host rules compiled into one flat open-addressing table.
//
// Every key is a host or a wildcard suffix. A lookup hashes all suffixes of
// the host in one right-to-left pass, then probes the whole host (exact and
// "**." apex rules) and each proper suffix from longest to shortest ("*." and
// "**." rules). The first probe that yields a rule decides: that is "most
// specific wins" without scanning rules.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "sandgate/policy/policy.h"

namespace sandgate::policy::detail {

// Of two rules at equal specificity deny wins, then the one written first.
RuleId better_of(std::span<const RuleInfo> rules, RuleId a, RuleId b) noexcept;

class HostTable {
 public:
  // rules: the policy's rule list; only host rules of kind exact and the two
  // wildcard kinds are taken.
  void compile(std::span<const RuleInfo> rules);
  RuleId find(std::string_view host, std::uint16_t port) const noexcept;
  std::size_t memory_bytes() const noexcept;

 private:
  struct PortRule {
    std::uint16_t port;
    RuleId rule;
  };
  struct PortList {
    std::uint32_t begin = 0;
    std::uint32_t count = 0;
  };
  struct Slot {
    std::uint64_t hash = 0;  // 0: empty slot
    std::uint32_t key_offset = 0;
    std::uint32_t key_length = 0;
    RuleId exact_any = no_rule;  // "host"
    RuleId apex_any = no_rule;   // "**.host"
    RuleId sub_any = no_rule;    // "*.host" and "**.host", for a subdomain
    PortList exact_ports, apex_ports, sub_ports;
  };

  const Slot* probe(std::uint64_t hash, std::string_view key) const noexcept;
  RuleId in_ports(PortList list, std::uint16_t port) const noexcept;

  std::vector<Slot> slots_;
  std::uint64_t mask_ = 0;
  std::string keys_;
  std::vector<PortRule> ports_;
};

// The hash both sides use: FNV-1a over the bytes from last to first, so that
// the hash of every suffix falls out of one pass over the whole host.
inline constexpr std::uint64_t fnv_basis = 0xcbf29ce484222325ULL;
inline constexpr std::uint64_t fnv_prime = 0x100000001b3ULL;
inline std::uint64_t finish_hash(std::uint64_t h) noexcept { return h | 1; }  // 0 marks an empty slot

}  // namespace sandgate::policy::detail
