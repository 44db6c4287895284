#include <gtest/gtest.h>

#include "sandgate/config/policy_file.h"

namespace sandgate::config {
namespace {

struct Case {
  const char* name;
  const char* rules;  // YAML after "version: 1\nmode: deny\n" (line 3 on)
  const char* warning;  // the exact warning, or "" for none
};

TEST(Lint, WarnsOnSuspiciousButValidRules) {
  const Case cases[] = {
      {"*. without the apex", "allow_hosts:\n  - \"*.example.com\"\n",
       "p:4:5: warning: allow_hosts '*.example.com': does not match 'example.com' itself; add 'example.com' or "
       "write '**.example.com' to cover both"},
      {"*. with the apex is fine", "allow_hosts:\n  - \"*.example.com\"\n  - example.com\n", ""},
      {"duplicate", "allow_hosts:\n  - example.com\n  - Example.com.\n",
       "p:5:5: warning: allow_hosts 'Example.com.': duplicate of the rule at p:4:5"},
      {"allow and block the same", "allow_hosts:\n  - example.com\nblock_hosts:\n  - example.com\n",
       "p:6:5: warning: block_hosts 'example.com': the same pattern is also in allow_hosts at p:4:5; deny wins a "
       "tie, so the allow never applies"},
      {"shadowed by a tie", "allow_hosts:\n  - \"**.example.com\"\nblock_hosts:\n  - \"*.example.com\"\n",
       "p:4:5: warning: allow_hosts '**.example.com': shadowed by block_hosts '*.example.com' at p:6:5: equally "
       "specific for subdomains, and deny wins"},
      {"reopens a default range", "allow_cidrs:\n  - 169.254.169.254/32\n",
       "p:4:5: warning: allow_cidrs '169.254.169.254/32': reopens part of 169.254.0.0/16 (link-local and cloud "
       "metadata), which is blocked by default"},
      {"host bits", "block_cidrs:\n  - 203.0.113.7/24\n",
       "p:4:5: warning: block_cidrs '203.0.113.7/24': has host bits set; it means 203.0.113.0/24"},
      {"ipv6 range covering ipv4", "block_cidrs:\n  - ::/0\n",
       "p:4:5: warning: block_cidrs '::/0': also covers every IPv4 address, which is checked as ::ffff:a.b.c.d; "
       "write 2000::/3 for the public IPv6 internet"},
      {"catch-all restating the mode", "block_hosts:\n  - \"*:25\"\n",
       "p:4:5: warning: block_hosts '*:25': restates the policy's mode (deny) and changes nothing unless a less "
       "specific rule would otherwise decide"},
      {"catch-all against the mode", "allow_hosts:\n  - \"*:443\"\n", ""},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    auto r = load_policy_text(std::string("version: 1\nmode: deny\n") + c.rules, "p", Format::yaml);
    ASSERT_TRUE(r) << r.error().front().to_string();
    if (*c.warning == '\0') {
      EXPECT_TRUE(r->warnings.empty()) << r->warnings.front().to_string();
      continue;
    }
    ASSERT_FALSE(r->warnings.empty());
    EXPECT_EQ(r->warnings.front().to_string(), c.warning);
    EXPECT_EQ(r->warnings.front().severity, Severity::warning);
  }
}

TEST(Lint, NamedPoliciesDoNotRepeatInheritedWarnings) {
  auto r = load_policy_text("version: 1\nmode: deny\nallow_hosts:\n  - \"*.example.com\"\nsandboxes:\n  a: {}\n  b: {}\n",
                            "p", Format::yaml);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->warnings.size(), 1u);
}

}  // namespace
}  // namespace sandgate::config
