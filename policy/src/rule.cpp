#include "sandgate/policy/rule.h"

#include <re2/re2.h>

#include <algorithm>
#include <charconv>
#include <stdexcept>

#include "sandgate/policy/target.h"

namespace sandgate::policy {
namespace {

PatternError err(std::string msg) { return PatternError{std::move(msg)}; }

std::string quoted(std::string_view s) { return "'" + std::string(s) + "'"; }

std::optional<std::uint16_t> parse_port(std::string_view s) {
  unsigned v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc{} || p != s.data() + s.size() || v == 0 || v > 65535) return std::nullopt;
  return static_cast<std::uint16_t>(v);
}

bool all_digits(std::string_view s) {
  return !s.empty() && s.size() <= 5 && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

}  // namespace

void throw_exception_from_error(const PatternError& e, const boost::source_location&) {
  throw std::invalid_argument(e.message);
}

std::string RuleSource::to_string() const {
  if (file.empty()) return "<built-in>";
  return file + ":" + std::to_string(line) + ":" + std::to_string(column);
}

boost::system::result<HostPattern, PatternError> parse_host_pattern(std::string_view text) {
  if (text.empty()) return err("empty host pattern; write a host such as 'example.com' or '*.example.com'");
  HostPattern p;
  if (text.starts_with("re:")) {
    p.kind = HostKind::regex;
    p.host = std::string(text.substr(3));
    if (p.host.empty()) return err("empty regular expression after 're:'");
    // Compile once here so a bad expression is reported where it is written.
    RE2 re(p.host, RE2::Quiet);
    if (!re.ok()) return err(quoted(text) + " is not a valid RE2 regular expression: " + re.error());
    return p;
  }

  // Split off the port. IPv6 with a port must be bracketed.
  std::string_view host = text;
  if (text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos) return err(quoted(text) + " has '[' without ']'");
    host = text.substr(0, close + 1);
    auto rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return err(quoted(text) + ": expected ':PORT' after ']'");
      p.port = parse_port(rest.substr(1));
      if (!p.port) return err(quoted(text) + ": the port must be a number from 1 to 65535");
    }
  } else if (const auto colon = text.rfind(':'); colon != std::string_view::npos) {
    if (text.find(':') != colon) {
      // Several colons: an unbracketed IPv6 address. Refuse it when the last
      // group could also be read as a port ("::1:443").
      const auto head = text.substr(0, colon);
      const auto tail = text.substr(colon + 1);
      const bool whole = parse_address(text).has_value();
      const bool split = parse_address(head).has_value() && all_digits(tail);
      if (split)
        return err(quoted(text) + " is an unbracketed IPv6 address with what may be a port; write '[" +
                   std::string(head) + "]:" + std::string(tail) + "' for a port, or '[" + std::string(text) +
                   "]' for the address");
      if (!whole) return err(quoted(text) + " is not a valid IPv6 address; IPv6 with a port is written '[2001:db8::1]:443'");
    } else {
      host = text.substr(0, colon);
      p.port = parse_port(text.substr(colon + 1));
      if (!p.port) return err(quoted(text) + ": the port must be a number from 1 to 65535");
    }
  }

  if (host == "*") {
    p.kind = HostKind::any;
    return p;
  }
  std::string_view suffix;
  if (host.starts_with("**.")) {
    p.kind = HostKind::apex_and_subdomains;
    suffix = host.substr(3);
  } else if (host.starts_with("*.")) {
    p.kind = HostKind::subdomains;
    suffix = host.substr(2);
  }
  const std::string_view name = p.kind == HostKind::exact ? host : suffix;
  if (name.find('*') != std::string_view::npos)
    return err(quoted(text) +
               ": '*' may only be the whole first label: '*.example.com' (subdomains), '**.example.com' "
               "(the domain and its subdomains) or '*' (any host)");
  auto t = normalize_host(name);
  if (!t) return err(quoted(text) + ": " + std::string(describe(t.error())));
  if (p.kind != HostKind::exact) {
    if (t->address)
      return err(quoted(text) + ": a wildcard cannot cover an address; use a CIDR rule such as '" +
                 t->address->to_string() + "/24'");
    if (t->host.find('.') == std::string::npos)
      return err(quoted(text) + ": a wildcard over a top-level domain matches every site under it; name the domain, as '" +
                 std::string(host.substr(0, host.find('.') + 1)) + "example." + t->host + "'");
  }
  p.is_address = t->address.has_value();
  p.host = std::move(t->host);
  return p;
}

boost::system::result<ParsedCidr, PatternError> parse_cidr_pattern(std::string_view text) {
  if (text.empty()) return err("empty CIDR; write a range such as '10.0.0.0/8' or '2001:db8::/32'");
  auto c = parse_cidr(text);
  if (!c)
    return err(quoted(text) +
               " is not a CIDR range; write ADDRESS/LENGTH, as '10.0.0.0/8' (length 0-32) or '2001:db8::/32' (0-128)");
  return *c;
}

}  // namespace sandgate::policy
