// Randomized differential test: the compiled policy against a deliberately
// naive reference that scans every rule for every query. Over a million
// queries across random rule sets, IPv4 and IPv6, names and literals.
#include <re2/re2.h>

#include <random>

#include "test_policy.h"

namespace sandgate::policy {
namespace {

// --- The reference: linear scans, no tables, written from docs/policy.md. ---

bool is_subdomain(const std::string& host, const std::string& suffix) {
  return host.size() > suffix.size() && host.ends_with(suffix) && host[host.size() - suffix.size() - 1] == '.';
}

// Rank tuple: smaller is more specific.
struct Rank {
  int group;
  long neg_suffix;
  int portless;
  bool operator<(const Rank& o) const {
    return std::tie(group, neg_suffix, portless) < std::tie(o.group, o.neg_suffix, o.portless);
  }
  bool operator==(const Rank& o) const = default;
};

class Reference {
 public:
  Reference(Mode mode, const Policy& compiled) : mode_(mode), rules_(compiled.rules()) {
    for (const auto& r : rules_)
      regex_.push_back(r.kind == RuleKind::host && r.host.kind == HostKind::regex ? std::make_unique<RE2>(r.host.host)
                                                                                  : nullptr);
  }

  std::optional<Rank> rank(std::size_t i, const Target& t) const {
    const auto& p = rules_[i].host;
    if (p.port && *p.port != t.port) return std::nullopt;
    const int portless = p.port ? 0 : 1;
    switch (p.kind) {
      case HostKind::exact:
        return p.host == t.host ? std::optional<Rank>(Rank{portless, 0, 0}) : std::nullopt;
      case HostKind::apex_and_subdomains:
        if (!t.address && (p.host == t.host || is_subdomain(t.host, p.host)))
          return Rank{2, -static_cast<long>(p.host.size()), portless};
        return std::nullopt;
      case HostKind::subdomains:
        if (!t.address && is_subdomain(t.host, p.host)) return Rank{2, -static_cast<long>(p.host.size()), portless};
        return std::nullopt;
      case HostKind::regex:
        return RE2::FullMatch(t.host, *regex_[i]) ? std::optional<Rank>(Rank{3, 0, 0}) : std::nullopt;
      case HostKind::any:
        return Rank{4 + portless, 0, 0};
    }
    return std::nullopt;
  }

  // The host rule that decides, or no_rule.
  RuleId host_rule(const Target& t) const {
    RuleId best = no_rule;
    Rank best_rank{};
    for (std::size_t i = 0; i < rules_.size(); ++i) {
      if (rules_[i].kind != RuleKind::host) continue;
      auto r = rank(i, t);
      if (!r) continue;
      const bool better = best == no_rule || *r < best_rank ||
                          (*r == best_rank && rules_[i].action == Action::deny && rules_[best].action == Action::allow);
      if (better) {
        best = static_cast<RuleId>(i);
        best_rank = *r;
      }
    }
    return best;
  }

  // Longest prefix; at equal prefix user deny, then user allow, then built-in.
  RuleId cidr_rule(const Address& a) const {
    RuleId best = no_rule;
    auto prio = [&](RuleId id) { return rules_[id].kind == RuleKind::default_cidr ? 0 : rules_[id].action == Action::deny ? 2 : 1; };
    for (std::size_t i = 0; i < rules_.size(); ++i) {
      const auto& r = rules_[i];
      if (r.kind == RuleKind::host || !r.cidr.contains(a)) continue;
      const auto id = static_cast<RuleId>(i);
      if (best == no_rule || r.cidr.prefix_len > rules_[best].cidr.prefix_len ||
          (r.cidr.prefix_len == rules_[best].cidr.prefix_len && prio(id) > prio(best)))
        best = id;
    }
    return best;
  }

  RuleId address_rule(const Address& a) const {
    RuleId own = cidr_rule(a);
    Address inner[2];
    const int n = embedded_v4(a, inner);
    for (int i = 0; i < n; ++i) {
      const RuleId r = cidr_rule(inner[i]);
      if (r != no_rule && rules_[r].action == Action::deny && (own == no_rule || rules_[own].action != Action::deny))
        own = r;
    }
    return own;
  }

  // Verdict and reason, per docs/policy.md.
  std::pair<bool, Reason> check(const Target& t, const std::vector<Address>& resolved) const {
    const RuleId h = host_rule(t);
    const bool host_allows = h != no_rule ? rules_[h].action == Action::allow : mode_ == Mode::allow;
    const Reason host_reason = h != no_rule ? (host_allows ? Reason::allowed_by_rule : Reason::blocked_by_denylist)
                                            : (host_allows ? Reason::allowed_by_default : Reason::blocked_by_default);
    bool has_allow_cidr = false;
    for (const auto& r : rules_) has_allow_cidr |= r.kind == RuleKind::cidr && r.action == Action::allow;
    if (!host_allows && !(t.address && host_reason == Reason::blocked_by_default && has_allow_cidr))
      return {false, host_reason};
    std::vector<Address> as = t.address ? std::vector<Address>{*t.address} : resolved;
    if (as.empty()) return {false, Reason::no_address};
    bool any_blocked = false, any_allowed = false;
    Reason first_block{}, last_allow{};
    for (const auto& a : as) {
      const RuleId c = address_rule(a);
      const RuleInfo* cr = c == no_rule ? nullptr : &rules_[c];
      bool ok;
      Reason why;
      if (cr && cr->kind == RuleKind::cidr && cr->action == Action::deny) {
        ok = false, why = Reason::blocked_by_cidr;
      } else if (!host_allows) {
        if (cr && cr->kind == RuleKind::cidr) ok = true, why = Reason::allowed_by_cidr;
        else ok = false, why = host_reason;
      } else if (cr && cr->kind == RuleKind::default_cidr) {
        const bool exact_port = h != no_rule && rules_[h].host.kind == HostKind::exact && rules_[h].host.port;
        if (exact_port) ok = true, why = Reason::allowed_by_rule;
        else ok = false, why = Reason::blocked_by_default_cidr;
      } else if (cr && host_reason == Reason::allowed_by_default) {
        ok = true, why = Reason::allowed_by_cidr;
      } else {
        ok = true, why = host_reason;
      }
      if (!ok && !any_blocked) first_block = why;
      if (ok) last_allow = why;
      (ok ? any_allowed : any_blocked) = true;
    }
    if (!any_blocked) return {true, last_allow};
    return {false, any_allowed ? Reason::dns_mixed_answer : first_block};
  }

