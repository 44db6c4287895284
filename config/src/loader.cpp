#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>

#include "policy_input.h"

namespace sandgate::config {
namespace detail {
namespace {

bool is_valid_sandbox_name(std::string_view n) {
  if (n.empty() || n.size() > 64) return false;
  auto ok = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.'; };
  return std::all_of(n.begin(), n.end(), ok) && n.front() != '-' && n.front() != '.';
}

std::optional<bool> read_bool(const YAML::Node& n) {
  if (!n.IsScalar()) return std::nullopt;
  if (n.Scalar() == "true") return true;
  if (n.Scalar() == "false") return false;
  return std::nullopt;
}

std::optional<policy::Mode> read_mode(const YAML::Node& n) {
  if (!n.IsScalar()) return std::nullopt;
  if (n.Scalar() == "allow") return policy::Mode::allow;
  if (n.Scalar() == "deny") return policy::Mode::deny;
  return std::nullopt;
}

const std::vector<std::string_view> body_keys = {"inherit", "mode", "report", "allow_hosts", "block_hosts",
                                                 "allow_cidrs", "block_cidrs"};
const std::vector<std::string_view> top_keys = {"version",     "mode",        "report",      "allow_hosts",
                                                "block_hosts", "allow_cidrs", "block_cidrs", "sandboxes"};

void unknown_key(Reporter& r, const YAML::Node& key, std::string_view where,
                 const std::vector<std::string_view>& known) {
  std::string msg = "unknown key '" + key.Scalar() + "' " + std::string(where);
  if (auto s = suggest_key(key.Scalar(), known); !s.empty()) msg += "; did you mean '" + s + "'?";
  else msg += ".";
  msg += " Known keys:";
  for (auto k : known) msg += " " + std::string(k);
  r.error(key.Mark(), msg);
}

// Reads the keys a policy body may have; returns false for a key it does not know.
bool read_body_key(const std::string& key, const YAML::Node& k, const YAML::Node& v, const std::string& prefix,
                   Reporter& r, PolicyInput& p, const LoadOptions& options) {
  if (key == "mode") {
    p.mode = read_mode(v);
    if (!p.mode) r.error(v.Mark(), prefix + "mode: must be 'allow' (allow what no rule blocks) or 'deny' (block what no rule allows)");
  } else if (key == "report") {
    p.report = read_bool(v);
    if (!p.report) r.error(v.Mark(), prefix + "report: must be true or false");
    else if (*p.report && options.forbid_report)
      r.error(v.Mark(), prefix + "report: report mode is forbidden on this host (--forbid-report); remove 'report: true' to enforce the policy");
  } else if (key == "allow_hosts") {
    parse_rule_list(v, prefix + key, policy::Action::allow, false, r, p.rules);
  } else if (key == "block_hosts") {
    parse_rule_list(v, prefix + key, policy::Action::deny, false, r, p.rules);
  } else if (key == "allow_cidrs") {
    parse_rule_list(v, prefix + key, policy::Action::allow, true, r, p.rules);
  } else if (key == "block_cidrs") {
    parse_rule_list(v, prefix + key, policy::Action::deny, true, r, p.rules);
  } else {
    return false;
  }
  (void)k;
  return true;
}

void read_sandbox(const std::string& name, const YAML::Node& key, const YAML::Node& body, Reporter& r,
                  std::vector<PolicyInput>& out, const LoadOptions& options) {
  PolicyInput p;
  p.name = name;
  p.where = r.source(key.Mark());
  const std::string prefix = "sandboxes." + name + ".";
  if (!body.IsMap() && !body.IsNull()) {
    r.error(body.Mark(), "sandboxes." + name + ": expected a map of policy keys (mode, allow_hosts, ...)");
    return;
  }
  std::set<std::string> seen;
  if (body.IsMap()) {
    for (const auto& kv : body) {
      const auto& k = kv.first;
      const std::string kname = k.IsScalar() ? k.Scalar() : "";
      if (!seen.insert(kname).second) {
        r.error(k.Mark(), prefix + kname + ": duplicate key; each key may appear once");
        continue;
      }
      if (kname == "inherit") {
        auto b = read_bool(kv.second);
        if (!b) r.error(kv.second.Mark(), prefix + "inherit: must be true or false");
        else p.inherit = *b;
      } else if (!read_body_key(kname, k, kv.second, prefix, r, p, options)) {
        unknown_key(r, k, "in sandboxes." + name, body_keys);
      }
    }
  }
  out.push_back(std::move(p));
}

}  // namespace

void parse_rule_list(const YAML::Node& list, const std::string& list_name, policy::Action action, bool is_cidr,
                     Reporter& r, std::vector<RuleInput>& out) {
  if (list.IsNull()) return;
  if (!list.IsSequence()) {
    r.error(list.Mark(), list_name + ": expected a list, as\n  " + list_name + ":\n    - " +
                             (is_cidr ? "10.0.0.0/8" : "\"*.example.com\""));
    return;
  }
  const char* field = is_cidr ? "cidr" : "host";
  for (std::size_t i = 0; i < list.size(); ++i) {
    const YAML::Node& e = list[i];
    const std::string at = list_name + "[" + std::to_string(i) + "]";
    RuleInput in;
    in.action = action;
    in.is_cidr = is_cidr;
    in.list = list_name;
    YAML::Node pattern;
    bool found = false;
    if (e.IsScalar()) {
      pattern = e;
      found = true;
    } else if (e.IsMap()) {
      for (const auto& kv : e) {
        const std::string k = kv.first.Scalar();
        if (k == field) {
          pattern = kv.second;
          found = true;
        } else if (k == "comment") {
          if (!kv.second.IsScalar()) r.error(kv.second.Mark(), at + ".comment: expected text");
          else in.comment = kv.second.Scalar();
        } else {
          unknown_key(r, kv.first, "in " + at, {field, "comment"});
        }
      }
      if (!found) {
        r.error(e.Mark(), at + ": missing '" + field + "'; write {" + field + ": PATTERN, comment: TEXT}");
        continue;
      }
      if (!pattern.IsScalar()) {
        r.error(pattern.Mark(), at + "." + field + ": expected a string");
        continue;
      }
    } else {
      r.error(e.Mark(), at + ": expected a pattern string or {" + field + ": PATTERN, comment: TEXT}");
      continue;
    }
    in.text = pattern.Scalar();
    in.source = r.source(pattern.Mark());
    if (is_cidr) {
      auto c = policy::parse_cidr_pattern(in.text);
      if (!c) {
        r.error(pattern.Mark(), at + ": " + c.error().message);
        continue;
      }
      in.cidr = *c;
    } else {
      auto h = policy::parse_host_pattern(in.text);
      if (!h) {
        r.error(pattern.Mark(), at + ": " + h.error().message);
        continue;
      }
      in.host = std::move(*h);
    }
    out.push_back(std::move(in));
  }
}

void read_yaml(const YAML::Node& root, Reporter& r, std::vector<PolicyInput>& out, const LoadOptions& options) {
  if (!root.IsMap()) {
    r.error(root.Mark(), "expected a map at the top level, starting with 'version: 1'");
    return;
  }
  PolicyInput def;
  def.where = {r.file(), 1, 1};
  bool have_version = false;
  std::set<std::string> seen;
  std::vector<std::pair<YAML::Node, YAML::Node>> sandboxes;
  for (const auto& kv : root) {
    const auto& k = kv.first;
    const std::string key = k.IsScalar() ? k.Scalar() : "";
    if (!seen.insert(key).second) {
      r.error(k.Mark(), key + ": duplicate key; each key may appear once");
      continue;
    }
    if (key == "version") {
      have_version = true;
      if (!kv.second.IsScalar() || kv.second.Scalar() != "1")
        r.error(kv.second.Mark(), "version: this sandgate reads version 1; write 'version: 1'");
    } else if (key == "sandboxes") {
      const auto& s = kv.second;
      if (s.IsNull()) continue;
      if (!s.IsMap()) {
        r.error(s.Mark(), "sandboxes: expected a map from sandbox name to its policy");
        continue;
      }
      for (const auto& entry : s) sandboxes.emplace_back(entry.first, entry.second);
    } else if (!read_body_key(key, k, kv.second, "", r, def, options)) {
      unknown_key(r, k, "at the top level", top_keys);
    }
  }
  if (!have_version) r.error(root.Mark(), "missing 'version: 1' at the top level");
  if (!def.mode)
    r.error(root.Mark(),
            "missing 'mode'; write 'mode: deny' (block what no rule allows) or 'mode: allow' (allow what no rule blocks)");
  out.push_back(std::move(def));
  std::set<std::string> names;
  for (const auto& [k, body] : sandboxes) {
    const std::string name = k.IsScalar() ? k.Scalar() : "";
    if (!is_valid_sandbox_name(name)) {
      r.error(k.Mark(), "sandboxes: '" + name + "' is not a valid sandbox name (a-z, 0-9, '-', '_', '.'; up to 64)");
      continue;
    }
    if (!names.insert(name).second) {
      r.error(k.Mark(), "sandboxes." + name + ": duplicate sandbox name");
      continue;
    }
    read_sandbox(name, k, body, r, out, options);
  }
}

namespace {

std::string hint_for(const std::string& yaml_message) {
  // "*.example.com" unquoted is a YAML alias; say what to do.
  if (yaml_message.find("anchor") != std::string::npos || yaml_message.find("alias") != std::string::npos)
    return "; a pattern starting with '*' must be quoted in YAML, as - \"*.example.com\"";
  return "";
}

}  // namespace
}  // namespace detail

boost::system::result<std::string> read_whole_file(const std::string& path) {
  const auto failed = [] { return boost::system::error_code(errno, boost::system::system_category()); };
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return failed();
  std::string text;
  char buf[16384];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const auto e = failed();
      ::close(fd);
      return e;
    }
    if (n == 0) break;
    text.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return text;
}

