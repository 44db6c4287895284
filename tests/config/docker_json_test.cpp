#include <gtest/gtest.h>

#include "sandgate/config/policy_file.h"

namespace sandgate::config {
namespace {

namespace pol = sandgate::policy;

pol::Target target(const char* t) { return *pol::parse_target(t, 443); }

// The shape of Docker's per-sandbox proxy-config.json, with its documented
// default policy (allow mode, *.anthropic.com, platform.claude.com:443, and
// the private ranges blocked).
constexpr const char* docker_default = R"({
  "policy": "allow",
  "allow_hosts": ["*.anthropic.com", "platform.claude.com:443"],
  "block_hosts": [],
  "allow_cidrs": [],
  "block_cidrs": ["10.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
                  "192.168.0.0/16", "::1/128", "fc00::/7", "fe80::/10"]
})";

TEST(DockerJson, ImportsDockersDefaultPolicy) {
  auto r = load_policy_text(docker_default, "proxy-config.json", Format::docker_json);
  ASSERT_TRUE(r) << r.error().front().to_string();
  const auto& p = *r->default_policy;
  EXPECT_EQ(p.mode(), pol::Mode::allow);
  EXPECT_EQ(p.check_host(target("api.anthropic.com")).reason, pol::Reason::allowed_by_rule);
  EXPECT_EQ(p.check_host(target("example.org")).reason, pol::Reason::allowed_by_default);
  const pol::Address loop[] = {*pol::parse_address("127.0.0.1")};
  // Docker's block_cidrs become our block rules: explicit, and named.
  const auto d = p.check(target("localhost"), loop);
  EXPECT_EQ(d.reason, pol::Reason::blocked_by_cidr);
  EXPECT_EQ(p.rule(d.rule)->source.to_string(), "proxy-config.json:6:33");
}

TEST(DockerJson, DockersDocumentedExamples) {
  // docker sandbox network proxy my-sandbox --block-host example.com --block-host malicious.site
  // docker sandbox network proxy my-sandbox --block-cidr 192.168.1.0/24
  // docker sandbox network proxy my-sandbox --allow-host localhost:1234  (reach a host service)
  auto r = load_policy_text(R"({"policy": "allow",
    "block_hosts": ["example.com", "malicious.site"],
    "block_cidrs": ["192.168.1.0/24"],
    "allow_hosts": ["localhost:1234"]})",
                            "p.json", Format::docker_json);
  ASSERT_TRUE(r);
  const auto& p = *r->default_policy;
  EXPECT_EQ(p.check_host(target("example.com")).verdict, pol::Verdict::deny);
  EXPECT_EQ(p.check_host(target("malicious.site")).verdict, pol::Verdict::deny);
  const pol::Address lan[] = {*pol::parse_address("192.168.1.20")};
  EXPECT_EQ(p.check(target("printer.example"), lan).reason, pol::Reason::blocked_by_cidr);
  const pol::Address loop[] = {*pol::parse_address("127.0.0.1")};
  EXPECT_EQ(p.check(target("localhost:1234"), loop).verdict, pol::Verdict::allow);
  EXPECT_EQ(p.check(target("localhost:1235"), loop).verdict, pol::Verdict::deny);
}

TEST(DockerJson, BypassListsAreCheckedAndExplained) {
  auto r = load_policy_text(R"({"policy": "deny", "bypass_hosts": ["internal.example:443"], "bypass_cidrs": []})",
                            "p.json", Format::docker_json);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->warnings.size(), 1u);
  EXPECT_EQ(r->warnings[0].to_string(),
            "p.json:1:20: warning: bypass_hosts: ignored. Docker uses it to skip TLS interception; sandgate never "
            "decrypts traffic, so nothing is intercepted to bypass, and a bypass entry grants no access. List the "
            "destination in allow_hosts to allow it");
  EXPECT_EQ(r->default_policy->check_host(target("internal.example")).verdict, pol::Verdict::deny);
  auto bad = load_policy_text(R"({"policy": "deny", "bypass_hosts": ["*.com"]})", "p.json", Format::docker_json);
  EXPECT_FALSE(bad);
}

}  // namespace
}  // namespace sandgate::config
