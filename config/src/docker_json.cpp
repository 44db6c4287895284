// Docker sandbox proxy-config.json, imported into the same policy input as
// YAML. Boost.JSON checks the syntax (strict JSON, exact error offset);
// yaml-cpp, which reads JSON too, gives every value its line and column.
#include <boost/json/src.hpp>

#include <set>

#include "policy_input.h"

namespace sandgate::config::detail {
namespace {

const std::vector<std::string_view> docker_keys = {"policy",      "allow_hosts",  "block_hosts", "allow_cidrs",
                                                   "block_cidrs", "bypass_hosts", "bypass_cidrs"};

YAML::Mark mark_at(std::string_view text, std::size_t offset) {
  YAML::Mark m;
  m.pos = static_cast<int>(offset);
  m.line = 0;
  m.column = 0;
  for (std::size_t i = 0; i < offset && i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++m.line;
      m.column = 0;
    } else {
      ++m.column;
    }
  }
  return m;
}

}  // namespace

void read_docker_json(std::string_view text, const YAML::Node& root, Reporter& r, std::vector<PolicyInput>& out) {
  boost::json::stream_parser parser;
  boost::system::error_code ec;
  const std::size_t used = parser.write_some(text.data(), text.size(), ec);
  if (!ec) parser.finish(ec);
  if (ec) {
    r.error(mark_at(text, used), "not valid JSON: " + ec.message());
    return;
  }
  if (!root.IsMap()) {
    r.error(root.Mark(), "expected a JSON object such as {\"policy\": \"deny\", \"allow_hosts\": [\"example.com\"]}");
    return;
  }
  PolicyInput p;
  p.where = {r.file(), 1, 1};
  std::set<std::string> seen;
  for (const auto& kv : root) {
    const auto& k = kv.first;
    const auto& v = kv.second;
    const std::string key = k.Scalar();
    if (!seen.insert(key).second) {
      r.error(k.Mark(), key + ": duplicate key; each key may appear once");
      continue;
    }
    if (key == "policy") {
      if (v.IsScalar() && v.Scalar() == "allow") p.mode = policy::Mode::allow;
      else if (v.IsScalar() && v.Scalar() == "deny") p.mode = policy::Mode::deny;
      else r.error(v.Mark(), "policy: must be \"allow\" or \"deny\"");
    } else if (key == "allow_hosts") {
      parse_rule_list(v, key, policy::Action::allow, false, r, p.rules);
    } else if (key == "block_hosts") {
      parse_rule_list(v, key, policy::Action::deny, false, r, p.rules);
    } else if (key == "allow_cidrs") {
      parse_rule_list(v, key, policy::Action::allow, true, r, p.rules);
    } else if (key == "block_cidrs") {
      parse_rule_list(v, key, policy::Action::deny, true, r, p.rules);
    } else if (key == "bypass_hosts" || key == "bypass_cidrs") {
      // Check the entries, then explain why they change nothing here.
      std::vector<RuleInput> ignored;
      parse_rule_list(v, key, policy::Action::allow, key == "bypass_cidrs", r, ignored);
      if (v.IsSequence() && v.size() > 0)
        r.warning(k.Mark(), key +
                                ": ignored. Docker uses it to skip TLS interception; sandgate never decrypts "
                                "traffic, so nothing is intercepted to bypass, and a bypass entry grants no access. "
                                "List the destination in " +
                                (key == "bypass_hosts" ? "allow_hosts" : "allow_cidrs") + " to allow it");
    } else {
      std::string msg = "unknown key '" + key + "' in proxy-config.json";
      if (auto s = suggest_key(key, docker_keys); !s.empty()) msg += "; did you mean '" + s + "'?";
      r.error(k.Mark(), msg);
    }
  }
  if (!p.mode) r.error(root.Mark(), "missing \"policy\"; set \"policy\": \"deny\" (block what no rule allows) or \"allow\"");
  out.push_back(std::move(p));
}

}  // namespace sandgate::config::detail