std::string sha256_hex(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr);
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < len; ++i) {
    out += hex[md[i] >> 4];
    out += hex[md[i] & 15];
  }
  return out;
}

Format format_for_path(std::string_view path) noexcept {
  return path.ends_with(".json") ? Format::docker_json : Format::yaml;
}

const std::shared_ptr<const policy::Policy>& PolicySet::for_sandbox(std::string_view name) const {
  if (auto it = named.find(name); it != named.end()) return it->second;
  return default_policy;
}

LoadResult load_policy_text(std::string_view text, const std::string& file_name, Format format,
                            const LoadOptions& options) {
  detail::Reporter r(file_name);
  std::vector<detail::PolicyInput> inputs;
  YAML::Node root;
  try {
    root = YAML::Load(std::string(text));
  } catch (const YAML::ParserException& e) {
    // Docker JSON gets its syntax errors from Boost.JSON below.
    if (format == Format::yaml) {
      r.error(e.mark, e.msg + detail::hint_for(e.msg));
      return r.take();
    }
  }
  if (format == Format::yaml) detail::read_yaml(root, r, inputs, options);
  else detail::read_docker_json(text, root, r, inputs);
  if (r.has_errors()) return r.take();

  PolicySet set;
  set.file = file_name;
  set.sha256 = sha256_hex(text);
  const detail::PolicyInput& def = inputs.front();
  for (const auto& in : inputs) {
    const policy::Mode mode = in.mode.value_or(def.mode.value_or(policy::Mode::deny));
    const bool report = in.report.value_or(def.report.value_or(false));
    detail::PolicyInput all;
    all.name = in.name;
    if (!in.name.empty() && in.inherit) all.rules = def.rules;
    all.rules.insert(all.rules.end(), in.rules.begin(), in.rules.end());
    detail::lint(all, mode, r);
    policy::PolicyBuilder b(mode, report);
    for (const auto& rule : all.rules) {
      if (rule.is_cidr) b.add_cidr_rule(rule.action, rule.cidr.cidr, rule.text, rule.comment, rule.source);
      else b.add_host_rule(rule.action, rule.host, rule.text, rule.comment, rule.source);
    }
    auto p = std::move(b).build();
    if (!p) {
      r.add(Severity::error, in.where, p.error().message);
      continue;
    }
    if (in.name.empty()) set.default_policy = std::move(*p);
    else set.named.emplace(in.name, std::move(*p));
  }
  if (r.has_errors()) return r.take();
  set.warnings = r.take();
  return set;
}

LoadResult load_policy_file(const std::string& path, const LoadOptions& options) {
  auto text = read_whole_file(path);
  if (!text) return Diagnostics{{Severity::error, path, 0, 0, "cannot read the policy file: " + text.error().message()}};
  return load_policy_text(*text, path, format_for_path(path), options);
}

}  // namespace sandgate::config
