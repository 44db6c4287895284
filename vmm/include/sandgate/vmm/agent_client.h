// The host side of the exec channel: connects to the agent's virtio-serial
// socket, waits until the guest answers, runs commands and streams their
// output. One client per connection; blocking, for the CLI.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <boost/system/result.hpp>

namespace sandgate::vmm {

struct ExecRequest {
  std::vector<std::string> argv;
  std::vector<std::string> env;  // "KEY=VALUE"
  std::string cwd = "/";
  // Run on a pseudo-terminal: the caller's terminal (in_fd) goes raw for the
  // command's life, its size follows SIGWINCH, and stderr joins stdout.
  bool tty = false;
};

class AgentClient {
 public:
  // Connects to `socket` and pings until the agent answers, for at most
  // `timeout` (the guest may still be booting). Fails saying which step timed out.
  static boost::system::result<std::unique_ptr<AgentClient>, std::string> connect(
      const std::string& socket, std::chrono::milliseconds timeout);
  ~AgentClient();

  // Runs a command: copies `in_fd` to its stdin (-1: none), its stdout and
  // stderr to out_fd and err_fd. Returns its exit status (128 + signal when
  // killed), or an error when it could not start or the channel broke.
  // forward_signals: SIGINT/SIGTERM/SIGHUP received meanwhile go to the command.
  boost::system::result<int, std::string> exec(const ExecRequest& request, int in_fd, int out_fd, int err_fd);

  // Sets the guest clock to the host's.
  void set_time();
  // Asks the guest to sync and power off (no answer).
  void poweroff();
  // Asks a sandbox supervisor (connected through its control socket) to stop the sandbox.
  void stop_sandbox();
  // The channel's socket, for a relay that takes it over (the supervisor).
  int fd() const noexcept { return fd_; }

 private:
  explicit AgentClient(int fd) : fd_(fd) {}
  bool send(unsigned char type, std::uint32_t session, std::string_view payload);
  int fd_;
  std::uint32_t next_session_ = 1;
};

}  // namespace sandgate::vmm
