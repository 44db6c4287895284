// `sandgate policy check|explain`: the operator's view of the policy engine.
// explain decides with the same Policy::check the proxy calls, so the two
// can never disagree; it only adds the list of candidate rules.
#include <boost/json.hpp>

#include <cstdio>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "commands.h"
#include "sandgate/config/policy_file.h"
#include "targets.h"

namespace sandgate::cli {
namespace {

namespace pol = sandgate::policy;
namespace cfg = sandgate::config;

constexpr std::string_view policy_usage = R"(usage: sandgate policy check FILE... [--forbid-report]
       sandgate policy explain FILE TARGET [--addr IP]... [--sandbox NAME] [--json] [--forbid-report]

check     Loads each policy file (YAML, or Docker's proxy-config.json by its
          .json extension), prints every error and warning as
          file:line:column, and a summary of each file that loads.
          Exit status: 0 all valid, 1 any error.

explain   Shows how FILE decides TARGET (host[:port], default port 443; or a
          URL, as an agent's error shows it: http and ws mean port 80,
          https and wss 443, unless the URL names a port): the
          verdict, the deciding rule with file:line, the phase and reason
          code, and every rule that matched and why it lost. explain never
          resolves names: give the addresses a name resolves to with --addr
          to run the address phase (private ranges, CIDR rules, rebinding).
          Exit status: 0 allowed (or let through in report mode), 1 denied,
          2 bad input or an invalid policy.

Options:
  --addr IP          an address TARGET resolves to (repeatable)
  --sandbox NAME     use the named policy of sandbox NAME (default: the file's default policy)
  --json             print the explanation as one JSON object
  --forbid-report    refuse policies with 'report: true' (fleet-wide enforcement)
  -h, --help         show this help

Examples:
  sandgate policy check policy.yaml proxy-config.json
  sandgate policy explain policy.yaml api.anthropic.com
  sandgate policy explain policy.yaml https://pastebin.com/raw/x1y2
  sandgate policy explain policy.yaml registry.npmjs.org:443 --addr 104.16.0.35
  sandgate policy explain policy.yaml localhost:5432 --addr 127.0.0.1 --json
)";

void print_diagnostics(const cfg::Diagnostics& ds) {
  for (const auto& d : ds) std::cerr << d.to_string() << "\n";
}

int check(std::span<const std::string_view> args) {
  cfg::LoadOptions options;
  std::vector<std::string> files;
  for (auto a : args) {
    if (a == "--forbid-report") options.forbid_report = true;
    else if (a.starts_with("-")) {
      std::cerr << "sandgate policy check: unknown option '" << a << "' (see --help)\n";
      return 2;
    } else files.emplace_back(a);
  }
  if (files.empty()) {
    std::cerr << "sandgate policy check: no FILE given (see --help)\n";
    return 2;
  }
  int status = 0;
  for (const auto& f : files) {
    auto set = cfg::load_policy_file(f, options);
    if (!set) {
      print_diagnostics(set.error());
      std::size_t errors = 0;
      for (const auto& d : set.error()) errors += d.severity == cfg::Severity::error;
      std::cerr << f << ": invalid, " << errors << (errors == 1 ? " error" : " errors") << "\n";
      status = 1;
      continue;
    }
    print_diagnostics(set->warnings);
    const auto& p = *set->default_policy;
    std::size_t rules = 0;
    for (const auto& r : p.rules()) rules += r.kind != pol::RuleKind::default_cidr;
    std::cout << f << ": ok, mode " << pol::to_string(p.mode()) << (p.report() ? " (report only)" : "") << ", "
              << rules << (rules == 1 ? " rule" : " rules");
    if (!set->named.empty()) std::cout << ", " << set->named.size() << " sandbox policies";
    if (!set->warnings.empty()) std::cout << ", " << set->warnings.size() << " warnings";
    std::cout << ", sha256 " << set->sha256.substr(0, 12) << "\n";
  }
  return status;
}

boost::json::value rule_json(const pol::Policy& p, pol::RuleId id) {
  const auto* r = p.rule(id);
  if (!r) return nullptr;
  return {{"id", id},
          {"text", r->text},
          {"action", pol::to_string(r->action)},
          {"kind", r->kind == pol::RuleKind::host ? "host" : r->kind == pol::RuleKind::cidr ? "cidr" : "built-in-cidr"},
          {"source", r->source.to_string()},
          {"comment", r->comment}};
}

std::string rule_line(const pol::Policy& p, pol::RuleId id) {
  const auto* r = p.rule(id);
  if (!r) return std::string("<default policy: mode ") + std::string(pol::to_string(p.mode())) + ">";
  std::string s = std::string(pol::to_string(r->action)) + " " + r->text + "  (" + r->source.to_string() + ")";
  if (!r->comment.empty()) s += "  # " + r->comment;
  return s;
}

int explain(std::span<const std::string_view> args) {
  cfg::LoadOptions options;
  std::vector<std::string_view> positional;
  std::vector<std::string_view> addr_args;
  std::string sandbox;
  bool json = false;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const auto a = args[i];
    auto value = [&](std::string_view name) -> std::optional<std::string_view> {
      if (i + 1 >= args.size()) {
        std::cerr << "sandgate policy explain: " << name << " needs a value (see --help)\n";
        return std::nullopt;
      }
      return args[++i];
    };
    if (a == "--json") json = true;
    else if (a == "--forbid-report") options.forbid_report = true;
    else if (a == "--addr") {
      auto v = value(a);
      if (!v) return 2;
      addr_args.push_back(*v);
    } else if (a == "--sandbox") {
      auto v = value(a);
      if (!v) return 2;
      sandbox = *v;
    } else if (a.starts_with("-")) {
      std::cerr << "sandgate policy explain: unknown option '" << a << "' (see --help)\n";
      return 2;
    } else positional.push_back(a);
  }
  if (positional.size() != 2) {
    std::cerr << "sandgate policy explain: expected FILE and TARGET (see --help)\n";
    return 2;
  }
  auto set = cfg::load_policy_file(std::string(positional[0]), options);
  if (!set) {
    print_diagnostics(set.error());
    return 2;
  }
  if (!sandbox.empty() && !set->named.contains(sandbox)) {
    std::cerr << "sandgate policy explain: " << positional[0] << " has no policy for sandbox '" << sandbox
              << "'; the default policy applies to it\n";
  }
  const pol::Policy& p = *set->for_sandbox(sandbox);
  const auto authority = authority_of(positional[1]);
  if (!authority) {
    std::cerr << "sandgate policy explain: bad TARGET '" << positional[1] << "': " << authority.error() << "\n";
    return 2;
  }
  auto target = pol::parse_target(*authority, 443);
  if (!target) {
    std::cerr << "sandgate policy explain: bad TARGET '" << positional[1] << "': " << pol::describe(target.error())
              << "\n";
    return 2;
  }
  std::vector<pol::Address> addrs;
  for (auto a : addr_args) {
    auto t = pol::normalize_host(a);
    if (!t || !t->address) {
      std::cerr << "sandgate policy explain: --addr '" << a << "' is not an IP address\n";
      return 2;
    }
    addrs.push_back(*t->address);
  }
  const bool address_phase = target->address || !addrs.empty();
  const pol::Decision d = address_phase ? p.check(*target, addrs) : p.check_host(*target);
  const auto host_candidates = p.host_candidates(*target);
  std::vector<pol::Address> checked = target->address ? std::vector<pol::Address>{*target->address} : addrs;

