#include <gtest/gtest.h>

#include "sandgate/config/policy_file.h"

namespace sandgate::config {
namespace {

namespace pol = sandgate::policy;

pol::Target target(const char* t) { return *pol::parse_target(t, 443); }

constexpr const char* full = R"(version: 1
mode: deny
report: false
allow_hosts:
  - api.anthropic.com:443
  - host: "**.github.com:443"
    comment: git over https
block_hosts:
  - gist.github.com
allow_cidrs:
  - 10.20.0.0/16
block_cidrs:
  - {cidr: 203.0.113.0/24, comment: a documentation range}
sandboxes:
  research:
    mode: allow
    block_hosts: [pastebin.com]
  locked:
    inherit: false
    allow_hosts: [pypi.org:443]
  trial:
    report: true
)";

TEST(Loader, LoadsEverySchemaKey) {
  auto r = load_policy_text(full, "full.yaml", Format::yaml);
  ASSERT_TRUE(r) << r.error().front().to_string();
  const auto& def = *r->default_policy;
  EXPECT_EQ(def.mode(), pol::Mode::deny);
  EXPECT_FALSE(def.report());
  EXPECT_EQ(def.check_host(target("api.anthropic.com:443")).verdict, pol::Verdict::allow);
  EXPECT_EQ(def.check_host(target("api.anthropic.com:80")).verdict, pol::Verdict::deny);
  EXPECT_EQ(def.check_host(target("gist.github.com")).reason, pol::Reason::blocked_by_denylist);

  // Comments and sources are kept for the log.
  const auto d = def.check_host(target("codeload.github.com"));
  ASSERT_NE(def.rule(d.rule), nullptr);
  EXPECT_EQ(def.rule(d.rule)->comment, "git over https");
  EXPECT_EQ(def.rule(d.rule)->source.to_string(), "full.yaml:6:11");
  const pol::Address blocked[] = {*pol::parse_address("203.0.113.9")};
  const auto c = def.check(target("codeload.github.com"), blocked);
  EXPECT_EQ(c.reason, pol::Reason::blocked_by_cidr);
  EXPECT_EQ(def.rule(c.rule)->comment, "a documentation range");
  EXPECT_EQ(def.rule(c.rule)->source.to_string(), "full.yaml:13:12");
  EXPECT_EQ(r->sha256.size(), 64u);
}

TEST(Loader, NamedPoliciesInheritTheDefault) {
  auto r = load_policy_text(full, "full.yaml", Format::yaml);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->named.size(), 3u);
  const auto& research = *r->for_sandbox("research");
  EXPECT_EQ(research.mode(), pol::Mode::allow);
  EXPECT_EQ(research.check_host(target("pastebin.com")).reason, pol::Reason::blocked_by_denylist);
  EXPECT_EQ(research.check_host(target("gist.github.com")).reason, pol::Reason::blocked_by_denylist);  // inherited
  EXPECT_EQ(research.check_host(target("example.org")).reason, pol::Reason::allowed_by_default);

  const auto& locked = *r->for_sandbox("locked");
  EXPECT_EQ(locked.mode(), pol::Mode::deny);  // mode is inherited even without rules
  EXPECT_EQ(locked.check_host(target("pypi.org")).verdict, pol::Verdict::allow);
  EXPECT_EQ(locked.check_host(target("api.anthropic.com")).verdict, pol::Verdict::deny);  // rules not inherited

  EXPECT_TRUE(r->for_sandbox("trial")->report());
  EXPECT_EQ(r->for_sandbox("trial")->check_host(target("x.example")).verdict, pol::Verdict::report);
  EXPECT_EQ(r->for_sandbox("unknown").get(), r->default_policy.get());
}

TEST(Loader, ForbidReportRefusesReportAnywhere) {
  LoadOptions o;
  o.forbid_report = true;
  auto r = load_policy_text(full, "full.yaml", Format::yaml, o);
  ASSERT_FALSE(r);
  const auto errs = r.error();
  ASSERT_EQ(errs.size(), 1u);
  EXPECT_EQ(errs[0].line, 22u);
  EXPECT_TRUE(load_policy_text(full, "full.yaml", Format::yaml));
}

TEST(Loader, ShippedDefaultPolicyIsCleanAndDenyByDefault) {
  auto r = load_policy_file(std::string(SANDGATE_TESTDATA) + "/../config/default-policy.yaml");
  ASSERT_TRUE(r) << r.error().front().to_string();
  EXPECT_TRUE(r->warnings.empty()) << r->warnings.front().to_string();
  const auto& p = *r->default_policy;
  EXPECT_EQ(p.mode(), pol::Mode::deny);
  EXPECT_EQ(p.check_host(target("api.anthropic.com:443")).verdict, pol::Verdict::allow);
  EXPECT_EQ(p.check_host(target("pastebin.com:443")).verdict, pol::Verdict::deny);
  const pol::Address metadata[] = {*pol::parse_address("169.254.169.254")};
  EXPECT_EQ(p.check(target("api.anthropic.com:443"), metadata).verdict, pol::Verdict::deny);
}

TEST(Loader, SameBytesSameHash) {
  auto a = load_policy_text(full, "a.yaml", Format::yaml);
  auto b = load_policy_text(full, "b.yaml", Format::yaml);
  auto c = load_policy_text(std::string(full) + "\n", "a.yaml", Format::yaml);
  EXPECT_EQ(a->sha256, b->sha256);
  EXPECT_NE(a->sha256, c->sha256);
}

TEST(Loader, FormatFollowsExtension) {
  EXPECT_EQ(format_for_path("x/proxy-config.json"), Format::docker_json);
  EXPECT_EQ(format_for_path("policy.yaml"), Format::yaml);
  EXPECT_EQ(format_for_path("policy.yml"), Format::yaml);
}

}  // namespace
}  // namespace sandgate::config
