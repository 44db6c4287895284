// Test helpers: child processes with a line-readable stdout, raw loopback
// HTTP exchanges, and shell commands (curl, python) with their output.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace sandgate::testing {

// A child process. Its stdout is a pipe read line by line; the destructor
// sends SIGTERM, then SIGKILL if it has not exited within two seconds.
class Process {
 public:
  explicit Process(const std::vector<std::string>& argv) {
    int out[2];
    if (::pipe2(out, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(out[1], 1);
      std::vector<char*> args;
      for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      ::execvp(args[0], args.data());
      ::_exit(127);
    }
    ::close(out[1]);
    out_ = out[0];
  }
  ~Process() {
    if (pid_ > 0 && !exited_) {
      ::kill(pid_, SIGTERM);
      if (wait_exit(std::chrono::seconds(2)) < 0) {
        ::kill(pid_, SIGKILL);
        wait_exit(std::chrono::seconds(5));
      }
    }
    if (out_ >= 0) ::close(out_);
  }
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  // The next line of stdout, waiting at most `limit`; "" on EOF or timeout.
  std::string read_line(std::chrono::milliseconds limit = std::chrono::seconds(10)) {
    const auto end = std::chrono::steady_clock::now() + limit;
    for (;;) {
      if (auto nl = buffered_.find('\n'); nl != std::string::npos) {
        std::string line = buffered_.substr(0, nl);
        buffered_.erase(0, nl + 1);
        return line;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
      pollfd p{out_, POLLIN, 0};
      if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) return "";
      char buf[4096];
      const ssize_t n = ::read(out_, buf, sizeof buf);
      if (n <= 0) return "";
      buffered_.append(buf, static_cast<std::size_t>(n));
    }
  }

  int pid() const { return pid_; }

  void signal(int sig) {
    if (!exited_) ::kill(pid_, sig);
  }

  // Waits for exit; returns the exit status, or -1 on timeout.
  int wait_exit(std::chrono::milliseconds limit) {
    if (exited_) return status_;
    const auto end = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < end) {
      int st = 0;
      if (::waitpid(pid_, &st, WNOHANG) == pid_) {
        exited_ = true;
        status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        return status_;
      }
      ::usleep(10'000);
    }
    return -1;
  }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
  bool exited_ = false;
  int status_ = -1;
  std::string buffered_;
};

// A TCP connection to host:port (IPv4 or IPv6 literal); the socket, or -1.
inline int connect_tcp(const std::string& host, int port) {
  const bool v6 = host.find(':') != std::string::npos;
  const int fd = ::socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_storage ss{};
  socklen_t len;
  if (v6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(static_cast<std::uint16_t>(port));
    ::inet_pton(AF_INET6, host.c_str(), &a->sin6_addr);
    len = sizeof *a;
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_port = htons(static_cast<std::uint16_t>(port));
    ::inet_pton(AF_INET, host.c_str(), &a->sin_addr);
    len = sizeof *a;
  }
  if (::connect(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Everything received on fd until the peer closes or `limit` passes without
// data; closes fd.
inline std::string read_until_close(int fd, std::chrono::milliseconds limit = std::chrono::seconds(5)) {
  std::string out;
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(limit.count())) <= 0) break;
    char buf[65536];
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return out;
}

// Sends `request` to host:port over TCP and returns everything received
// until the peer closes or `limit` passes without data.
inline std::string exchange(const std::string& host, int port, const std::string& request,
                            std::chrono::milliseconds limit = std::chrono::seconds(5)) {
  const int fd = connect_tcp(host, port);
  if (fd < 0) return "connect failed";
  if (!request.empty()) ::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  return read_until_close(fd, limit);
}

struct Run {
  int status;
  std::string out;
};

// Runs a shell command; stdout and stderr together.
inline Run shell(const std::string& cmd) {
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  std::string out;
  std::array<char, 4096> buf;
  while (std::size_t n = std::fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  const int st = ::pclose(p);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

// Lowers the soft open-files limit of process `pid` so that exactly `left`
// descriptor numbers below it are free; returns the soft limit it had, for
// restore_descriptors ("" if prlimit failed).
inline std::string leave_descriptors(int pid, int left) {
  const auto p = std::to_string(pid);
  std::set<int> used;
  for (const auto& e : std::filesystem::directory_iterator("/proc/" + p + "/fd"))
    used.insert(std::stoi(e.path().filename()));
  int limit = 0;
  for (int n = 0, free = 0;; ++n)
    if (!used.contains(n) && free++ == left) {
      limit = n;
      break;
    }
  const auto soft =
      std::to_string(std::stoll(shell("prlimit --pid " + p + " --nofile --output SOFT --noheadings").out));
  return shell("prlimit --pid " + p + " --nofile=" + std::to_string(limit) + ":").status == 0 ? soft : "";
}
inline bool restore_descriptors(int pid, const std::string& soft) {
  return shell("prlimit --pid " + std::to_string(pid) + " --nofile=" + soft + ":").status == 0;
}

// CPU time process `pid` has used, in clock ticks (user and system).
inline long cpu_ticks(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::istringstream fields(stat.substr(stat.rfind(')') + 2));  // after "pid (comm) "
  std::string f;
  long ticks = 0;
  for (int i = 3; fields >> f && i <= 15; ++i)
    if (i >= 14) ticks += std::stol(f);  // utime, stime
  return ticks;
}

}  // namespace sandgate::testing