 private:
  Mode mode_;
  std::span<const RuleInfo> rules_;
  std::vector<std::unique_ptr<RE2>> regex_;
};

// --- Random rule sets and queries over small pools, so that rules collide. ---

class Gen {
 public:
  explicit Gen(std::uint64_t seed) : rng_(seed) {}
  int pick(int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng_); }
  bool chance(int percent) { return pick(100) < percent; }

  std::string name() {
    static const char* labels[] = {"a", "b", "api", "www", "x-1"};
    static const char* tlds[] = {"example.com", "example.net", "corp.internal"};
    std::string n = tlds[pick(3)];
    for (int d = pick(4); d > 0; --d) n = std::string(labels[pick(5)]) + "." + n;
    return n;
  }
  std::uint16_t port() {
    static const std::uint16_t ports[] = {80, 443, 5432, 8080};
    return ports[pick(4)];
  }
  Address address() {
    // Clustered near rule bases, the built-in ranges, and embedding prefixes.
    static const char* bases[] = {"10.0.0.0", "127.0.0.1", "192.168.1.0", "203.0.113.0", "8.8.8.8", "172.16.0.0",
                                  "169.254.169.254", "::1", "2001:db8::", "fe80::", "64:ff9b::", "2002::",
                                  "2001::", "::ffff:0:0", "fd00::", "2606:4700::"};
    Address a = *parse_address(bases[pick(16)]);
    const int noise = pick(4);
    if (noise == 1) a.lo ^= static_cast<std::uint64_t>(pick(256));
    if (noise == 2) a.lo ^= static_cast<std::uint64_t>(pick(1 << 16)) << pick(17);
    if (noise == 3) a.hi ^= static_cast<std::uint64_t>(pick(1 << 16)) << pick(49);
    if (a.hi == 0 && (a.lo >> 32) == 0xffff) return a;
    return a;
  }
  std::string cidr() {
    const Address a = address();
    if (a.is_v4()) return a.to_string() + "/" + std::to_string(pick(33));
    return a.to_string() + "/" + std::to_string(pick(129));
  }
  std::string host_rule() {
    std::string h;
    switch (pick(10)) {
      case 0: h = "*." + name(); break;
      case 1: h = "**." + name(); break;
      case 2: h = "*"; break;
      case 3: h = address().to_string(); if (h.find(':') != std::string::npos) h = "[" + h + "]"; break;
      case 4: return chance(50) ? "re:(a|api)\\..*" : "re:.*\\.example\\.(com|net)";
      default: h = name();
    }
    if (chance(50) || h == "*") h += ":" + std::to_string(port());
    return h;
  }

 private:
  std::mt19937_64 rng_;
};

TEST(Differential, CompiledPolicyAgreesWithNaiveReference) {
  constexpr int rule_sets = 250;
  constexpr int queries_per_set = 4000;  // 1,000,000 queries in all
  Gen g(20261127);
  long compared = 0;
  for (int s = 0; s < rule_sets; ++s) {
    const Mode mode = g.chance(50) ? Mode::allow : Mode::deny;
    std::vector<std::string> rules;
    for (int n = g.pick(40); n > 0; --n) {
      const std::string verb = g.chance(50) ? "allow" : "deny";
      if (g.chance(35)) rules.push_back(verb + "-cidr " + g.cidr());
      else rules.push_back(verb + " " + g.host_rule());
    }
    auto policy = testing::make_policy(mode, rules);
    const Reference ref(mode, *policy);
    for (int q = 0; q < queries_per_set; ++q) {
      Target t;
      std::vector<Address> resolved;
      if (g.chance(30)) {
        t.address = g.address();
        t.host = t.address->to_string();
      } else {
        t.host = g.name();
        for (int n = g.pick(3); n >= 0; --n) resolved.push_back(g.address());
      }
      t.port = g.port();
      const Decision got = policy->check(t, resolved);
      const auto [ok, reason] = ref.check(t, resolved);
      const Decision host = policy->check_host(t);
      ASSERT_EQ(host.rule, ref.host_rule(t)) << "host " << t.host << ":" << t.port << " set " << s;
      if (got.lets_through() != ok || got.reason != reason) {
        std::string dump;
        for (const auto& r : rules) dump += "  " + r + "\n";
        std::string as;
        for (const auto& a : resolved) as += a.to_string() + " ";
        FAIL() << "mode " << to_string(mode) << " target " << t.host << ":" << t.port << " resolved [" << as
               << "]\ncompiled: " << to_string(got.verdict) << " " << to_string(got.reason)
               << "\nreference: " << (ok ? "allow " : "deny ") << to_string(reason) << "\nrules:\n" << dump;
      }
      if (t.address) {
        ASSERT_EQ(policy->check(t, {}).reason, got.reason);
      }
      ++compared;
    }
  }
  EXPECT_EQ(compared, static_cast<long>(rule_sets) * queries_per_set);
}

}  // namespace
}  // namespace sandgate::policy
