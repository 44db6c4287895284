// Where sandgate keeps its state by default: $SANDGATE_HOME, else ~/.sandgate.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>

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
// A file sandgate ships: $ENV when set; else, for an installed sandgate
// (PREFIX/bin/sandgate), PREFIX/RELATIVE when it exists; else the path in
// the build tree it was compiled with.
inline std::string shipped_file(const char* env, std::string_view relative, std::string_view build_path) {
  if (const char* v = std::getenv(env); v && *v) return v;
  std::error_code ec;
  const auto prefix = std::filesystem::read_symlink("/proc/self/exe", ec).parent_path().parent_path();
  if (!ec) {
    const auto installed = prefix / relative;
    if (std::filesystem::exists(installed, ec)) return installed.string();
  }
  return std::string(build_path);
}
inline std::string agent_path() {
  return shipped_file("SANDGATE_AGENT", "libexec/sandgate/sandgate-agent", SANDGATE_AGENT);
}
inline std::string image_script_path() {
  return shipped_file("SANDGATE_IMAGE_SCRIPT", "share/sandgate/guest/build-image.sh", SANDGATE_IMAGE_SCRIPT);
}
// The policy sandgate ships, for a sandbox when the operator has none.
inline std::string shipped_policy_path() {
  return shipped_file("SANDGATE_DEFAULT_POLICY", "share/sandgate/default-policy.yaml", SANDGATE_DEFAULT_POLICY);
}
// The policy new sandboxes start from, when it exists ('network proxy --default' edits it).
inline std::string default_policy_path() { return sandgate_home() + "/policy.yaml"; }

}  // namespace sandgate::cli
