// The compiled policy: one immutable object that every connection shares.
//
// A request is decided in two phases. The host phase (check_host) runs
// before DNS, on the normalized target; the address phase (check_address,
// or check() for a whole answer) runs on every resolved address before the
// proxy dials it. docs/policy.md gives the rules these functions implement.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <boost/system/result.hpp>

#include "sandgate/policy/address.h"
#include "sandgate/policy/rule.h"
#include "sandgate/policy/target.h"

namespace sandgate::policy {

enum class Mode : std::uint8_t { allow, deny };  // what happens when no rule matches
enum class Verdict : std::uint8_t { allow, deny, report };  // report: would deny, let through
enum class Phase : std::uint8_t { host, address };
enum class Reason : std::uint8_t {
  allowed_by_rule,          // a host rule allowed it
  allowed_by_default,       // no rule matched; the policy's mode is allow
  allowed_by_cidr,          // an allow_cidrs rule allowed the address
  blocked_by_denylist,      // a block_hosts rule matched
  blocked_by_default,       // no rule matched; the policy's mode is deny
  blocked_by_cidr,          // a block_cidrs rule matched the address
  blocked_by_default_cidr,  // the address is in a range blocked by default
  dns_mixed_answer,         // some resolved addresses were blocked, so all are
  no_address,               // the name resolved to nothing usable
};

std::string_view to_string(Mode m) noexcept;
std::string_view to_string(Verdict v) noexcept;
std::string_view to_string(Phase p) noexcept;
std::string_view to_string(Reason r) noexcept;  // "blocked-by-denylist", as logs and X-Proxy-Error carry
std::string_view to_string(Action a) noexcept;

using RuleId = std::uint32_t;
inline constexpr RuleId no_rule = 0xffff'ffff;  // the mode's default decided

// A decision is a value that carries its reason.
struct Decision {
  Verdict verdict = Verdict::deny;  // deny on doubt
  Reason reason = Reason::blocked_by_default;
  Phase phase = Phase::host;
  RuleId rule = no_rule;  // the deciding rule (Policy::rule()); no_rule: the mode's default
  Address address{};      // address phase: the address that decided

  // True when the connection may go ahead (allow, or report mode's would-deny).
  bool lets_through() const noexcept { return verdict != Verdict::deny; }
  // True when enforcement would refuse it, in report mode too.
  bool would_deny() const noexcept { return verdict != Verdict::allow; }
};

// One rule that matched a target, for `explain`: did it win, and if not, why.
struct Candidate {
  RuleId rule = no_rule;
  bool won = false;
  std::string why;  // "exact host:port, the most specific kind" / "less specific than ..."
};

class Policy;

// Collects rules, then compiles them once. Not thread-safe; build() consumes it.
class PolicyBuilder {
 public:
  PolicyBuilder(Mode mode, bool report);
  // The rule's text, comment and source are kept for logs and explanations.
  void add_host_rule(Action action, HostPattern pattern, std::string text, std::string comment, RuleSource source);
  void add_cidr_rule(Action action, Cidr cidr, std::string text, std::string comment, RuleSource source);
  // Compiles the host table, the RE2::Set and the CIDR intervals. Fails only
  // when a regex does not compile; the error names the rule.
  // Cost: O(n log n) in rules; about 1 s for a million rules on one core.
  boost::system::result<std::shared_ptr<const Policy>, PatternError> build() &&;

 private:
  Mode mode_;
  bool report_;
  std::vector<RuleInfo> rules_;
};

// Immutable once built; safe to query from any thread without locks.
class Policy {
 public:
  Mode mode() const noexcept { return mode_; }
  bool report() const noexcept { return report_; }
  std::span<const RuleInfo> rules() const noexcept { return rules_; }
  // nullptr for no_rule.
  const RuleInfo* rule(RuleId id) const noexcept { return id < rules_.size() ? &rules_[id] : nullptr; }

  // Host phase, before DNS. Cost: O(labels in host) hash probes, then the
  // regex set if the policy has re: rules; no allocation without re: rules.
  Decision check_host(const Target& target) const noexcept;

  // Address phase for one address, given the host phase's decision. Cost:
  // one interval lookup (two for IPv6 forms that carry IPv4); no allocation.
  Decision check_address(const Decision& host, const Target& target, const Address& addr) const noexcept;

  // Both phases for a whole DNS answer (or the literal's own address): if any
  // address is blocked the connection is denied, naming that address.
  Decision check(const Target& target, std::span<const Address> resolved) const noexcept;

  // The address phase for a whole answer, given check_host's decision (for
  // callers that ran the host phase before resolving). Unless it denies, every
  // address in `resolved` may be dialed. check() is check_host + this.
  Decision check_addresses(const Decision& host, const Target& target,
                           std::span<const Address> resolved) const noexcept;

  // True when the proxy must resolve the target before deciding: the host
  // phase let it through, or an address literal may still be allowed by an
  // allow_cidrs rule. A host-phase deny of a name never reaches DNS.
  bool needs_address_phase(const Decision& host, const Target& target) const noexcept;

  // For `explain`: every host rule that matches the target, with why each lost.
  // Cost: a linear scan of all rules; not for the data path.
  std::vector<Candidate> host_candidates(const Target& target) const;
  // Every CIDR rule (built-in ranges included) containing the address or an
  // IPv4 address it carries.
  std::vector<Candidate> address_candidates(const Address& addr) const;

  // The ranges blocked in every mode, as built-in rules.
  static std::span<const Cidr> default_blocked() noexcept;

  // Bytes held by the compiled lookup structures (for benchmarks).
  std::size_t memory_bytes() const noexcept;

  ~Policy();
  Policy(const Policy&) = delete;
  Policy& operator=(const Policy&) = delete;

 private:
  friend class PolicyBuilder;
  struct Compiled;
  Policy(Mode mode, bool report, std::vector<RuleInfo> rules);

  Decision finish(Decision d) const noexcept;
  Decision host_decision(const Target& target) const noexcept;
  RuleId lookup_cidr(const Address& addr) const noexcept;

  Mode mode_;
  bool report_;
  std::vector<RuleInfo> rules_;
  std::unique_ptr<Compiled> compiled_;
};

}  // namespace sandgate::policy
