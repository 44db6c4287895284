#include "sandgate/policy/target.h"

#include <arpa/inet.h>
#include <idn2.h>
#include <netinet/in.h>

#include <algorithm>
#include <cctype>
#include <array>
#include <charconv>
#include <cstring>
#include <stdexcept>

namespace sandgate::policy {
namespace {

constexpr std::size_t max_name = 253;
constexpr std::size_t max_label = 63;

bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }
bool is_hex(char c) noexcept { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
char lower(char c) noexcept { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; }

// WHATWG URL "ends in a number": the last label is all digits, or 0x + hex.
bool ends_in_number(std::string_view name) noexcept {
  auto dot = name.rfind('.');
  auto last = dot == std::string_view::npos ? name : name.substr(dot + 1);
  if (last.empty()) return false;
  if (std::all_of(last.begin(), last.end(), is_digit)) return true;
  if (last.size() >= 2 && last[0] == '0' && (last[1] == 'x' || last[1] == 'X'))
    return std::all_of(last.begin() + 2, last.end(), is_hex);
  return false;
}

// inet_aton() is the reference for what "an IPv4 address" spells; it also
// accepts text after a space, which never reaches here (spaces are refused).
std::optional<Address> parse_lenient_v4(std::string_view s) {
  if (s.size() > 64) return std::nullopt;
  char buf[65];
  std::memcpy(buf, s.data(), s.size());
  buf[s.size()] = '\0';
  in_addr a{};
  if (inet_aton(buf, &a) == 0) return std::nullopt;
  return Address::from_v4(ntohl(a.s_addr));
}

boost::system::result<Target, TargetError> normalize_ipv6(std::string_view inside) {
  // A zone id ("fe80::1%eth0", URL-encoded "%25eth0") names an interface, not a
  // different address: drop it and judge the address.
  if (auto pct = inside.find('%'); pct != std::string_view::npos) {
    auto zone = inside.substr(pct + 1);
    if (zone.starts_with("25")) zone.remove_prefix(2);
    if (zone.empty() || !std::all_of(zone.begin(), zone.end(), [](char c) {
          return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
        }))
      return TargetError::bad_ipv6;
    inside = inside.substr(0, pct);
  }
  if (inside.size() >= INET6_ADDRSTRLEN) return TargetError::bad_ipv6;
  char buf[INET6_ADDRSTRLEN];
  std::memcpy(buf, inside.data(), inside.size());
  buf[inside.size()] = '\0';
  std::array<std::uint8_t, 16> b{};
  if (inet_pton(AF_INET6, buf, b.data()) != 1) return TargetError::bad_ipv6;
  Target t;
  t.address = Address::from_bytes(b);
  t.host = t.address->to_string();
  return t;
}

boost::system::result<Target, TargetError> normalize_name(std::string_view in) {
  std::string name;
  const bool ascii = std::all_of(in.begin(), in.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
  if (!ascii) {
    // IDNA2008 with the UTS#46 mapping browsers apply; libidn2 lower-cases too.
    std::string z(in);
    char* out = nullptr;
    if (idn2_to_ascii_8z(z.c_str(), &out, IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL) != IDN2_OK)
      return TargetError::idna;
    name = out;
    idn2_free(out);
  } else {
    name.assign(in);
  }
  std::transform(name.begin(), name.end(), name.begin(), lower);
  if (name.ends_with('.')) name.pop_back();
  if (name.empty()) return TargetError::empty;
  if (name.size() > max_name) return TargetError::too_long;
  std::size_t label = 0;
  for (char c : name) {
    if (c == '.') {
      if (label == 0) return TargetError::bad_label;
      label = 0;
      continue;
    }
    if (!(is_digit(c) || (c >= 'a' && c <= 'z') || c == '-' || c == '_')) return TargetError::bad_character;
    if (++label > max_label) return TargetError::bad_label;
  }
  if (label == 0) return TargetError::bad_label;
  Target t;
  if (ends_in_number(name)) {
    // Check before any name logic: "0x7f.1" must never be treated as a name.
    auto a = parse_lenient_v4(name);
    if (!a) return TargetError::bad_ipv4;
    t.address = *a;
    t.host = a->to_string();
    return t;
  }
  t.host = std::move(name);
  return t;
}

}  // namespace

std::string_view describe(TargetError e) noexcept {
  switch (e) {
    case TargetError::empty: return "the host is empty";
    case TargetError::bad_character: return "the host contains a character that is not allowed in a host name";
    case TargetError::percent_encoded: return "percent-encoding is not allowed in a host";
    case TargetError::userinfo: return "userinfo (user@host) is not allowed in a target";
    case TargetError::backslash: return "a backslash is not allowed in a host";
    case TargetError::bad_label: return "the host has an empty label or a label longer than 63 bytes";
    case TargetError::too_long: return "the host name is longer than 253 bytes";
    case TargetError::bad_ipv4: return "the host ends in a number but is not a valid IPv4 address";
    case TargetError::bad_ipv6: return "the bracketed host is not a valid IPv6 address";
    case TargetError::bad_port: return "the port must be a number from 1 to 65535";
    case TargetError::missing_port: return "the target has no port";
    case TargetError::unbracketed_ipv6: return "an IPv6 address with a port must be written in brackets, as [2001:db8::1]:443";
    case TargetError::idna: return "the host is not a valid internationalized domain name (IDNA2008)";
  }
  return "invalid target";
}

void throw_exception_from_error(const TargetError& e, const boost::source_location&) {
  throw std::invalid_argument(std::string(describe(e)));
}

boost::system::result<Target, TargetError> normalize_host(std::string_view host) {
  if (host.empty()) return TargetError::empty;
  if (host.find('@') != std::string_view::npos) return TargetError::userinfo;
  if (host.find('\\') != std::string_view::npos) return TargetError::backslash;
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']') return TargetError::bad_ipv6;
    return normalize_ipv6(host.substr(1, host.size() - 2));
  }
  if (host.find('%') != std::string_view::npos) return TargetError::percent_encoded;
  if (host.find(':') != std::string_view::npos) return normalize_ipv6(host);
  for (char c : host)
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) return TargetError::bad_character;
  return normalize_name(host);
}

