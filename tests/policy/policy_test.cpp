// One case per sentence of docs/policy.md: modes, patterns, precedence, the
// two phases, default-blocked ranges and reason codes.
#include <cstring>

#include "test_policy.h"

namespace sandgate::policy {
namespace {

using testing::addr;
using testing::make_policy;
using testing::rule_text;
using testing::target;

struct Case {
  const char* name;
  Mode mode;
  std::vector<std::string> rules;
  const char* target;
  std::vector<const char*> addrs;  // empty: host phase only (unless the target is a literal)
  Verdict verdict;
  Reason reason;
  const char* rule;  // deciding rule's text, or "default"
};

void run(const std::vector<Case>& cases) {
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    auto p = make_policy(c.mode, c.rules);
    const Target t = target(c.target);
    std::vector<Address> as;
    for (auto a : c.addrs) as.push_back(addr(a));
    const Decision d = (as.empty() && !t.address) ? p->check_host(t) : p->check(t, as);
    EXPECT_EQ(to_string(d.verdict), to_string(c.verdict));
    EXPECT_EQ(to_string(d.reason), to_string(c.reason));
    EXPECT_EQ(rule_text(*p, d), c.rule);
  }
}

constexpr auto A = Verdict::allow;
constexpr auto D = Verdict::deny;

TEST(Policy, Modes) {
  run({
      {"deny mode denies what no rule allows", Mode::deny, {}, "example.com", {}, D, Reason::blocked_by_default, "default"},
      {"allow mode allows what no rule blocks", Mode::allow, {}, "example.com", {}, A, Reason::allowed_by_default, "default"},
      {"deny mode allows by rule", Mode::deny, {"allow example.com"}, "example.com", {}, A, Reason::allowed_by_rule, "example.com"},
      {"allow mode blocks by rule", Mode::allow, {"deny example.com"}, "example.com", {}, D, Reason::blocked_by_denylist, "example.com"},
  });
}

TEST(Policy, ReportModeDecidesButLetsThrough) {
  auto p = make_policy(Mode::deny, {"allow good.com"}, /*report=*/true);
  const auto bad = p->check_host(target("bad.com"));
  EXPECT_EQ(bad.verdict, Verdict::report);
  EXPECT_TRUE(bad.would_deny());
  EXPECT_TRUE(bad.lets_through());
  EXPECT_EQ(bad.reason, Reason::blocked_by_default);
  const auto good = p->check_host(target("good.com"));
  EXPECT_EQ(good.verdict, Verdict::allow);
  EXPECT_FALSE(good.would_deny());
  // The address phase reports too: a rebinding attempt is named, not enforced.
  const Address priv[] = {addr("10.0.0.1")};
  const auto rebound = p->check(target("good.com"), priv);
  EXPECT_EQ(rebound.verdict, Verdict::report);
  EXPECT_EQ(rebound.reason, Reason::blocked_by_default_cidr);
}

TEST(Policy, HostPatterns) {
  run({
      {"exact matches any port", Mode::deny, {"allow example.com"}, "example.com:8080", {}, A, Reason::allowed_by_rule, "example.com"},
      {"exact is not a subdomain", Mode::deny, {"allow example.com"}, "a.example.com", {}, D, Reason::blocked_by_default, "default"},
      {"exact is not a longer name", Mode::deny, {"allow example.com"}, "example.com.evil.net", {}, D, Reason::blocked_by_default, "default"},
      {"exact is not a name ending in it", Mode::deny, {"allow example.com"}, "badexample.com", {}, D, Reason::blocked_by_default, "default"},
      {"host:port matches that port", Mode::deny, {"allow example.com:443"}, "example.com:443", {}, A, Reason::allowed_by_rule, "example.com:443"},
      {"host:port not another port", Mode::deny, {"allow example.com:443"}, "example.com:80", {}, D, Reason::blocked_by_default, "default"},
      {"*. matches a subdomain", Mode::deny, {"allow *.example.com"}, "a.example.com", {}, A, Reason::allowed_by_rule, "*.example.com"},
      {"*. matches any depth", Mode::deny, {"allow *.example.com"}, "a.b.c.example.com", {}, A, Reason::allowed_by_rule, "*.example.com"},
      {"*. never the apex", Mode::deny, {"allow *.example.com"}, "example.com", {}, D, Reason::blocked_by_default, "default"},
      {"*. not a name ending in the suffix", Mode::deny, {"allow *.example.com"}, "aexample.com", {}, D, Reason::blocked_by_default, "default"},
      {"**. matches the apex", Mode::deny, {"allow **.example.com"}, "example.com", {}, A, Reason::allowed_by_rule, "**.example.com"},
      {"**. matches subdomains", Mode::deny, {"allow **.example.com"}, "x.y.example.com", {}, A, Reason::allowed_by_rule, "**.example.com"},
      {"wildcard with port", Mode::deny, {"allow *.example.com:443"}, "a.example.com:80", {}, D, Reason::blocked_by_default, "default"},
      {"*:443 catch-all", Mode::deny, {"allow *:443"}, "anything.net:443", {}, A, Reason::allowed_by_rule, "*:443"},
      {"*:443 not port 80", Mode::deny, {"allow *:443"}, "anything.net:80", {}, D, Reason::blocked_by_default, "default"},
      {"* catch-all", Mode::allow, {"deny *"}, "anything.net:80", {}, D, Reason::blocked_by_denylist, "*"},
      {"case-insensitive", Mode::deny, {"allow Example.COM"}, "EXAMPLE.com", {}, A, Reason::allowed_by_rule, "Example.COM"},
      {"trailing dot ignored", Mode::deny, {"allow example.com."}, "example.com.", {}, A, Reason::allowed_by_rule, "example.com."},
      {"punycode rule, unicode target", Mode::deny, {"allow xn--bcher-kva.de"}, "bücher.de", {}, A, Reason::allowed_by_rule, "xn--bcher-kva.de"},
      {"unicode rule, punycode target", Mode::deny, {"allow *.bücher.de"}, "www.xn--bcher-kva.de", {}, A, Reason::allowed_by_rule, "*.bücher.de"},
      {"ipv4 literal rule", Mode::deny, {"allow 203.0.113.7"}, "203.0.113.7", {}, A, Reason::allowed_by_rule, "203.0.113.7"},
      {"ipv4 literal rule, other spelling", Mode::deny, {"allow 203.0.113.7"}, "3405803783", {}, A, Reason::allowed_by_rule, "203.0.113.7"},
      {"bracketed ipv6 rule with port", Mode::deny, {"allow [2001:db8::7]:8443"}, "[2001:DB8:0::7]:8443", {}, A, Reason::allowed_by_rule, "[2001:db8::7]:8443"},
      {"regex full match", Mode::deny, {"allow re:api[0-9]+\\.example\\.com"}, "api42.example.com", {}, A, Reason::allowed_by_rule, "re:api[0-9]+\\.example\\.com"},
      {"regex is anchored", Mode::deny, {"allow re:api[0-9]+\\.example\\.com"}, "xapi42.example.com.evil", {}, D, Reason::blocked_by_default, "default"},
  });
}

TEST(Policy, Precedence) {
  run({
      {"host:port beats host", Mode::allow, {"deny example.com", "allow example.com:443"}, "example.com:443", {}, A, Reason::allowed_by_rule, "example.com:443"},
      {"host applies to other ports", Mode::allow, {"deny example.com", "allow example.com:443"}, "example.com:80", {}, D, Reason::blocked_by_denylist, "example.com"},
      {"exact host beats wildcard", Mode::deny, {"allow **.example.com", "deny api.example.com"}, "api.example.com", {}, D, Reason::blocked_by_denylist, "api.example.com"},
      {"exact host beats apex wildcard", Mode::deny, {"deny **.example.com", "allow example.com"}, "example.com", {}, A, Reason::allowed_by_rule, "example.com"},
      {"longer suffix wins", Mode::allow, {"deny *.example.com", "allow *.api.example.com"}, "v1.api.example.com", {}, A, Reason::allowed_by_rule, "*.api.example.com"},
      {"longer suffix wins over port-specific", Mode::allow, {"deny *.example.com:443", "allow *.api.example.com"}, "v1.api.example.com:443", {}, A, Reason::allowed_by_rule, "*.api.example.com"},
      {"port-specific before portless, same suffix", Mode::deny, {"deny *.example.com", "allow *.example.com:443"}, "a.example.com:443", {}, A, Reason::allowed_by_rule, "*.example.com:443"},
      {"wildcard beats regex", Mode::deny, {"allow re:.*\\.example\\.com", "deny *.example.com"}, "a.example.com", {}, D, Reason::blocked_by_denylist, "*.example.com"},
      {"regex beats *:port", Mode::deny, {"deny *:443", "allow re:.*\\.example\\.com"}, "a.example.com", {}, A, Reason::allowed_by_rule, "re:.*\\.example\\.com"},
      {"*:port beats *", Mode::deny, {"deny *", "allow *:443"}, "x.net:443", {}, A, Reason::allowed_by_rule, "*:443"},
      {"catch-all beats default", Mode::deny, {"allow *:443"}, "x.net:443", {}, A, Reason::allowed_by_rule, "*:443"},
      {"tie: deny wins, * vs **", Mode::deny, {"allow *.example.com", "deny **.example.com"}, "a.example.com", {}, D, Reason::blocked_by_denylist, "**.example.com"},
      {"tie: deny wins, same pattern", Mode::deny, {"allow example.com", "deny example.com"}, "example.com", {}, D, Reason::blocked_by_denylist, "example.com"},
      {"tie: deny wins, regexes", Mode::deny, {"allow re:a.*", "deny re:.*b"}, "ab", {}, D, Reason::blocked_by_denylist, "re:.*b"},
      {"tie: first written among equals", Mode::deny, {"allow **.example.com:443", "allow *.example.com:443"}, "a.example.com", {}, A, Reason::allowed_by_rule, "**.example.com:443"},
  });
}

TEST(Policy, CidrPrecedence) {
  run({
      {"longest prefix wins", Mode::allow, {"deny-cidr 203.0.113.0/24", "allow-cidr 203.0.113.128/25"}, "203.0.113.200", {}, A, Reason::allowed_by_cidr, "203.0.113.128/25"},
      {"longest prefix, shorter blocks rest", Mode::allow, {"deny-cidr 203.0.113.0/24", "allow-cidr 203.0.113.128/25"}, "203.0.113.7", {}, D, Reason::blocked_by_cidr, "203.0.113.0/24"},
      {"deny wins at equal length", Mode::allow, {"allow-cidr 198.51.100.0/24", "deny-cidr 198.51.100.0/24"}, "198.51.100.1", {}, D, Reason::blocked_by_cidr, "198.51.100.0/24"},
      {"ipv6 longest prefix", Mode::allow, {"deny-cidr 2001:db8::/32", "allow-cidr 2001:db8:1::/48"}, "[2001:db8:1::5]", {}, A, Reason::allowed_by_cidr, "2001:db8:1::/48"},
      {"ipv6 block", Mode::allow, {"deny-cidr 2001:db8::/32"}, "[2001:db8:2::5]", {}, D, Reason::blocked_by_cidr, "2001:db8::/32"},
      {"mapped ipv6 is checked as ipv4", Mode::allow, {"deny-cidr 198.51.100.0/24"}, "[::ffff:198.51.100.9]", {}, D, Reason::blocked_by_cidr, "198.51.100.0/24"},
      {"block-cidr applies to resolved names", Mode::allow, {"deny-cidr 198.51.100.0/24"}, "x.example", {"198.51.100.9"}, D, Reason::blocked_by_cidr, "198.51.100.0/24"},
  });
}

TEST(Policy, DefaultBlockedRangesInBothModes) {
  const char* blocked[] = {"0.1.2.3",     "10.1.2.3",    "100.64.0.1", "100.127.255.254", "127.0.0.1",
                           "169.254.169.254", "172.16.0.1", "172.31.255.255", "192.168.1.1", "224.0.0.1",
                           "239.255.255.250", "240.0.0.1", "255.255.255.255", "[::]", "[::1]", "[fc00::1]",
                           "[fd12:3456::1]", "[fe80::1]", "[febf::1]", "[ff02::1]",
                           // IPv6 forms that carry a blocked IPv4 address
                           "[::ffff:127.0.0.1]", "[64:ff9b::7f00:1]", "[64:ff9b::a9fe:a9fe]",
                           "[64:ff9b:1:a00:0:1::]", "[2002:c0a8:101::1]", "[2001:0:808:808::80ff:fefe]",
                           "[::a00:1]"};
  for (auto mode : {Mode::allow, Mode::deny}) {
    auto p = make_policy(mode, {"allow *:443"});
    for (const char* a : blocked) {
      SCOPED_TRACE(std::string(to_string(mode)) + " " + a);
      const Decision d = p->check(target(a), {});
      EXPECT_EQ(d.verdict, Verdict::deny);
      EXPECT_EQ(d.reason, Reason::blocked_by_default_cidr);
      EXPECT_EQ(p->rule(d.rule)->kind, RuleKind::default_cidr);
      // The same address behind an allowed name, as DNS might answer.
      const Address as[] = {addr(a[0] == '[' ? std::string(a).substr(1, std::strlen(a) - 2) : a)};
      EXPECT_EQ(p->check(target("allowed.example"), as).reason, Reason::blocked_by_default_cidr);
    }
  }
  const char* open[] = {"8.8.8.8", "100.63.255.255", "100.128.0.0", "172.32.0.1", "11.0.0.1", "223.255.255.255",
                        "[2606:4700::1111]", "[64:ff9b::808:808]", "[2002:808:808::1]", "[fec0::1]"};
  auto p = make_policy(Mode::allow, {});
  for (const char* a : open) {
    SCOPED_TRACE(a);
    EXPECT_EQ(p->check(target(a), {}).verdict, Verdict::allow);
  }
}

TEST(Policy, TwoPhases) {
  run({
      {"wildcard allow never reaches a blocked address", Mode::deny, {"allow *.example.com"}, "a.example.com", {"10.0.0.5"}, D, Reason::blocked_by_default_cidr, "10.0.0.0/8"},
      {"portless exact allow never reaches one", Mode::deny, {"allow db.internal"}, "db.internal:5432", {"10.0.0.7"}, D, Reason::blocked_by_default_cidr, "10.0.0.0/8"},
      {"allowed by default never reaches one", Mode::allow, {}, "rebind.example", {"127.0.0.1"}, D, Reason::blocked_by_default_cidr, "127.0.0.0/8"},
      {"exact host:port opens that destination", Mode::deny, {"allow localhost:5432"}, "localhost:5432", {"127.0.0.1", "::1"}, A, Reason::allowed_by_rule, "localhost:5432"},
      {"exact host:port, other port stays blocked", Mode::allow, {"allow localhost:5432"}, "localhost:5433", {"127.0.0.1"}, D, Reason::blocked_by_default_cidr, "127.0.0.0/8"},
      {"exact name:port opens a private address", Mode::deny, {"allow db.internal:5432"}, "db.internal:5432", {"10.0.0.7"}, A, Reason::allowed_by_rule, "db.internal:5432"},
      {"literal address:port opens it", Mode::deny, {"allow 10.0.0.7:5432"}, "10.0.0.7:5432", {}, A, Reason::allowed_by_rule, "10.0.0.7:5432"},
      {"literal address:port, other spelling", Mode::deny, {"allow 10.0.0.7:5432"}, "0xa.7:5432", {}, A, Reason::allowed_by_rule, "10.0.0.7:5432"},
      {"literal address without port does not", Mode::deny, {"allow 10.0.0.7"}, "10.0.0.7:5432", {}, D, Reason::blocked_by_default_cidr, "10.0.0.0/8"},
      {"allow-cidr opens a range for allowed names", Mode::deny, {"allow *.corp.example", "allow-cidr 10.0.0.0/8"}, "git.corp.example", {"10.1.2.3"}, A, Reason::allowed_by_rule, "*.corp.example"},
      {"allow-cidr opens part of a range", Mode::allow, {"allow-cidr 10.9.0.0/16"}, "x.example", {"10.9.0.1"}, A, Reason::allowed_by_cidr, "10.9.0.0/16"},
      {"allow-cidr leaves the rest blocked", Mode::allow, {"allow-cidr 10.9.0.0/16"}, "x.example", {"10.8.0.1"}, D, Reason::blocked_by_default_cidr, "10.0.0.0/8"},
      {"shorter allow-cidr does not reopen", Mode::allow, {"allow-cidr 0.0.0.0/0"}, "x.example", {"127.0.0.1"}, D, Reason::blocked_by_default_cidr, "127.0.0.0/8"},
      {"allow-cidr allows a literal in deny mode", Mode::deny, {"allow-cidr 203.0.113.0/24"}, "203.0.113.5", {}, A, Reason::allowed_by_cidr, "203.0.113.0/24"},
      {"allow-cidr does not allow a name in deny mode", Mode::deny, {"allow-cidr 203.0.113.0/24"}, "x.example", {"203.0.113.5"}, D, Reason::blocked_by_default, "default"},
      {"host phase deny is final", Mode::allow, {"deny evil.example", "allow-cidr 203.0.113.0/24"}, "evil.example", {"203.0.113.5"}, D, Reason::blocked_by_denylist, "evil.example"},
      {"block-cidr beats exact host:port", Mode::deny, {"allow db.internal:5432", "deny-cidr 10.0.0.0/24"}, "db.internal:5432", {"10.0.0.7"}, D, Reason::blocked_by_cidr, "10.0.0.0/24"},
      {"mixed answer is denied and says so", Mode::deny, {"allow **.example.com"}, "example.com", {"93.184.215.14", "10.0.0.1"}, D, Reason::dns_mixed_answer, "10.0.0.0/8"},
      {"mixed answer, blocked first", Mode::deny, {"allow **.example.com"}, "example.com", {"::1", "2606:2800::1"}, D, Reason::dns_mixed_answer, "::1/128"},
      {"all public answers pass", Mode::deny, {"allow **.example.com"}, "example.com", {"93.184.215.14", "2606:2800::1"}, A, Reason::allowed_by_rule, "**.example.com"},
  });
}

TEST(Policy, EmptyAnswerIsDenied) {
  auto p = make_policy(Mode::allow, {});
  const auto d = p->check(target("x.example"), {});
  EXPECT_EQ(d.verdict, Verdict::deny);
  EXPECT_EQ(d.reason, Reason::no_address);
}

TEST(Policy, HostPhaseDenyOfANameNeverNeedsDns) {
  auto p = make_policy(Mode::deny, {"allow-cidr 203.0.113.0/24", "allow ok.example"});
  const auto t = target("exfil-data.attacker.example");
  EXPECT_FALSE(p->needs_address_phase(p->check_host(t), t));
  const auto ok = target("ok.example");
  EXPECT_TRUE(p->needs_address_phase(p->check_host(ok), ok));
  const auto lit = target("203.0.113.9");
  EXPECT_TRUE(p->needs_address_phase(p->check_host(lit), lit));
}

TEST(Policy, DecisionNamesRuleSource) {
  auto p = make_policy(Mode::deny, {"allow a.example", "deny b.example"});
  const auto d = p->check_host(target("b.example"));
  ASSERT_NE(p->rule(d.rule), nullptr);
  EXPECT_EQ(p->rule(d.rule)->source.to_string(), "test.yaml:2:5");
  EXPECT_EQ(d.phase, Phase::host);
  EXPECT_EQ(p->rule(no_rule), nullptr);
}

TEST(Policy, ReasonCodes) {
  EXPECT_EQ(to_string(Reason::blocked_by_denylist), "blocked-by-denylist");
  EXPECT_EQ(to_string(Reason::blocked_by_default), "blocked-by-default");
  EXPECT_EQ(to_string(Reason::blocked_by_cidr), "blocked-by-cidr");
  EXPECT_EQ(to_string(Reason::blocked_by_default_cidr), "blocked-by-default-cidr");
  EXPECT_EQ(to_string(Reason::dns_mixed_answer), "dns-mixed-answer");
  EXPECT_EQ(to_string(Reason::allowed_by_rule), "allowed-by-rule");
}

TEST(Policy, ExplainCandidatesAgreeWithTheDecision) {
  auto p = make_policy(Mode::deny, {"allow *.example.com", "deny **.example.com", "allow api.example.com:443",
                                    "allow *:443", "allow api.example.com:443"});
  const auto t = target("api.example.com:443");
  const auto d = p->check_host(t);
  const auto cs = p->host_candidates(t);
  ASSERT_EQ(cs.size(), 5u);
  int winners = 0;
  for (const auto& c : cs) {
    winners += c.won;
    if (c.won) {
      EXPECT_EQ(c.rule, d.rule);
    }
  }
  EXPECT_EQ(winners, 1);
  EXPECT_EQ(cs[0].why, "loses: subdomain wildcard on 'example.com' is less specific than exact host and port, the most specific kind");
  EXPECT_EQ(cs[2].why, "wins: exact host and port, the most specific kind");
  EXPECT_EQ(cs[3].why, "loses: catch-all for one port is less specific than exact host and port, the most specific kind");
  EXPECT_EQ(cs[4].why, "loses: duplicate of the winner (test.yaml:3:5), which comes first");

  const auto ac = p->address_candidates(addr("64:ff9b::a00:1"));
  ASSERT_EQ(ac.size(), 1u);
  EXPECT_TRUE(ac[0].won);
  EXPECT_EQ(p->rule(ac[0].rule)->text, "10.0.0.0/8");
}

}  // namespace
}  // namespace sandgate::policy
