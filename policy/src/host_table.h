// Exact and wildcard host rules compiled into one flat open-addressing table.
//
// Every key is a host or a wildcard suffix. A lookup hashes all suffixes of
// the host in one right-to-left pass, then probes the whole host (exact and
// "**." apex rules) and each proper suffix from longest to shortest ("*." and
// "**." rules). The first probe that yields a rule decides: that is "most
// specific wins" without scanning rules. A hit costs two dependent memory
// read: the 64-byte slot, which holds the start of the key and a single port
// rule; longer keys and several port rules cost a second read.
#pragma once

#include <bit>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "huge_pages.h"
#include "sandgate/policy/policy.h"

namespace sandgate::policy::detail {

// Of two rules at equal specificity deny wins, then the one written first.
RuleId better_of(std::span<const RuleInfo> rules, RuleId a, RuleId b) noexcept;

// The hash both sides use, fed bytes from last to first so that the hash of
// every suffix falls out of one pass over the whole host. The running value
// is cheap (rotate, xor: no multiply in the byte loop); finish() mixes it at
// label boundaries. Collisions cost a probe, never a wrong answer: keys are
// compared byte for byte.
struct SuffixHash {
  std::uint64_t h = 0;
  void add(unsigned char c) noexcept { h = std::rotl(h, 7) ^ c; }
  std::uint64_t finish() const noexcept {
    std::uint64_t x = h ^ 0x9e37'79b9'7f4a'7c15ULL;  // murmur3's fmix64
    x ^= x >> 33;
    x *= 0xff51'afd7'ed55'8ccdULL;
    x ^= x >> 33;
    x *= 0xc4ce'b9fe'1a85'ec53ULL;
    x ^= x >> 33;
    return x | 1;  // 0 marks an empty slot
  }
};

class HostTable {
 public:
  // rules: the policy's rule list; only host rules of kind exact and the two
  // wildcard kinds are taken.
  void compile(std::span<const RuleInfo> rules);
  RuleId find(std::string_view host, std::uint16_t port) const noexcept;
  std::size_t memory_bytes() const noexcept;

 private:
  enum class Field : std::uint8_t { exact, apex, sub };
  struct PortEntry {
    RuleId rule = no_rule;
    std::uint16_t port = 0;
    Field field = Field::exact;
    std::uint8_t unused = 0;
  };
  static constexpr std::size_t inline_key = 28;
  // One cache line. A short key and a single port rule live in the slot, so
  // the common hit costs one memory read; a longer key's tail and a key's
  // several port rules live in its record.
  struct alignas(64) Slot {
    std::uint64_t hash = 0;        // 0: empty slot
    std::uint32_t record = 0;      // offset in records_: the whole key, then its port entries
    std::uint16_t key_length = 0;  // keys are names: at most 253 bytes
    std::uint16_t ports = 0;       // port entries: 1 is held inline, more in the record
    RuleId exact_any = no_rule;    // "host"
    RuleId apex_any = no_rule;     // "**.host"
    RuleId sub_any = no_rule;      // "*.host" and "**.host", for a subdomain
    PortEntry port;                // the only port entry, when ports == 1
    char key[inline_key] = {};     // the key's first bytes
  };
  static_assert(sizeof(Slot) == 64);

  std::size_t home(std::uint64_t hash) const noexcept { return (hash ^ (hash >> 29)) & mask_; }
  const Slot* probe(std::uint64_t hash, std::string_view key) const noexcept;
  RuleId port_rule(const Slot& s, Field field, std::uint16_t port) const noexcept;

  // Bit k set: some key has k labels (k >= 63 share bit 63). Suffixes with a
  // label count no key has are not hashed or probed.
  static std::uint64_t label_bit(std::size_t labels) noexcept { return 1ULL << (labels < 63 ? labels : 63); }

  std::vector<Slot, HugePageAllocator<Slot>> slots_;
  std::uint64_t mask_ = 0;
  std::uint64_t label_counts_ = 0;
  std::vector<char, HugePageAllocator<char>> records_;
};

}  // namespace sandgate::policy::detail