boost::system::result<Target, TargetError> parse_target(std::string_view authority,
                                                        std::optional<std::uint16_t> default_port) {
  if (authority.empty()) return TargetError::empty;
  if (authority.find('@') != std::string_view::npos) return TargetError::userinfo;
  std::string_view host = authority;
  std::optional<std::string_view> port_text;
  if (authority.front() == '[') {
    const auto close = authority.find(']');
    if (close == std::string_view::npos) return TargetError::bad_ipv6;
    host = authority.substr(0, close + 1);
    auto rest = authority.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return TargetError::bad_ipv6;
      port_text = rest.substr(1);
    }
  } else if (const auto colon = authority.find(':'); colon != std::string_view::npos) {
    if (authority.find(':', colon + 1) != std::string_view::npos) {
      // Several colons without brackets: an IPv6 address and no port.
      if (!default_port) return TargetError::unbracketed_ipv6;
    } else {
      host = authority.substr(0, colon);
      port_text = authority.substr(colon + 1);
    }
  }
  std::uint16_t port = 0;
  if (port_text) {
    unsigned v = 0;
    auto [p, ec] = std::from_chars(port_text->data(), port_text->data() + port_text->size(), v);
    if (port_text->empty() || ec != std::errc{} || p != port_text->data() + port_text->size() || v == 0 ||
        v > 65535)
      return TargetError::bad_port;
    port = static_cast<std::uint16_t>(v);
  } else if (default_port) {
    port = *default_port;
  } else {
    return TargetError::missing_port;
  }
  auto t = normalize_host(host);
  if (!t) return t.error();
  t->port = port;
  return t;
}

std::string authority(const Target& t) {
  const bool v6 = t.address && !t.address->is_v4();
  return (v6 ? "[" + t.host + "]" : t.host) + ":" + std::to_string(t.port);
}

}  // namespace sandgate::policy