  if (json) {
    boost::json::array hc;
    for (const auto& c : host_candidates)
      hc.push_back({{"rule", rule_json(p, c.rule)}, {"won", c.won}, {"why", c.why}});
    boost::json::object ac;
    for (const auto& a : checked) {
      boost::json::array list;
      for (const auto& c : p.address_candidates(a))
        list.push_back({{"rule", rule_json(p, c.rule)}, {"won", c.won}, {"why", c.why}});
      ac[a.to_string()] = std::move(list);
    }
    boost::json::object o{{"target", pol::authority(*target)},
                          {"host", target->host},
                          {"port", target->port},
                          {"sandbox", sandbox},
                          {"policy_sha256", set->sha256},
                          {"mode", pol::to_string(p.mode())},
                          {"report_mode", p.report()},
                          {"verdict", pol::to_string(d.verdict)},
                          {"reason", pol::to_string(d.reason)},
                          {"phase", pol::to_string(d.phase)},
                          {"address", d.phase == pol::Phase::address && d.reason != pol::Reason::no_address
                                          ? boost::json::value(d.address.to_string())
                                          : boost::json::value(nullptr)},
                          {"rule", rule_json(p, d.rule)},
                          {"address_phase_run", address_phase},
                          {"host_candidates", std::move(hc)},
                          {"address_candidates", std::move(ac)}};
    std::cout << boost::json::serialize(o) << "\n";
  } else {
    std::cout << "target   " << pol::authority(*target);
    if (!sandbox.empty()) std::cout << "  (sandbox " << sandbox << ")";
    std::cout << "\nverdict  " << pol::to_string(d.verdict);
    if (d.verdict == pol::Verdict::report) std::cout << " (report mode: would be denied, let through)";
    std::cout << "\nreason   " << pol::to_string(d.reason) << "\nphase    " << pol::to_string(d.phase);
    if (d.phase == pol::Phase::address && d.reason != pol::Reason::no_address)
      std::cout << " (" << d.address.to_string() << ")";
    std::cout << "\nrule     " << rule_line(p, d.rule) << "\n";
    if (!address_phase)
      std::cout << "note     host phase only: explain does not resolve names; add --addr IP for each address "
                   "the name resolves to\n";
    std::cout << "\nhost rules that matched:\n";
    if (host_candidates.empty()) std::cout << "  (none: the mode's default decides the host phase)\n";
    for (const auto& c : host_candidates) std::cout << "  " << rule_line(p, c.rule) << "\n      " << c.why << "\n";
    for (const auto& a : checked) {
      std::cout << "\naddress rules for " << a.to_string() << ":\n";
      const auto list = p.address_candidates(a);
      if (list.empty()) std::cout << "  (none)\n";
      for (const auto& c : list) std::cout << "  " << rule_line(p, c.rule) << "\n      " << c.why << "\n";
    }
  }
  return d.lets_through() ? 0 : 1;
}

}  // namespace

int policy_command(std::span<const std::string_view> args) {
  if (args.empty() || args[0] == "-h" || args[0] == "--help") {
    std::fputs(policy_usage.data(), args.empty() ? stderr : stdout);
    return args.empty() ? 2 : 0;
  }
  const auto sub = args[0];
  const auto rest = args.subspan(1);
  for (auto a : rest)
    if (a == "-h" || a == "--help") {
      std::fputs(policy_usage.data(), stdout);
      return 0;
    }
  if (sub == "check") return check(rest);
  if (sub == "explain") return explain(rest);
  std::cerr << "sandgate policy: unknown subcommand '" << sub << "' (check or explain; see --help)\n";
  return 2;
}

}  // namespace sandgate::cli
