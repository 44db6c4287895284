#include <gtest/gtest.h>

#include "sandgate/policy/rule.h"

namespace sandgate::policy {
namespace {

TEST(HostPattern, ParsesEveryKind) {
  struct Case {
    const char* in;
    HostKind kind;
    const char* host;
    std::optional<std::uint16_t> port;
    bool is_address;
  } cases[] = {
      {"example.com", HostKind::exact, "example.com", {}, false},
      {"Example.COM.", HostKind::exact, "example.com", {}, false},
      {"example.com:443", HostKind::exact, "example.com", 443, false},
      {"*.example.com", HostKind::subdomains, "example.com", {}, false},
      {"*.example.com:8443", HostKind::subdomains, "example.com", 8443, false},
      {"**.example.com", HostKind::apex_and_subdomains, "example.com", {}, false},
      {"**.Example.com.:443", HostKind::apex_and_subdomains, "example.com", 443, false},
      {"*.co.uk", HostKind::subdomains, "co.uk", {}, false},
      {"*", HostKind::any, "", {}, false},
      {"*:443", HostKind::any, "", 443, false},
      {"10.0.0.7", HostKind::exact, "10.0.0.7", {}, true},
      {"10.0.0.7:5432", HostKind::exact, "10.0.0.7", 5432, true},
      {"[::1]:5432", HostKind::exact, "::1", 5432, true},
      {"[::1]", HostKind::exact, "::1", {}, true},
      {"::1", HostKind::exact, "::1", {}, true},
      {"2001:db8::1", HostKind::exact, "2001:db8::1", {}, true},
      {"bücher.de", HostKind::exact, "xn--bcher-kva.de", {}, false},
      {"*.bücher.de", HostKind::subdomains, "xn--bcher-kva.de", {}, false},
      {"localhost:5432", HostKind::exact, "localhost", 5432, false},
      {"re:^api[0-9]+\\.example\\.com$", HostKind::regex, "^api[0-9]+\\.example\\.com$", {}, false},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.in);
    auto p = parse_host_pattern(c.in);
    ASSERT_TRUE(p) << p.error().message;
    EXPECT_EQ(p->kind, c.kind);
    EXPECT_EQ(p->host, c.host);
    EXPECT_EQ(p->port, c.port);
    EXPECT_EQ(p->is_address, c.is_address);
  }
}

TEST(HostPattern, RejectsWithAFix) {
  struct Case {
    const char* in;
    const char* message;
  } cases[] = {
      {"api.*.example.com", "'api.*.example.com': '*' may only be the whole first label: '*.example.com' "
                            "(subdomains), '**.example.com' (the domain and its subdomains) or '*' (any host)"},
      {"*x.com", "'*x.com': '*' may only be the whole first label: '*.example.com' (subdomains), '**.example.com' "
                 "(the domain and its subdomains) or '*' (any host)"},
      {"example.*", "'example.*': '*' may only be the whole first label: '*.example.com' (subdomains), "
                    "'**.example.com' (the domain and its subdomains) or '*' (any host)"},
      {"*.com", "'*.com': a wildcard over a top-level domain matches every site under it; name the domain, as "
                "'*.example.com'"},
      {"**.com", "'**.com': a wildcard over a top-level domain matches every site under it; name the domain, as "
                 "'**.example.com'"},
      {"*.10.0.0.1", "'*.10.0.0.1': a wildcard cannot cover an address; use a CIDR rule such as '10.0.0.1/24'"},
      {"::1:443", "'::1:443' is an unbracketed IPv6 address with what may be a port; write '[::1]:443' for a port, "
                  "or '[::1:443]' for the address"},
      {"2001:db8::1:8080", "'2001:db8::1:8080' is an unbracketed IPv6 address with what may be a port; write "
                           "'[2001:db8::1]:8080' for a port, or '[2001:db8::1:8080]' for the address"},
      {"example.com:0", "'example.com:0': the port must be a number from 1 to 65535"},
      {"example.com:99999", "'example.com:99999': the port must be a number from 1 to 65535"},
      {"[::1", "'[::1' has '[' without ']'"},
      {"", "empty host pattern; write a host such as 'example.com' or '*.example.com'"},
      {"user@example.com", "'user@example.com': userinfo (user@host) is not allowed in a target"},
      {"exa mple.com", "'exa mple.com': the host contains a character that is not allowed in a host name"},
      {"re:", "empty regular expression after 're:'"},
      {"re:(", "'re:(' is not a valid RE2 regular expression: missing ): ("},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.in);
    auto p = parse_host_pattern(c.in);
    ASSERT_FALSE(p);
    EXPECT_EQ(p.error().message, c.message);
  }
}

TEST(CidrPattern, RejectsWithAFix) {
  auto c = parse_cidr_pattern("10.0.0.0/40");
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().message,
            "'10.0.0.0/40' is not a CIDR range; write ADDRESS/LENGTH, as '10.0.0.0/8' (length 0-32) or "
            "'2001:db8::/32' (0-128)");
  EXPECT_TRUE(parse_cidr_pattern("10.0.0.0/8"));
}

TEST(RuleSource, PrintsFileLineColumn) {
  EXPECT_EQ((RuleSource{"p.yaml", 3, 7}).to_string(), "p.yaml:3:7");
  EXPECT_EQ(RuleSource{}.to_string(), "<built-in>");
}

}  // namespace
}  // namespace sandgate::policy
