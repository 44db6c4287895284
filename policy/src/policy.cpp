#include "sandgate/policy/policy.h"

#include <re2/re2.h>
#include <re2/set.h>

#include <algorithm>
#include <array>
#include <map>
#include <tuple>

#include "cidr_table.h"
#include "host_table.h"

namespace sandgate::policy {

struct Policy::Compiled {
  detail::HostTable hosts;
  detail::CidrTable cidrs;
  std::unique_ptr<RE2::Set> regexes;  // null without re: rules
  std::vector<RuleId> regex_rules;    // RE2::Set index -> rule
  std::vector<std::pair<std::uint16_t, RuleId>> any_ports;  // "*:PORT", sorted by port
  RuleId any_any = no_rule;                                  // "*"
  bool has_allow_cidr = false;
};

namespace {

// Built-in ranges, blocked in every mode. IPv6 forms that carry IPv4 are not
// listed: they are judged by the IPv4 inside them (embedded_v4).
constexpr std::array<std::string_view, 14> default_blocked_text = {
    "0.0.0.0/8",  "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.168.0.0/16",
    "224.0.0.0/4", "240.0.0.0/4", "::/128",     "::1/128",       "fc00::/7",    "fe80::/10",      "ff00::/8",
};

const std::vector<Cidr>& default_blocked_list() {
  static const std::vector<Cidr> list = [] {
    std::vector<Cidr> v;
    for (auto t : default_blocked_text) v.push_back(parse_cidr(t)->cidr);
    return v;
  }();
  return list;
}

bool is_exact_port_allow(const RuleInfo* r) noexcept {
  return r && r->kind == RuleKind::host && r->action == Action::allow && r->host.kind == HostKind::exact &&
         r->host.port.has_value();
}

}  // namespace

std::string_view to_string(Mode m) noexcept { return m == Mode::allow ? "allow" : "deny"; }
std::string_view to_string(Action a) noexcept { return a == Action::allow ? "allow" : "deny"; }
std::string_view to_string(Phase p) noexcept { return p == Phase::host ? "host" : "address"; }
std::string_view to_string(Verdict v) noexcept {
  switch (v) {
    case Verdict::allow: return "allow";
    case Verdict::deny: return "deny";
    case Verdict::report: return "report";
  }
  return "deny";
}
std::string_view to_string(Reason r) noexcept {
  switch (r) {
    case Reason::allowed_by_rule: return "allowed-by-rule";
    case Reason::allowed_by_default: return "allowed-by-default";
    case Reason::allowed_by_cidr: return "allowed-by-cidr";
    case Reason::blocked_by_denylist: return "blocked-by-denylist";
    case Reason::blocked_by_default: return "blocked-by-default";
    case Reason::blocked_by_cidr: return "blocked-by-cidr";
    case Reason::blocked_by_default_cidr: return "blocked-by-default-cidr";
    case Reason::dns_mixed_answer: return "dns-mixed-answer";
    case Reason::no_address: return "no-address";
  }
  return "blocked-by-default";
}

PolicyBuilder::PolicyBuilder(Mode mode, bool report) : mode_(mode), report_(report) {}

void PolicyBuilder::add_host_rule(Action action, HostPattern pattern, std::string text, std::string comment,
                                  RuleSource source) {
  RuleInfo r;
  r.kind = RuleKind::host;
  r.action = action;
  r.text = std::move(text);
  r.comment = std::move(comment);
  r.source = std::move(source);
  r.host = std::move(pattern);
  rules_.push_back(std::move(r));
}

void PolicyBuilder::add_cidr_rule(Action action, Cidr cidr, std::string text, std::string comment,
                                  RuleSource source) {
  RuleInfo r;
  r.kind = RuleKind::cidr;
  r.action = action;
  r.text = std::move(text);
  r.comment = std::move(comment);
  r.source = std::move(source);
  r.cidr = cidr;
  rules_.push_back(std::move(r));
}

boost::system::result<std::shared_ptr<const Policy>, PatternError> PolicyBuilder::build() && {
  for (const auto& c : default_blocked_list()) {
    RuleInfo r;
    r.kind = RuleKind::default_cidr;
    r.action = Action::deny;
    r.text = c.to_string();
    r.comment = "blocked by default in every mode";
    r.cidr = c;
    rules_.push_back(std::move(r));
  }
  std::shared_ptr<Policy> p(new Policy(mode_, report_, std::move(rules_)));
  auto& c = *p->compiled_;
  const auto& rules = p->rules_;

  c.hosts.compile(rules);
  std::vector<detail::CidrTable::Entry> entries;
  std::map<std::uint16_t, RuleId> any_ports;
  RE2::Options opts;
  opts.set_log_errors(false);
  for (RuleId id = 0; id < rules.size(); ++id) {
    const auto& r = rules[id];
    if (r.kind != RuleKind::host) {
      const std::uint8_t prio = r.kind == RuleKind::default_cidr ? 0 : r.action == Action::deny ? 2 : 1;
      entries.push_back({r.cidr, id, prio});
      c.has_allow_cidr |= r.kind == RuleKind::cidr && r.action == Action::allow;
      continue;
    }
    if (r.host.kind == HostKind::regex) {
      if (!c.regexes) c.regexes = std::make_unique<RE2::Set>(opts, RE2::ANCHOR_BOTH);
      std::string error;
      if (c.regexes->Add(r.host.host, &error) < 0)
        return PatternError{"'" + r.text + "' is not a valid RE2 regular expression: " + error};
      c.regex_rules.push_back(id);
    } else if (r.host.kind == HostKind::any) {
      if (r.host.port) {
        auto [it, fresh] = any_ports.try_emplace(*r.host.port, id);
        if (!fresh) it->second = detail::better_of(rules, it->second, id);
      } else {
        c.any_any = detail::better_of(rules, c.any_any, id);
      }
    }
  }
  c.any_ports.assign(any_ports.begin(), any_ports.end());
  if (c.regexes && !c.regexes->Compile()) return PatternError{"the regular expressions (re: rules) use too much memory"};
  c.cidrs.compile(std::move(entries));
  return std::shared_ptr<const Policy>(std::move(p));
}

Policy::Policy(Mode mode, bool report, std::vector<RuleInfo> rules)
    : mode_(mode), report_(report), rules_(std::move(rules)), compiled_(std::make_unique<Compiled>()) {}

Policy::~Policy() = default;

std::span<const Cidr> Policy::default_blocked() noexcept { return default_blocked_list(); }

std::size_t Policy::memory_bytes() const noexcept {
  return compiled_->hosts.memory_bytes() + compiled_->cidrs.memory_bytes() +
         compiled_->any_ports.capacity() * sizeof(compiled_->any_ports[0]);
}

Decision Policy::finish(Decision d) const noexcept {
  if (d.verdict == Verdict::deny && report_) d.verdict = Verdict::report;
  return d;
}

Decision Policy::host_decision(const Target& target) const noexcept {
  const auto& c = *compiled_;
  RuleId r = c.hosts.find(target.host, target.port);
  if (r == no_rule && c.regexes) {
    // Only policies with re: rules get here; the vector is reused per thread.
    thread_local std::vector<int> hits;
    hits.clear();
    if (c.regexes->Match(target.host, &hits))
      for (int i : hits) r = detail::better_of(rules_, r, c.regex_rules[static_cast<std::size_t>(i)]);
  }
  if (r == no_rule) {
    auto it = std::lower_bound(c.any_ports.begin(), c.any_ports.end(), target.port,
                               [](const auto& e, std::uint16_t p) { return e.first < p; });
    r = it != c.any_ports.end() && it->first == target.port ? it->second : c.any_any;
  }
  Decision d;
  d.phase = Phase::host;
  d.rule = r;
  if (r != no_rule) {
    const bool deny = rules_[r].action == Action::deny;
    d.verdict = deny ? Verdict::deny : Verdict::allow;
    d.reason = deny ? Reason::blocked_by_denylist : Reason::allowed_by_rule;
  } else if (mode_ == Mode::allow) {
    d.verdict = Verdict::allow;
    d.reason = Reason::allowed_by_default;
  } else {
    d.verdict = Verdict::deny;
    d.reason = Reason::blocked_by_default;
  }
  return d;
}

Decision Policy::check_host(const Target& target) const noexcept { return finish(host_decision(target)); }

RuleId Policy::lookup_cidr(const Address& addr) const noexcept {
  RuleId own = compiled_->cidrs.lookup(addr);
  Address inner[2];
  const int n = embedded_v4(addr, inner);
  for (int i = 0; i < n; ++i) {
    // An IPv4 address carried inside is judged too; a block there wins.
    const RuleId r = compiled_->cidrs.lookup(inner[i]);
    if (r != no_rule && rules_[r].action == Action::deny && (own == no_rule || rules_[own].action != Action::deny))
      own = r;
  }
  return own;
}

bool Policy::needs_address_phase(const Decision& host, const Target& target) const noexcept {
  return !host.would_deny() ||
         (target.address && host.reason == Reason::blocked_by_default && compiled_->has_allow_cidr);
}

Decision Policy::check_address(const Decision& host, const Target& target, const Address& addr) const noexcept {
  const RuleId c = lookup_cidr(addr);
  const RuleInfo* cr = rule(c);
  Decision d;
  d.phase = Phase::address;
  d.address = addr;
  if (cr && cr->kind == RuleKind::cidr && cr->action == Action::deny) {
    d.verdict = Verdict::deny;
    d.reason = Reason::blocked_by_cidr;
    d.rule = c;
  } else if (host.would_deny()) {
    // A literal address that no host rule named may still be opened by allow_cidrs.
    if (target.address && host.reason == Reason::blocked_by_default && cr && cr->kind == RuleKind::cidr) {
      d.verdict = Verdict::allow;
      d.reason = Reason::allowed_by_cidr;
      d.rule = c;
    } else {
      d = host;
      d.verdict = Verdict::deny;
    }
  } else if (cr && cr->kind == RuleKind::default_cidr) {
    // Check after resolve: DNS may rebind an allowed name to a private address.
    // Only an exact host:port allow opens exactly that destination.
    if (is_exact_port_allow(rule(host.rule))) {
      d.verdict = Verdict::allow;
      d.reason = Reason::allowed_by_rule;
      d.rule = host.rule;
    } else {
      d.verdict = Verdict::deny;
      d.reason = Reason::blocked_by_default_cidr;
      d.rule = c;
    }
  } else if (cr && host.reason == Reason::allowed_by_default) {
    d.verdict = Verdict::allow;
    d.reason = Reason::allowed_by_cidr;
    d.rule = c;
  } else {
    d.verdict = Verdict::allow;
    d.reason = host.reason;
    d.rule = host.rule;
  }
  return finish(d);
}

Decision Policy::check(const Target& target, std::span<const Address> resolved) const noexcept {
  return check_addresses(check_host(target), target, resolved);
}

Decision Policy::check_addresses(const Decision& host, const Target& target,
                                 std::span<const Address> resolved) const noexcept {
  if (!needs_address_phase(host, target)) return host;
  const std::span<const Address> addrs = target.address ? std::span<const Address>(&*target.address, 1) : resolved;
  if (addrs.empty()) {
    Decision d;
    d.phase = Phase::address;
    d.reason = Reason::no_address;
    d.rule = no_rule;
    return finish(d);
  }
  Decision blocked, allowed;
  bool any_blocked = false, any_allowed = false;
  for (const auto& a : addrs) {
    const Decision d = check_address(host, target, a);
    if (d.would_deny()) {
      if (!any_blocked) blocked = d;
      any_blocked = true;
    } else {
      allowed = d;
      any_allowed = true;
    }
  }
  if (!any_blocked) return allowed;
  if (any_allowed) blocked.reason = Reason::dns_mixed_answer;
  return blocked;
}

}  // namespace sandgate::policy
