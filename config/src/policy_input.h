// The validated input of one policy, before compilation: what the YAML and
// the Docker JSON front ends produce and what lint and compile consume.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "sandgate/config/policy_file.h"

namespace sandgate::config::detail {

struct RuleInput {
  policy::Action action = policy::Action::deny;
  bool is_cidr = false;
  std::string list;  // "allow_hosts", "block_cidrs", ... for messages
  std::string text;
  std::string comment;
  policy::RuleSource source;
  policy::HostPattern host;   // !is_cidr
  policy::ParsedCidr cidr;    // is_cidr
};

struct PolicyInput {
  std::string name;  // "" for the default policy
  std::optional<policy::Mode> mode;
  std::optional<bool> report;
  bool inherit = true;  // named policies start from the default's rules
  policy::RuleSource where;  // the key that opened this policy
  std::vector<RuleInput> rules;
};

// Collects diagnostics for one file, with yaml-cpp's 0-based marks made 1-based.
class Reporter {
 public:
  explicit Reporter(std::string file) : file_(std::move(file)) {}
  void error(const YAML::Mark& m, std::string msg) { add(Severity::error, m, std::move(msg)); }
  void warning(const YAML::Mark& m, std::string msg) { add(Severity::warning, m, std::move(msg)); }
  void error(const policy::RuleSource& at, std::string msg) { add(Severity::error, at, std::move(msg)); }
  void warning(const policy::RuleSource& at, std::string msg) { add(Severity::warning, at, std::move(msg)); }
  void add(Severity s, const YAML::Mark& m, std::string msg);
  void add(Severity s, const policy::RuleSource& at, std::string msg);
  policy::RuleSource source(const YAML::Mark& m) const;
  bool has_errors() const noexcept;
  const std::string& file() const noexcept { return file_; }
  Diagnostics take() { return std::move(out_); }

 private:
  std::string file_;
  Diagnostics out_;
};

// Parses one rule list entry: "pattern" or {host|cidr: pattern, comment: text}.
void parse_rule_list(const YAML::Node& list, const std::string& list_name, policy::Action action, bool is_cidr,
                     Reporter& r, std::vector<RuleInput>& out);

// The closest of the known keys to an unknown one, for "did you mean".
std::string suggest_key(std::string_view unknown, const std::vector<std::string_view>& known);

// Front ends: fill the default policy (and named ones) or report errors.
void read_yaml(const YAML::Node& root, Reporter& r, std::vector<PolicyInput>& out, const LoadOptions& options);
void read_docker_json(std::string_view text, const YAML::Node& root, Reporter& r, std::vector<PolicyInput>& out);

// Warnings for rules that are valid but probably not what was meant, and
// errors for catch-alls that only restate the mode.
void lint(const PolicyInput& p, policy::Mode mode, Reporter& r);

}  // namespace sandgate::config::detail
