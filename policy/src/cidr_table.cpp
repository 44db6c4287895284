#include "cidr_table.h"

#include <algorithm>
#include <bit>

namespace sandgate::policy::detail {
namespace {

constexpr Address max_address{~0ULL, ~0ULL};

Address next(const Address& a) noexcept {
  Address r = a;
  if (++r.lo == 0) ++r.hi;
  return r;
}

}  // namespace

// Buckets ordered like the addresses they hold, so each covers a contiguous
// run of intervals: [below IPv4] [IPv4 by top bits] [rest of ::/64] [by top bits of hi].
std::uint32_t CidrTable::bucket(const Address& a) const noexcept {
  const std::uint32_t span = 1u << bits_;
  if (a.hi == 0) {
    const auto upper = a.lo >> 32;
    if (upper < 0xffff) return 0;
    if (upper == 0xffff) return 1 + (a.v4() >> (32 - bits_));
    return span + 1;
  }
  return span + 2 + static_cast<std::uint32_t>(a.hi >> (64 - bits_));
}

void CidrTable::compile(std::vector<Entry> entries) {
  // Outer prefixes before inner ones; at an equal prefix the winner first.
  std::sort(entries.begin(), entries.end(), [](const Entry& x, const Entry& y) {
    if (x.cidr.base != y.cidr.base) return x.cidr.base < y.cidr.base;
    if (x.cidr.prefix_len != y.cidr.prefix_len) return x.cidr.prefix_len < y.cidr.prefix_len;
    if (x.priority != y.priority) return x.priority > y.priority;
    return x.rule < y.rule;
  });
  entries.erase(std::unique(entries.begin(), entries.end(),
                            [](const Entry& x, const Entry& y) { return x.cidr == y.cidr; }),
                entries.end());

  starts_.clear();
  values_.clear();
  auto emit = [&](const Address& start, RuleId v) {
    if (!starts_.empty() && starts_.back() == start) {
      values_.back() = v;
      if (values_.size() >= 2 && values_[values_.size() - 2] == v) {
        starts_.pop_back();
        values_.pop_back();
      }
      return;
    }
    if (!values_.empty() && values_.back() == v) return;
    starts_.push_back(start);
    values_.push_back(v);
  };
  struct Open {
    Address last;
    RuleId rule;
  };
  std::vector<Open> stack;
  auto close_until = [&](const Address* before) {
    while (!stack.empty() && (before == nullptr || stack.back().last < *before)) {
      const Open top = stack.back();
      stack.pop_back();
      if (top.last != max_address) emit(next(top.last), stack.empty() ? no_rule : stack.back().rule);
    }
  };
  emit(Address{}, no_rule);
  for (const auto& e : entries) {
    close_until(&e.cidr.base);
    emit(e.cidr.base, e.rule);
    stack.push_back({e.cidr.last(), e.rule});
  }
  close_until(nullptr);
  starts_.shrink_to_fit();
  values_.shrink_to_fit();

  // About one interval per bucket, at most 2^17 buckets.
  bits_ = std::clamp(static_cast<int>(std::bit_width(starts_.size())), 1, 16);
  const std::uint32_t buckets = (2u << bits_) + 2;
  index_.assign(buckets + 1, static_cast<std::uint32_t>(starts_.size()));
  for (std::uint32_t i = static_cast<std::uint32_t>(starts_.size()); i-- > 0;) index_[bucket(starts_[i])] = i;
  // Empty buckets point at the next non-empty one.
  for (std::uint32_t b = buckets; b-- > 0;) index_[b] = std::min(index_[b], index_[b + 1]);
}

RuleId CidrTable::lookup(const Address& addr) const noexcept {
  if (starts_.empty()) return no_rule;
  const auto b = bucket(addr);
  // The interval holding addr is the last start <= addr; it starts in this
  // bucket or is the last one of an earlier bucket. starts_[0] is ::, so the
  // answer index is never negative.
  const Address* first = starts_.data() + index_[b];
  const Address* last = starts_.data() + index_[b + 1];
  const Address* it = std::upper_bound(first, last, addr);
  return values_[static_cast<std::size_t>(it - starts_.data()) - 1];
}

std::size_t CidrTable::memory_bytes() const noexcept {
  return starts_.capacity() * sizeof(Address) + values_.capacity() * sizeof(RuleId) +
         index_.capacity() * sizeof(std::uint32_t);
}

}  // namespace sandgate::policy::detail
