// CIDR rules compiled into flat, sorted, disjoint intervals.
//
// Longest-prefix match is resolved at compile time: the prefixes are swept
// into intervals that each carry the rule of the longest prefix covering them.
// A lookup is one bucket index read (by the top bits of the IPv4 address or
// of the IPv6 address) and a binary search over the few intervals in that
// bucket. IPv4 lives in ::ffff:0:0/96, so both families share this one path.
// About 40 bytes per rule; no pointers between nodes.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "huge_pages.h"
#include "sandgate/policy/policy.h"

namespace sandgate::policy::detail {

class CidrTable {
 public:
  struct Entry {
    Cidr cidr;
    RuleId rule;
    std::uint8_t priority;  // at equal prefix: higher wins (user deny > user allow > built-in)
  };
  void compile(std::vector<Entry> entries);
  // The rule of the longest prefix containing addr; no_rule when none does.
  RuleId lookup(const Address& addr) const noexcept;
  std::size_t memory_bytes() const noexcept;
  std::size_t intervals() const noexcept { return starts_.size(); }

 private:
  std::uint32_t bucket(const Address& a) const noexcept;

  std::vector<Address, HugePageAllocator<Address>> starts_;  // ascending; starts_[0] is ::
  std::vector<RuleId, HugePageAllocator<RuleId>> values_;    // values_[i] holds from starts_[i] up to starts_[i+1]
  std::vector<std::uint32_t> index_;  // index_[b]: first interval whose start is in bucket >= b
  int bits_ = 1;
};

}  // namespace sandgate::policy::detail
