// IP addresses and CIDR ranges in one 128-bit space.
//
// IPv4 is stored IPv4-mapped (::ffff:a.b.c.d), so IPv4 and IPv6 share one
// lookup path and an IPv4-mapped IPv6 address is, by construction, the IPv4
// address it carries. Pure values: no I/O, no allocation except to_string().
#pragma once

#include <compare>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace sandgate::policy {

struct Address {
  std::uint64_t hi = 0;  // bits 0..63 of the address, most significant first
  std::uint64_t lo = 0;  // bits 64..127

  static constexpr Address from_v4(std::uint32_t v4) noexcept {
    return Address{0, 0x0000'ffff'0000'0000ULL | v4};
  }
  static Address from_bytes(std::span<const std::uint8_t, 16> b) noexcept;

  // True for ::ffff:0:0/96, the space IPv4 lives in.
  constexpr bool is_v4() const noexcept { return hi == 0 && (lo >> 32) == 0xffff; }
  constexpr std::uint32_t v4() const noexcept { return static_cast<std::uint32_t>(lo); }

  // Canonical text: dotted quad for IPv4, RFC 5952 for IPv6 (no brackets).
  std::string to_string() const;

  friend constexpr auto operator<=>(const Address&, const Address&) = default;
};

// A range: the first prefix_len bits of base, in the 128-bit space (an IPv4
// /8 is a /104 here). base has no bits set past prefix_len.
struct Cidr {
  Address base;
  std::uint8_t prefix_len = 0;  // 0..128

  bool contains(const Address& a) const noexcept;
  // The last address of the range.
  Address last() const noexcept;
  // As written by an operator: "10.0.0.0/8" for IPv4, "fc00::/7" for IPv6.
  std::string to_string() const;
  friend constexpr auto operator<=>(const Cidr&, const Cidr&) = default;
};

// Strict textual address as a rule or an operator writes it: dotted-quad
// IPv4 (four decimal parts, no leading zeros) or IPv6 (inet_pton), without
// brackets or zone. Lenient spellings belong to normalize_target().
std::optional<Address> parse_address(std::string_view text) noexcept;

struct ParsedCidr {
  Cidr cidr;
  bool host_bits_set = false;  // "10.0.0.1/8": cidr is 10.0.0.0/8, worth a warning
};
// "a.b.c.d/n" (n <= 32) or "v6/n" (n <= 128); a bare address is a full-length range.
std::optional<ParsedCidr> parse_cidr(std::string_view text) noexcept;

// IPv4 addresses carried inside an IPv6 transition form: NAT64 64:ff9b::/96
// and 64:ff9b:1::/48 (RFC 6052), 6to4 2002::/16, Teredo 2001::/32 (server and
// client), and IPv4-compatible ::/96. Writes up to two and returns the count;
// 0 for a plain address. Cost: a few compares; no allocation.
int embedded_v4(const Address& a, Address out[2]) noexcept;

}  // namespace sandgate::policy
