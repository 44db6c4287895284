#include "sandgate/policy/address.h"

#include <arpa/inet.h>

#include <array>
#include <charconv>
#include <cstring>

namespace sandgate::policy {
namespace {

std::uint64_t load_be64(const std::uint8_t* p) noexcept {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | p[i];
  return v;
}

void store_be64(std::uint64_t v, std::uint8_t* p) noexcept {
  for (int i = 7; i >= 0; --i) {
    p[i] = static_cast<std::uint8_t>(v);
    v >>= 8;
  }
}

// Mask keeping the first n bits of a 64-bit half (n in 0..64).
constexpr std::uint64_t keep_bits(int n) noexcept {
  return n <= 0 ? 0 : n >= 64 ? ~0ULL : ~0ULL << (64 - n);
}

std::optional<std::uint32_t> parse_dotted_quad(std::string_view s) noexcept {
  std::uint32_t v = 0;
  int parts = 0;
  while (true) {
    std::size_t n = 0;
    while (n < s.size() && s[n] >= '0' && s[n] <= '9') ++n;
    if (n == 0 || n > 3 || (n > 1 && s[0] == '0')) return std::nullopt;
    unsigned part = 0;
    std::from_chars(s.data(), s.data() + n, part);
    if (part > 255) return std::nullopt;
    v = (v << 8) | part;
    ++parts;
    s.remove_prefix(n);
    if (s.empty()) break;
    if (s[0] != '.' || parts == 4) return std::nullopt;
    s.remove_prefix(1);
  }
  if (parts != 4) return std::nullopt;
  return v;
}

}  // namespace

Address Address::from_bytes(std::span<const std::uint8_t, 16> b) noexcept {
  return Address{load_be64(b.data()), load_be64(b.data() + 8)};
}

std::string Address::to_string() const {
  char buf[INET6_ADDRSTRLEN];
  if (is_v4()) {
    std::uint32_t be = htonl(v4());
    inet_ntop(AF_INET, &be, buf, sizeof buf);
  } else {
    std::uint8_t b[16];
    store_be64(hi, b);
    store_be64(lo, b + 8);
    inet_ntop(AF_INET6, b, buf, sizeof buf);
  }
  return buf;
}

bool Cidr::contains(const Address& a) const noexcept {
  const int n = prefix_len;
  return (a.hi & keep_bits(n)) == base.hi && (a.lo & keep_bits(n - 64)) == base.lo;
}

Address Cidr::last() const noexcept {
  const int n = prefix_len;
  return Address{base.hi | ~keep_bits(n), base.lo | ~keep_bits(n - 64)};
}

std::string Cidr::to_string() const {
  const bool v4 = base.is_v4() && prefix_len >= 96;
  return base.to_string() + "/" + std::to_string(v4 ? prefix_len - 96 : prefix_len);
}

std::optional<Address> parse_address(std::string_view text) noexcept {
  if (auto v4 = parse_dotted_quad(text)) return Address::from_v4(*v4);
  if (text.size() >= INET6_ADDRSTRLEN || text.find(':') == std::string_view::npos) return std::nullopt;
  char buf[INET6_ADDRSTRLEN];
  std::memcpy(buf, text.data(), text.size());
  buf[text.size()] = '\0';
  std::array<std::uint8_t, 16> b{};
  if (inet_pton(AF_INET6, buf, b.data()) != 1) return std::nullopt;
  return Address::from_bytes(b);
}

std::optional<ParsedCidr> parse_cidr(std::string_view text) noexcept {
  const auto slash = text.find('/');
  auto addr = parse_address(text.substr(0, slash));
  if (!addr) return std::nullopt;
  const bool v4 = addr->is_v4() && text.substr(0, slash).find(':') == std::string_view::npos;
  const int max_len = v4 ? 32 : 128;
  int len = max_len;
  if (slash != std::string_view::npos) {
    auto digits = text.substr(slash + 1);
    if (digits.empty() || digits.size() > 3 || (digits.size() > 1 && digits[0] == '0')) return std::nullopt;
    unsigned v = 0;
    auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v);
    if (ec != std::errc{} || p != digits.data() + digits.size() || v > static_cast<unsigned>(max_len))
      return std::nullopt;
    len = static_cast<int>(v);
  }
  const int n = v4 ? len + 96 : len;
  ParsedCidr out;
  out.cidr.prefix_len = static_cast<std::uint8_t>(n);
  out.cidr.base = Address{addr->hi & keep_bits(n), addr->lo & keep_bits(n - 64)};
  out.host_bits_set = out.cidr.base != *addr;
  return out;
}

int embedded_v4(const Address& a, Address out[2]) noexcept {
  const auto top16 = a.hi >> 48;
  const auto top32 = a.hi >> 32;
  const auto low32 = static_cast<std::uint32_t>(a.lo);
  // NAT64 well-known prefix 64:ff9b::/96: IPv4 in the last 32 bits.
  if (a.hi == 0x0064'ff9b'0000'0000ULL && (a.lo >> 32) == 0) {
    out[0] = Address::from_v4(low32);
    return 1;
  }
  // Local-use NAT64 64:ff9b:1::/48 (RFC 6052 /48 layout): bits 48..63, then
  // the u-octet (64..71), then bits 72..87.
  if ((a.hi >> 16) == 0x0064'ff9b'0001ULL) {
    const auto first = static_cast<std::uint32_t>(a.hi & 0xffff);
    const auto second = static_cast<std::uint32_t>((a.lo >> 40) & 0xffff);
    out[0] = Address::from_v4((first << 16) | second);
    return 1;
  }
  // 6to4 2002::/16: IPv4 in bits 16..47.
  if (top16 == 0x2002) {
    out[0] = Address::from_v4(static_cast<std::uint32_t>(a.hi >> 16));
    return 1;
  }
  // Teredo 2001::/32: server IPv4 in bits 32..63, client IPv4 inverted in the last 32.
  if (top32 == 0x2001'0000) {
    out[0] = Address::from_v4(static_cast<std::uint32_t>(a.hi));
    out[1] = Address::from_v4(~low32);
    return 2;
  }
  // IPv4-compatible ::a.b.c.d (deprecated), but not :: and ::1 themselves.
  if (a.hi == 0 && (a.lo >> 32) == 0 && low32 > 1) {
    out[0] = Address::from_v4(low32);
    return 1;
  }
  return 0;
}

}  // namespace sandgate::policy
