#include <gtest/gtest.h>

#include "sandgate/policy/target.h"

namespace sandgate::policy {
namespace {

using namespace std::literals;

struct Case {
  const char* name;
  std::string_view in;
  const char* host;  // normalized, when accepted
  bool is_address;
  std::uint16_t port;
  std::optional<TargetError> error;
};

TEST(Target, NormalizesEverySpelling) {
  const Case cases[] = {
      {"lower-cased", "Example.COM:443", "example.com", false, 443, {}},
      {"one trailing dot dropped", "example.com.:80", "example.com", false, 80, {}},
      {"default port", "example.com", "example.com", false, 443, {}},
      {"underscore label", "_dmarc.example.com", "_dmarc.example.com", false, 443, {}},
      {"punycode from unicode", "bücher.de", "xn--bcher-kva.de", false, 443, {}},
      {"punycode kept", "xn--bcher-kva.de", "xn--bcher-kva.de", false, 443, {}},
      {"unicode upper case folds", "BÜCHER.de", "xn--bcher-kva.de", false, 443, {}},
      // Every IPv4 spelling inet_aton and browsers accept is the address itself.
      {"dotted quad", "127.0.0.1", "127.0.0.1", true, 443, {}},
      {"decimal integer", "2130706433", "127.0.0.1", true, 443, {}},
      {"octal", "0177.0.0.1", "127.0.0.1", true, 443, {}},
      {"hex short", "0x7f.1", "127.0.0.1", true, 443, {}},
      {"hex whole", "0x7f000001", "127.0.0.1", true, 443, {}},
      {"short form", "127.1", "127.0.0.1", true, 443, {}},
      {"zero", "0", "0.0.0.0", true, 443, {}},
      {"two-part", "10.65536", "10.1.0.0", true, 443, {}},
      {"trailing dot address", "127.0.0.1.", "127.0.0.1", true, 443, {}},
      {"upper hex", "0X7F.0.0.1", "127.0.0.1", true, 443, {}},
      {"bracketed ipv6", "[::1]:8080", "::1", true, 8080, {}},
      {"ipv6 upper case", "[2001:DB8::1]", "2001:db8::1", true, 443, {}},
      {"ipv6 zone id", "[fe80::1%25eth0]:22", "fe80::1", true, 22, {}},
      {"ipv6 raw zone id", "[fe80::1%eth0]:22", "fe80::1", true, 22, {}},
      {"ipv6 embedded ipv4", "[::ffff:127.0.0.1]", "127.0.0.1", true, 443, {}},
      {"ipv6 mapped hex", "[::ffff:7f00:1]", "127.0.0.1", true, 443, {}},
      {"bare ipv6 with default port", "::1", "::1", true, 443, {}},
      // Refusals: deny on doubt.
      {"empty", "", nullptr, false, 0, TargetError::empty},
      {"empty host", ":443", nullptr, false, 0, TargetError::empty},
      {"userinfo", "user@example.com", nullptr, false, 0, TargetError::userinfo},
      {"userinfo with password", "u:p@example.com:443", nullptr, false, 0, TargetError::userinfo},
      {"percent", "ex%61mple.com", nullptr, false, 0, TargetError::percent_encoded},
      {"backslash", "example.com\\x", nullptr, false, 0, TargetError::backslash},
      {"space", "exa mple.com", nullptr, false, 0, TargetError::bad_character},
      {"nul", "a\0b"sv, nullptr, false, 0, TargetError::bad_character},
      {"slash", "example.com/x", nullptr, false, 0, TargetError::bad_character},
      {"empty label", "a..b", nullptr, false, 0, TargetError::bad_label},
      {"two trailing dots", "example.com..", nullptr, false, 0, TargetError::bad_label},
      {"leading dot", ".example.com", nullptr, false, 0, TargetError::bad_label},
      {"long label", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.com", nullptr, false, 0,
       TargetError::bad_label},
      {"too many ipv4 parts", "1.2.3.4.5", nullptr, false, 0, TargetError::bad_ipv4},
      {"ipv4 part too big", "256.0.0.1", nullptr, false, 0, TargetError::bad_ipv4},
      {"ends in a number", "example.123", nullptr, false, 0, TargetError::bad_ipv4},
      {"bad octal", "09.0.0.1", nullptr, false, 0, TargetError::bad_ipv4},
      {"bad ipv6", "[::g]", nullptr, false, 0, TargetError::bad_ipv6},
      {"unclosed bracket", "[::1", nullptr, false, 0, TargetError::bad_ipv6},
      {"junk after bracket", "[::1]x", nullptr, false, 0, TargetError::bad_ipv6},
      {"port zero", "example.com:0", nullptr, false, 0, TargetError::bad_port},
      {"port too big", "example.com:65536", nullptr, false, 0, TargetError::bad_port},
      {"port not a number", "example.com:https", nullptr, false, 0, TargetError::bad_port},
      {"empty port", "example.com:", nullptr, false, 0, TargetError::bad_port},
      {"signed port", "example.com:+443", nullptr, false, 0, TargetError::bad_port},
      {"tab", "exa\tmple.com", nullptr, false, 0, TargetError::bad_character},
      {"invalid unicode name", "\xcc\x81" "a.com", nullptr, false, 0, TargetError::idna},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    auto t = parse_target(c.in, 443);
    if (c.error) {
      ASSERT_FALSE(t) << t->host;
      EXPECT_EQ(t.error(), *c.error) << describe(t.error());
      continue;
    }
    ASSERT_TRUE(t) << describe(t.error());
    EXPECT_EQ(t->host, c.host);
    EXPECT_EQ(t->address.has_value(), c.is_address);
    EXPECT_EQ(t->port, c.port);
  }
}

TEST(Target, WithoutDefaultPortAPortIsRequired) {
  EXPECT_EQ(parse_target("example.com", std::nullopt).error(), TargetError::missing_port);
  EXPECT_EQ(parse_target("::1:443", std::nullopt).error(), TargetError::unbracketed_ipv6);
  EXPECT_EQ(parse_target("[::1]:443", std::nullopt)->port, 443);
}

TEST(Target, EveryErrorHasASentence) {
  for (int e = 0; e <= static_cast<int>(TargetError::idna); ++e)
    EXPECT_GT(describe(static_cast<TargetError>(e)).size(), 10u);
}

}  // namespace
}  // namespace sandgate::policy
