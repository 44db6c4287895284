// Normalization of a request target's host, as the proxy and `explain` see it.
//
// Every spelling of an address is the address it denotes, never a host name:
// all IPv4 forms inet_aton() and browsers accept (2130706433, 0177.0.0.1,
// 0x7f.1, 127.1, 0), bracketed IPv6 with a zone id, IPv6 with embedded IPv4.
// Names are lower-cased, lose one trailing dot, and non-ASCII names become
// punycode (IDNA2008, libidn2). Percent-encoding, userinfo, backslashes and
// any byte outside a DNS name are rejected: deny on doubt.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <boost/system/result.hpp>

#include "sandgate/policy/address.h"

namespace sandgate::policy {

enum class TargetError : std::uint8_t {
  empty,              // nothing where a host belongs
  bad_character,      // a byte that no host name or address contains
  percent_encoded,    // "%" outside an IPv6 zone id
  userinfo,           // "user@host"
  backslash,          // "\" (WHATWG treats it as "/", origin servers do not)
  bad_label,          // an empty label ("a..b") or a label over 63 bytes
  too_long,           // a name over 253 bytes
  bad_ipv4,           // ends in a number but is no IPv4 address ("1.2.3.4.5", "999.1.1.1")
  bad_ipv6,           // brackets around something that is no IPv6 address
  bad_port,           // a port that is empty, not a number, 0 or over 65535
  missing_port,       // no port and no default
  unbracketed_ipv6,   // "::1:443": IPv6 with a port must be bracketed
  idna,               // a non-ASCII name that IDNA2008 refuses
};

// A short sentence for an error, for 400 bodies and CLI messages.
std::string_view describe(TargetError e) noexcept;

struct Target {
  std::string host;                // a lower-case ASCII name, or the canonical address text
  std::optional<Address> address;  // set when host is an address literal
  std::uint16_t port = 0;
};

// Normalizes a host without a port ("Example.COM.", "[::1]", "0x7f.1").
// Cost: one pass over the input; allocates the result string (and calls
// libidn2 for non-ASCII names only).
boost::system::result<Target, TargetError> normalize_host(std::string_view host);

// Parses and normalizes "host[:port]", "[v6][:port]" or a bare "v6" address.
// default_port is used when the input has no port; without one a missing
// port is an error (as for CONNECT).
boost::system::result<Target, TargetError> parse_target(std::string_view authority,
                                                        std::optional<std::uint16_t> default_port);

// "host:port", the host bracketed when it is an IPv6 address ("[::1]:443"):
// the form parse_target reads back, for messages and rules.
std::string authority(const Target& t);

// boost::system::result needs this to report an error through value().
[[noreturn]] void throw_exception_from_error(const TargetError& e, const boost::source_location& loc);

}  // namespace sandgate::policy
