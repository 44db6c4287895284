// Where sandgate keeps its state by default: $SANDGATE_HOME, else ~/.sandgate.
#pragma once

#include <cstdlib>
#include <string>

namespace sandgate::cli {

inline std::string sandgate_home() {
  if (const char* h = std::getenv("SANDGATE_HOME"); h && *h) return h;
  const char* home = std::getenv("HOME");
  return std::string(home && *home ? home : ".") + "/.sandgate";
}
// The network log of the local proxy and sandboxes.
inline std::string default_log_path() { return sandgate_home() + "/log/network.jsonl"; }
// The log's HMAC key: outside the log folder, so whoever rotates or ships
// the log does not need it.
inline std::string default_key_path() { return sandgate_home() + "/keys/log.key"; }
// The policy new sandboxes start from, when it exists ('network proxy --default' edits it).
inline std::string default_policy_path() { return sandgate_home() + "/policy.yaml"; }

}  // namespace sandgate::cli
