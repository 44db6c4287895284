// Helpers for policy tests: build a policy from short rule strings.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "sandgate/policy/policy.h"

namespace sandgate::policy::testing {

// Rules as "allow PATTERN", "deny PATTERN", "allow-cidr CIDR", "deny-cidr CIDR".
inline std::shared_ptr<const Policy> make_policy(Mode mode, const std::vector<std::string>& rules,
                                                 bool report = false) {
  PolicyBuilder b(mode, report);
  std::uint32_t line = 1;
  for (const auto& r : rules) {
    const auto space = r.find(' ');
    const std::string verb = r.substr(0, space);
    const std::string pattern = r.substr(space + 1);
    const Action action = verb.starts_with("allow") ? Action::allow : Action::deny;
    RuleSource src{"test.yaml", line++, 5};
    if (verb.ends_with("-cidr")) {
      auto c = parse_cidr_pattern(pattern);
      EXPECT_TRUE(c) << pattern;
      b.add_cidr_rule(action, c->cidr, pattern, "", src);
    } else {
      auto h = parse_host_pattern(pattern);
      EXPECT_TRUE(h) << pattern << ": " << (h ? "" : h.error().message);
      b.add_host_rule(action, *h, pattern, "", src);
    }
  }
  auto p = std::move(b).build();
  EXPECT_TRUE(p);
  return *p;
}

inline Target target(const std::string& authority) {
  auto t = parse_target(authority, 443);
  EXPECT_TRUE(t) << authority;
  return *t;
}

inline Address addr(const std::string& text) {
  auto t = normalize_host(text);
  EXPECT_TRUE(t && t->address) << text;
  return *t->address;
}

// The text of the deciding rule, or "default".
inline std::string rule_text(const Policy& p, const Decision& d) {
  const auto* r = p.rule(d.rule);
  return r ? r->text : "default";
}

}  // namespace sandgate::policy::testing
