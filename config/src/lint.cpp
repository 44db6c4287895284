// Valid but suspicious rules are warnings (nginx's rule); catch-alls that
// only restate the mode are errors, since they hide what the policy means.
#include <map>
#include <tuple>

#include "policy_input.h"

namespace sandgate::config::detail {
namespace {

using policy::Action;
using policy::HostKind;

std::string at(const RuleInput& r) { return r.list + " '" + r.text + "'"; }

std::string_view range_name(const policy::Cidr& c) {
  static const std::map<std::string, std::string_view> names = {
      {"0.0.0.0/8", "this network"},       {"10.0.0.0/8", "private network"},
      {"100.64.0.0/10", "carrier-grade NAT"}, {"127.0.0.0/8", "loopback"},
      {"169.254.0.0/16", "link-local and cloud metadata"}, {"172.16.0.0/12", "private network"},
      {"192.168.0.0/16", "private network"}, {"224.0.0.0/4", "multicast"},
      {"240.0.0.0/4", "reserved and broadcast"}, {"::/128", "unspecified"},
      {"::1/128", "IPv6 loopback"},          {"fc00::/7", "IPv6 unique local"},
      {"fe80::/10", "IPv6 link-local"},      {"ff00::/8", "IPv6 multicast"}};
  auto it = names.find(c.to_string());
  return it == names.end() ? "reserved" : it->second;
}

bool overlaps(const policy::Cidr& a, const policy::Cidr& b) { return a.contains(b.base) || b.contains(a.base); }

}  // namespace

void lint(const PolicyInput& p, policy::Mode mode, Reporter& r) {
  using Key = std::tuple<bool, int, std::string, int>;  // is_cidr, kind, pattern, port
  std::map<Key, const RuleInput*> first;
  for (const auto& rule : p.rules) {
    Key key = rule.is_cidr ? Key{true, rule.cidr.cidr.prefix_len, rule.cidr.cidr.to_string(), -1}
                           : Key{false, static_cast<int>(rule.host.kind), rule.host.host,
                                 rule.host.port ? *rule.host.port : -1};
    auto [it, fresh] = first.try_emplace(key, &rule);
    if (!fresh) {
      const RuleInput& prev = *it->second;
      if (prev.action == rule.action)
        r.warning(rule.source, at(rule) + ": duplicate of the rule at " + prev.source.to_string());
      else
        r.warning(rule.source, at(rule) + ": the same pattern is also in " + prev.list + " at " +
                                   prev.source.to_string() + "; deny wins a tie, so the allow never applies");
    }

    if (rule.is_cidr) {
      const auto& c = rule.cidr.cidr;
      if (rule.cidr.host_bits_set)
        r.warning(rule.source, at(rule) + ": has host bits set; it means " + c.to_string());
      if (!c.base.is_v4() && c.prefix_len <= 96 && c.contains(policy::Address::from_v4(0)))
        r.warning(rule.source, at(rule) + ": also covers every IPv4 address, which is checked as ::ffff:a.b.c.d; "
                                          "write 2000::/3 for the public IPv6 internet");
      if (rule.action == Action::allow)
        for (const auto& d : policy::Policy::default_blocked())
          if (overlaps(c, d) && d.prefix_len <= c.prefix_len)
            r.warning(rule.source, at(rule) + ": reopens part of " + d.to_string() + " (" +
                                       std::string(range_name(d)) + "), which is blocked by default");
      continue;
    }

    const auto& h = rule.host;
    if (h.kind == HostKind::any && !h.port) {
      r.error(rule.source, at(rule) + ": '*' alone " +
                               (rule.action == Action::allow ? "allows every host; write 'mode: allow' instead"
                                                             : "blocks every host; write 'mode: deny' instead") +
                               ". Catch-alls make sense only with a port, against the mode: '*:443' in allow_hosts "
                               "of a deny policy, or '*:25' in block_hosts of an allow policy");
    } else if (h.kind == HostKind::any) {
      const bool restates = (rule.action == Action::allow) == (mode == policy::Mode::allow);
      if (restates)
        r.warning(rule.source, at(rule) + ": restates the policy's mode (" + std::string(policy::to_string(mode)) +
                                   ") and changes nothing unless a less specific rule would otherwise decide");
    }
    if (h.kind == HostKind::subdomains) {
      bool apex = false;
      for (const auto& o : p.rules)
        if (!o.is_cidr && o.action == rule.action && o.host.host == h.host &&
            (o.host.kind == HostKind::exact || o.host.kind == HostKind::apex_and_subdomains))
          apex = true;
      if (!apex)
        r.warning(rule.source, at(rule) + ": does not match '" + h.host + "' itself; add '" + h.host +
                                   "' or write '**." + h.host + "' to cover both");
    }
    if (h.kind == HostKind::subdomains || h.kind == HostKind::apex_and_subdomains) {
      // *.x and **.x are equally specific for subdomains: the deny always wins.
      for (const auto& o : p.rules)
        if (&o != &rule && !o.is_cidr && o.action == Action::deny && rule.action == Action::allow &&
            o.host.host == h.host && o.host.port == h.port && o.host.kind != HostKind::exact &&
            o.host.kind != h.kind)
          r.warning(rule.source, at(rule) + ": shadowed by " + at(o) + " at " + o.source.to_string() +
                                     ": equally specific for subdomains, and deny wins");
    }
  }
}

}  // namespace sandgate::config::detail
