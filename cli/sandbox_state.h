// What a running sandbox leaves in its folder ($SANDGATE_HOME/sandboxes/NAME)
// for ls, exec, stop and rm: state.json, the lock its supervisor holds for
// its whole life, and its sockets.
#pragma once

#include <sys/file.h>
#include <fcntl.h>
#include <unistd.h>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <filesystem>
#include <fstream>
#include <cerrno>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "paths.h"

namespace sandgate::cli {

// Written by a detached supervisor to its parent's pipe once the guest is ready.
inline constexpr std::string_view ready_marker = "\x01sandgate-ready\n";

inline std::filesystem::path sandboxes_dir() { return std::filesystem::path(sandgate_home()) / "sandboxes"; }

struct SandboxState {
  std::string name, workspace, accel, policy, mode, started;
  std::string share;  // virtiofs, or 9p (the fallback)
  std::string image;  // the guest image's folder
  std::string qemu_user;   // the uid QEMU runs as (one of its own when run by root)
  std::string qemu_group;  // and its group (sandgate-vm, nogroup, or the caller's gid)
  std::string proxy_user;  // the uid the network process runs as (sandbox_proxy.h), in QEMU's group
  long pid = 0, qemu_pid = 0, virtiofsd_pid = 0, proxy_pid = 0;
  bool detached = false, workspace_readonly = false;
  long long ready_ms = 0;
  std::size_t hidden_paths = 0;  // --exclude matches
};

inline void write_state(const std::filesystem::path& dir, const SandboxState& s) {
  boost::json::object o;
  o["name"] = s.name;
  o["workspace"] = s.workspace;
  o["pid"] = s.pid;
  o["qemu_pid"] = s.qemu_pid;
  o["virtiofsd_pid"] = s.virtiofsd_pid;
  o["proxy_pid"] = s.proxy_pid;
  o["proxy_user"] = s.proxy_user;
  o["accel"] = s.accel;
  o["policy"] = s.policy;
  o["mode"] = s.mode;
  o["detached"] = s.detached;
  o["workspace_readonly"] = s.workspace_readonly;
  o["share"] = s.share;
  o["image"] = s.image;
  o["qemu_user"] = s.qemu_user;
  o["qemu_group"] = s.qemu_group;
  o["hidden_paths"] = s.hidden_paths;
  o["ready_ms"] = s.ready_ms;
  o["started"] = static_cast<std::int64_t>(std::time(nullptr));
  // Replace atomically: a reader never sees half a file.
  std::ofstream(dir / "state.json.tmp") << boost::json::serialize(o) << "\n";
  std::filesystem::rename(dir / "state.json.tmp", dir / "state.json");
}

inline std::optional<boost::json::object> read_state(const std::filesystem::path& dir) {
  std::ifstream in(dir / "state.json");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  boost::system::error_code ec;
  auto v = boost::json::parse(text, ec);
  if (ec || !v.is_object()) return std::nullopt;
  return v.as_object();
}

// All a child says on pipe `fd` until it closes its end; closes `fd`.
inline std::string read_until_closed(int fd) {
  std::string said;
  char buf[4096];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR);)
    if (n > 0) said.append(buf, static_cast<std::size_t>(n));
  ::close(fd);
  return said;
}

// True while the sandbox's supervisor (or foreground run) is alive: it holds
// the lock for its whole life, and the kernel drops it when the process dies.
inline bool lock_held(const std::filesystem::path& dir) {
  const int fd = ::open((dir / "lock").c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const bool held = ::flock(fd, LOCK_SH | LOCK_NB) != 0;
  ::close(fd);
  return held;
}

// True when pid is alive and runs `exe` (a recycled pid runs something else).
inline bool process_runs(long pid, std::string_view exe) {
  if (pid <= 0) return false;
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline");
  std::string first;
  std::getline(in, first, '\0');
  return first.find(exe) != std::string::npos;
}

// The environment every command in a sandbox starts with: its proxy (all
// HTTP clients there go through it; nothing else has a route), PATH, HOME.
inline std::vector<std::string> sandbox_env(const std::string& name) {
  const std::string proxy = "http://10.0.2.100:3128";
  std::vector<std::string> env = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                                  "HOME=/root",
                                  "http_proxy=" + proxy,
                                  "https_proxy=" + proxy,
                                  "HTTP_PROXY=" + proxy,
                                  "HTTPS_PROXY=" + proxy,
                                  "no_proxy=",
                                  "NO_PROXY=",
                                  "SANDGATE_SANDBOX=" + name,
                                  // The workspace belongs to the host user; git in the guest trusts it.
                                  "GIT_CONFIG_COUNT=1",
                                  "GIT_CONFIG_KEY_0=safe.directory",
                                  "GIT_CONFIG_VALUE_0=*"};
  if (const char* term = std::getenv("TERM")) env.push_back(std::string("TERM=") + term);
  // `sandgate env set` values and the host's git identity saved at run.
  std::ifstream saved(sandboxes_dir() / name / "env");
  for (std::string line; std::getline(saved, line);)
    if (line.find('=') != std::string::npos) env.push_back(line);
  return env;
}

// The host user's git identity as GIT_AUTHOR_* and GIT_COMMITTER_* variables,
// so commits made in the sandbox carry it.
inline std::vector<std::string> host_git_identity() {
  std::vector<std::string> out;
  for (const auto& [key, vars] : {std::pair{"user.name", std::pair{"GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME"}},
                                  std::pair{"user.email", std::pair{"GIT_AUTHOR_EMAIL", "GIT_COMMITTER_EMAIL"}}}) {
    FILE* p = ::popen((std::string("git config --get ") + key + " 2>/dev/null").c_str(), "r");
    if (!p) continue;
    char buf[512] = {};
    std::string value = std::fgets(buf, sizeof buf, p) ? buf : "";
    ::pclose(p);
    while (!value.empty() && (value.back() == '\n' || value.back() == '\r')) value.pop_back();
    if (value.empty()) continue;
    out.push_back(std::string(vars.first) + "=" + value);
    out.push_back(std::string(vars.second) + "=" + value);
  }
  return out;
}

}  // namespace sandgate::cli
