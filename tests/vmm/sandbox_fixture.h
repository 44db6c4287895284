// The fixture of the tests that boot sandboxes: the real `sandgate` binary
// with a home of the test process's own, and one guest image cache for all
// (SANDGATE_IMAGES, built once by the first run).
#pragma once

#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "../proxy/process.h"

namespace sandgate {

namespace fs = std::filesystem;
using testing::shell;

class SandboxTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // A home of this process's own (tests may run in parallel), and one image
    // cache for all of them in the build tree.
    home_ = fs::temp_directory_path() / ("sandgate-home-" + std::to_string(::getpid()));
    fs::create_directories(home_);
    // Closed to other users, as root's default ~/.sandgate under /root is:
    // QEMU, run as another user, must not need a way in.
    fs::permissions(home_, fs::perms::owner_all);
    ::setenv("SANDGATE_IMAGES", SANDGATE_TEST_IMAGES, 0);  // deploy/test.sh shares one cache between builds
    ws_ = fs::temp_directory_path() / ("sandgate-ws-" + std::to_string(::getpid()));
    fs::create_directories(ws_);
  }
  static void TearDownTestSuite() {
    remove_sandboxes();
    fs::remove_all(ws_);
    fs::remove_all(home_);
  }
  // Each test starts with no sandbox state (images stay cached).
  void SetUp() override { remove_sandboxes(); }

  // Every sandbox of this home, stopped and removed: one a failed assertion
  // left running would otherwise outlive its folder (QEMU and virtiofsd
  // included) and load the machine for every later test.
  static void remove_sandboxes() {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(home_ / "sandboxes", ec))
      shell("SANDGATE_HOME='" + home_.string() + "' " + std::string(SANDGATE_BIN) + " rm -f '" +
            e.path().filename().string() + "' >/dev/null 2>&1");
    fs::remove_all(home_ / "sandboxes");
  }

  // `sandgate run` with this suite's home; stdout and stderr to files.
  struct Result {
    int status;
    std::string out, err;
  };
  Result run(const std::string& args) {
    const auto out = ws_ / "stdout", err = ws_ / "stderr";
    const auto r = shell("(SANDGATE_HOME='" + home_.string() + "' " + std::string(SANDGATE_BIN) + " run " + args +
                         " >" + out.string() + " 2>" + err.string() + ")");
    auto read = [](const fs::path& p) {
      std::ifstream f(p);
      return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    };
    return {r.status, read(out), read(err)};
  }
  fs::path sandbox_log(const std::string& name) const {
    return home_ / "sandboxes" / name / "log" / "network.jsonl";
  }

  static inline fs::path home_, ws_;
};

// `sandgate <args>` with this suite's home.
inline testing::Run cli(const std::string& home, const std::string& args) {
  return shell("SANDGATE_HOME='" + home + "' " + std::string(SANDGATE_BIN) + " " + args);
}

inline std::string read_file(const fs::path& p) {
  std::ifstream f(p);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

inline bool pid_alive(long pid) { return pid > 0 && ::kill(static_cast<pid_t>(pid), 0) == 0; }

// What a process sees of the others: the processes its /proc lists.
inline std::set<long> processes_seen_by(long pid) {
  std::set<long> seen;
  for (const auto& e : fs::directory_iterator("/proc/" + std::to_string(pid) + "/root/proc")) {
    const auto name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") == std::string::npos) seen.insert(std::stol(name));
  }
  return seen;
}

// Its pid in each PID namespace it is in, the host's first (NSpid).
inline std::vector<long> namespace_pids(long pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::vector<long> pids;
  for (std::string line; std::getline(status, line);) {
    if (!line.starts_with("NSpid:")) continue;
    std::istringstream fields(line.substr(6));
    for (long p; fields >> p;) pids.push_back(p);
  }
  return pids;
}

}  // namespace sandgate
