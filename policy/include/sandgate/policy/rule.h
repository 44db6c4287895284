// Rules as an operator writes them, parsed and validated one at a time.
//
// Host patterns:
//   example.com        that host, any port           (HostKind::exact)
//   example.com:443    that host and port            (HostKind::exact, port set)
//   *.example.com      any subdomain, never the apex (HostKind::subdomains)
//   **.example.com     the apex and any subdomain    (HostKind::apex_and_subdomains)
//   *  /  *:443        catch-all, any host           (HostKind::any)
//   10.0.0.7, [::1]:5432, ::1   address literals     (HostKind::exact on the canonical text)
//   re:^api[0-9]+\.example\.com$   RE2, full match on the normalized host (HostKind::regex)
// Any host pattern but re: may end in :PORT.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <boost/system/result.hpp>

#include "sandgate/policy/address.h"

namespace sandgate::policy {

enum class Action : std::uint8_t { allow, deny };

enum class HostKind : std::uint8_t { exact, subdomains, apex_and_subdomains, regex, any };

struct HostPattern {
  HostKind kind = HostKind::exact;
  std::string host;  // exact: the normalized host; wildcards: the suffix; regex: the expression
  std::optional<std::uint16_t> port;
  bool is_address = false;  // exact and host is an address literal
};

// An error explaining what is wrong with a pattern and how to write it instead.
struct PatternError {
  std::string message;
};
[[noreturn]] void throw_exception_from_error(const PatternError& e, const boost::source_location& loc);

// Parses one host pattern. Rejects middle or partial globs (api.*.x, *x.com,
// example.*), wildcards over a single label (*.com) or an address, and an
// unbracketed IPv6 address with a port. Does not compile regexes; the policy
// builder does, all at once.
boost::system::result<HostPattern, PatternError> parse_host_pattern(std::string_view text);

// Parses one CIDR rule ("10.0.0.0/8", "2001:db8::/32", or a bare address).
boost::system::result<ParsedCidr, PatternError> parse_cidr_pattern(std::string_view text);

// Where a rule came from, for the log, `explain` and 403 bodies.
struct RuleSource {
  std::string file;  // "" for built-in rules
  std::uint32_t line = 0;
  std::uint32_t column = 0;
  std::string to_string() const;  // "policy.yaml:12:7" or "<built-in>"
};

enum class RuleKind : std::uint8_t { host, cidr, default_cidr };

// One compiled rule as kept by a Policy: everything needed to name it.
struct RuleInfo {
  RuleKind kind = RuleKind::host;
  Action action = Action::deny;
  std::string text;     // as written: "*.example.com:443", "10.0.0.0/8"
  std::string comment;  // the operator's note, kept for the log
  RuleSource source;
  HostPattern host;  // kind == host
  Cidr cidr;         // kind != host
};

}  // namespace sandgate::policy
