// The slow, linear view of a decision for `explain`: which rules matched and
// why each lost. The verdict itself always comes from check_host/check, so
// `explain` and the proxy cannot disagree; this file only ranks candidates.
#include <re2/re2.h>

#include <algorithm>
#include <optional>
#include <tuple>

#include "sandgate/policy/policy.h"

namespace sandgate::policy {
namespace {

// Lower is more specific: exact host:port, exact host, wildcard, regex, *:port, *.
struct HostRank {
  int group = 0;
  std::size_t suffix = 0;  // wildcards: longer suffix is more specific
  bool port_specific = false;
  auto key() const { return std::make_tuple(group, -static_cast<long>(suffix), port_specific ? 0 : 1); }
};

bool subdomain_of(std::string_view host, std::string_view suffix) {
  return host.size() > suffix.size() && host.ends_with(suffix) && host[host.size() - suffix.size() - 1] == '.';
}

std::optional<HostRank> rank(const HostPattern& p, const Target& t) {
  if (p.port && *p.port != t.port) return std::nullopt;
  const bool port = p.port.has_value();
  switch (p.kind) {
    case HostKind::exact:
      if (p.host != t.host) return std::nullopt;
      return HostRank{port ? 0 : 1, 0, port};
    case HostKind::apex_and_subdomains:
      if (t.address || (p.host != t.host && !subdomain_of(t.host, p.host))) return std::nullopt;
      return HostRank{2, p.host.size(), port};
    case HostKind::subdomains:
      if (t.address || !subdomain_of(t.host, p.host)) return std::nullopt;
      return HostRank{2, p.host.size(), port};
    case HostKind::regex: {
      RE2 re(p.host, RE2::Quiet);
      if (!re.ok() || !RE2::FullMatch(t.host, re)) return std::nullopt;
      return HostRank{3, 0, false};
    }
    case HostKind::any:
      return HostRank{port ? 4 : 5, 0, port};
  }
  return std::nullopt;
}

std::string describe_rank(const HostPattern& p, const HostRank& r) {
  switch (r.group) {
    case 0: return "exact host and port, the most specific kind";
    case 1: return "exact host";
    case 2:
      return std::string(p.kind == HostKind::subdomains ? "subdomain" : "domain") + " wildcard on '" + p.host + "'" +
             (r.port_specific ? " with a port" : "");
    case 3: return "regular expression";
    case 4: return "catch-all for one port";
    default: return "catch-all";
  }
}

std::string v4_aware_length(const Cidr& c) {
  const bool v4 = c.base.is_v4() && c.prefix_len >= 96;
  return "/" + std::to_string(v4 ? c.prefix_len - 96 : c.prefix_len);
}

}  // namespace

std::vector<Candidate> Policy::host_candidates(const Target& target) const {
  struct Match {
    RuleId id;
    HostRank rank;
  };
  std::vector<Match> matches;
  for (RuleId id = 0; id < rules_.size(); ++id)
    if (rules_[id].kind == RuleKind::host)
      if (auto r = rank(rules_[id].host, target)) matches.push_back({id, *r});
  const RuleId winner = host_decision(target).rule;
  const Match* win = nullptr;
  for (const auto& m : matches)
    if (m.id == winner) win = &m;
  std::vector<Candidate> out;
  for (const auto& m : matches) {
    const auto& r = rules_[m.id];
    Candidate c{m.id, m.id == winner, {}};
    if (c.won) {
      c.why = "wins: " + describe_rank(r.host, m.rank);
    } else if (!win) {
      c.why = "did not decide";
    } else if (m.rank.key() != win->rank.key()) {
      c.why = "loses: " + describe_rank(r.host, m.rank) + " is less specific than " +
              describe_rank(rules_[winner].host, win->rank);
    } else if (r.action != rules_[winner].action) {
      c.why = "loses: equally specific as the winner, and deny wins a tie";
    } else {
      c.why = "loses: duplicate of the winner (" + rules_[winner].source.to_string() + "), which comes first";
    }
    out.push_back(std::move(c));
  }
  return out;
}

std::vector<Candidate> Policy::address_candidates(const Address& addr) const {
  Address inner[2];
  const int n = embedded_v4(addr, inner);
  auto covers = [&](const Cidr& c) {
    if (c.contains(addr)) return true;
    for (int i = 0; i < n; ++i)
      if (c.contains(inner[i])) return true;
    return false;
  };
  const RuleId winner = lookup_cidr(addr);
  std::vector<Candidate> out;
  for (RuleId id = 0; id < rules_.size(); ++id) {
    const auto& r = rules_[id];
    if (r.kind == RuleKind::host || !covers(r.cidr)) continue;
    Candidate c{id, id == winner, {}};
    const std::string what = (r.kind == RuleKind::default_cidr ? "built-in range " : "range ") + r.text;
    if (c.won) {
      c.why = "wins: " + what + ", the longest prefix containing " + addr.to_string() +
              (n ? " or the IPv4 address it carries" : "");
    } else if (winner == no_rule) {
      c.why = "did not decide";
    } else if (r.cidr.prefix_len < rules_[winner].cidr.prefix_len || !rules_[winner].cidr.contains(r.cidr.base)) {
      c.why = "loses: " + what + " (" + v4_aware_length(r.cidr) + ") is a shorter prefix than " + rules_[winner].text;
    } else if (r.kind == RuleKind::default_cidr) {
      c.why = "loses: an operator's rule for the same range overrides the built-in one";
    } else {
      c.why = "loses: same range as the winner, which takes precedence (deny over allow, then first written)";
    }
    out.push_back(std::move(c));
  }
  return out;
}

}  // namespace sandgate::policy
