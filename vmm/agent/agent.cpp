// sandgate-agent: the guest side of the exec channel. PID 1's last step in
// the guest's init; statically linked; talks to the host over the
// virtio-serial port named "agent0" (see agent_protocol.h).
//
// One poll loop: the port, every running command's stdout and stderr pipes,
// and a signalfd for SIGCHLD. A command's exit frame is sent only after its
// output pipes reach EOF, so no output is lost behind it. A second thread
// carries the guest's connections to its proxy (serve_network, port "net0").
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/json/parse.hpp>
#include <boost/json/src.hpp>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "sandgate/vmm/agent_protocol.h"
#include "sandgate/vmm/stream_mux.h"

namespace {

using sandgate::vmm::FrameType;

struct Session {
  pid_t pid = -1;
  int in = -1, out = -1, err = -1;  // our ends of the child's stdin, stdout, stderr (tty: the master twice, no err)
  bool tty = false;
  bool exited = false;
  int status = 0;
};

// Finds /dev/vportNpM for the port named `name` (no udev in the guest).
std::string find_port(const std::string& name) {
  DIR* d = ::opendir("/sys/class/virtio-ports");
  if (!d) return {};
  std::string found;
  while (auto* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream f(std::string("/sys/class/virtio-ports/") + e->d_name + "/name");
    std::string n;
    if (f >> n && n == name) found = std::string("/dev/") + e->d_name;
  }
  ::closedir(d);
  return found;
}

class Agent {
 public:
  int run() {
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigprocmask(SIG_BLOCK, &mask, nullptr);
    // Invariant: sigfd_ lives as long as the agent; children unblock SIGCHLD after fork.
    sigfd_ = ::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    // QMP system_powerdown presses the ACPI power button: power off cleanly.
    // Invariant: button_ stays open for the agent's life (or -1 without the device).
    button_ = open_power_button();
    for (;;) {
      if (port_ < 0 && !open_port()) {
        reap();
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        continue;
      }
      loop_once();
    }
  }

 private:
  bool open_port() {
    const auto path = find_port("agent0");
    if (path.empty()) return false;
    // Invariant: port_ is closed and reopened when the host side disconnects (read EOF).
    port_ = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    return port_ >= 0;
  }

  void send(FrameType t, std::uint32_t session, std::string_view payload) {
    if (port_ < 0) return;
    out_.clear();
    sandgate::vmm::encode_frame(out_, t, session, payload);
    std::size_t done = 0;
    while (done < out_.size()) {
      const ssize_t n = ::write(port_, out_.data() + done, out_.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return;  // host gone: the frame is lost with the connection
      done += static_cast<std::size_t>(n);
    }
  }

  void loop_once() {
    std::vector<pollfd> fds;
    std::vector<std::pair<std::uint32_t, int>> owners;  // (session, 1 = stdout, 2 = stderr)
    fds.push_back({port_, POLLIN, 0});
    fds.push_back({sigfd_, POLLIN, 0});
    fds.push_back({button_, POLLIN, 0});
    for (auto& [id, s] : sessions_) {
      if (s.out >= 0) {
        fds.push_back({s.out, POLLIN, 0});
        owners.emplace_back(id, 1);
      }
      if (s.err >= 0) {
        fds.push_back({s.err, POLLIN, 0});
        owners.emplace_back(id, 2);
      }
    }
    if (::poll(fds.data(), fds.size(), 1000) < 0) return;
    if (fds[1].revents) {
      signalfd_siginfo info;
      while (::read(sigfd_, &info, sizeof info) == sizeof info) {
      }
      reap();
    }
    if (button_ >= 0 && fds[2].revents) {
      ::sync();
      ::reboot(RB_POWER_OFF);
    }
    for (std::size_t i = 3; i < fds.size(); ++i) {
      if (!fds[i].revents) continue;
      auto& [id, which] = owners[i - 3];
      auto& s = sessions_[id];
      int& fd = which == 1 ? s.out : s.err;
      char buf[32 * 1024];
      const ssize_t n = ::read(fd, buf, sizeof buf);
      if (n > 0) {
        send(which == 1 ? FrameType::stdout_data : FrameType::stderr_data, id, {buf, static_cast<std::size_t>(n)});
      } else if (n == 0 || errno != EAGAIN) {
        ::close(fd);
        fd = -1;
      }
    }
    finish_sessions();
    if (fds[0].revents) read_port();
  }

  void read_port() {
    char buf[64 * 1024];
    const ssize_t n = ::read(port_, buf, sizeof buf);
    if (n <= 0) {
      // The host disconnected: wait for the next one. Commands keep running.
      ::close(port_);
      port_ = -1;
      decoder_ = {};
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      return;
    }
    decoder_.feed({buf, static_cast<std::size_t>(n)});
    while (auto f = decoder_.next()) handle(*f);
  }

  void handle(const sandgate::vmm::Frame& f) {
    switch (f.type) {
      case FrameType::ping:
        send(FrameType::pong, f.session, f.payload);
        break;
      case FrameType::exec:
        start(f.session, f.payload);
        break;
      case FrameType::stdin_data:
        if (auto it = sessions_.find(f.session); it != sessions_.end() && it->second.in >= 0) {
          std::size_t done = 0;
          while (done < f.payload.size()) {
            const ssize_t n = ::write(it->second.in, f.payload.data() + done, f.payload.size() - done);
            if (n <= 0 && errno != EINTR) break;
            if (n > 0) done += static_cast<std::size_t>(n);
          }
        }
        break;
      case FrameType::stdin_eof:
        if (auto it = sessions_.find(f.session); it != sessions_.end() && it->second.in >= 0) {
          ::close(it->second.in);
          it->second.in = -1;
        }
        break;
      case FrameType::resize:
        if (auto it = sessions_.find(f.session); it != sessions_.end() && it->second.tty && it->second.out >= 0) {
          winsize ws{};
          if (std::sscanf(f.payload.c_str(), "%hu %hu", &ws.ws_row, &ws.ws_col) == 2)
            ::ioctl(it->second.out, TIOCSWINSZ, &ws);
        }
        break;
      case FrameType::signal:
        if (auto it = sessions_.find(f.session); it != sessions_.end() && !it->second.exited)
          ::kill(-it->second.pid, std::atoi(f.payload.c_str()));
        break;
      case FrameType::set_time: {
        const long long us = std::atoll(f.payload.c_str());
        const timeval tv{static_cast<time_t>(us / 1'000'000), static_cast<suseconds_t>(us % 1'000'000)};
        ::settimeofday(&tv, nullptr);
        break;
      }
      case FrameType::poweroff:
        ::sync();
        ::reboot(RB_POWER_OFF);
        break;
      default:
        break;
    }
  }

  void start(std::uint32_t id, const std::string& payload) {
    boost::system::error_code ec;
    const auto v = boost::json::parse(payload, ec);
    if (ec || !v.is_object() || !v.as_object().contains("argv") || !v.at("argv").is_array() ||
        v.at("argv").as_array().empty()) {
      send(FrameType::error, id, "exec: a JSON object with a non-empty argv is needed");
      return;
    }
    std::vector<std::string> argv, env;
    for (const auto& a : v.at("argv").as_array())
      if (a.is_string()) argv.emplace_back(a.as_string());
    if (const auto* e = v.as_object().if_contains("env"); e && e->is_array())
      for (const auto& kv : e->as_array())
        if (kv.is_string()) env.emplace_back(kv.as_string());
    std::string cwd = "/";
    if (const auto* c = v.as_object().if_contains("cwd"); c && c->is_string()) cwd = std::string(c->as_string());

    const auto* tty = v.as_object().if_contains("tty");
    if (tty && tty->is_object()) {
      start_tty(id, argv, env, cwd, tty->as_object());
      return;
    }
    int in[2], out[2], err[2];
    if (::pipe2(in, O_CLOEXEC) || ::pipe2(out, O_CLOEXEC) || ::pipe2(err, O_CLOEXEC)) {
      send(FrameType::error, id, std::string("pipe: ") + std::strerror(errno));
      return;
    }
    const pid_t pid = ::fork();
    if (pid == 0) {
      become_session_leader();
      ::dup2(in[0], 0);
      ::dup2(out[1], 1);
      ::dup2(err[1], 2);
      exec_child(argv, env, cwd);
    }
    ::close(in[0]);
    ::close(out[1]);
    ::close(err[1]);
    if (pid < 0) {
      ::close(in[1]);
      ::close(out[0]);
      ::close(err[0]);
      send(FrameType::error, id, std::string("fork: ") + std::strerror(errno));
      return;
    }
    sessions_[id] = Session{pid, in[1], out[0], err[0]};
    send(FrameType::started, id, std::to_string(pid));
  }

  // A command on a pseudo-terminal: its session leader, the terminal its
  // controlling one, so job control, Ctrl-C and window size work as on a console.
  void start_tty(std::uint32_t id, std::vector<std::string>& argv, std::vector<std::string>& env,
                 const std::string& cwd, const boost::json::object& size) {
    // Invariant: master is owned by the session (closed in finish_sessions); the slave only by the child.
    const int master = ::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (master < 0 || ::grantpt(master) != 0 || ::unlockpt(master) != 0) {
      if (master >= 0) ::close(master);
      send(FrameType::error, id, std::string("no pseudo-terminal: ") + std::strerror(errno));
      return;
    }
    winsize ws{};
    if (const auto* r = size.if_contains("rows"); r && r->is_int64()) ws.ws_row = static_cast<unsigned short>(r->as_int64());
    if (const auto* c = size.if_contains("cols"); c && c->is_int64()) ws.ws_col = static_cast<unsigned short>(c->as_int64());
    ::ioctl(master, TIOCSWINSZ, &ws);
    const std::string slave_path = ::ptsname(master);
    const pid_t pid = ::fork();
    if (pid == 0) {
      become_session_leader();
      const int slave = ::open(slave_path.c_str(), O_RDWR);
      ::ioctl(slave, TIOCSCTTY, 0);
      ::dup2(slave, 0);
      ::dup2(slave, 1);
      ::dup2(slave, 2);
      if (slave > 2) ::close(slave);
      exec_child(argv, env, cwd);
    }
    if (pid < 0) {
      ::close(master);
      send(FrameType::error, id, std::string("fork: ") + std::strerror(errno));
      return;
    }
    Session s{pid, ::dup(master), master, -1};
    s.tty = true;
    sessions_[id] = s;
    send(FrameType::started, id, std::to_string(pid));
  }

  // In a forked child: the signals the agent blocks are the command's
  // again, and it leads its own session (its process group gets signals).
  static void become_session_leader() {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    ::setsid();
  }

  [[noreturn]] static void exec_child(std::vector<std::string>& argv, std::vector<std::string>& env,
                                      const std::string& cwd) {
    {
      if (::chdir(cwd.c_str()) != 0) {
        dprintf(2, "sandgate-agent: cannot enter %s: %s\n", cwd.c_str(), std::strerror(errno));
        ::_exit(126);
      }
      std::vector<char*> a, e;
      for (auto& s : argv) a.push_back(s.data());
      a.push_back(nullptr);
      for (auto& s : env) e.push_back(s.data());
      e.push_back(nullptr);
      for (const auto& kv : env)
        if (kv.starts_with("PATH=")) ::setenv("PATH", kv.c_str() + 5, 1);  // execvpe searches the caller's PATH
      ::execvpe(a[0], a.data(), e.data());
      dprintf(2, "sandgate-agent: cannot run %s: %s\n", a[0], std::strerror(errno));
      ::_exit(errno == ENOENT ? 127 : 126);
    }
  }

  void reap() {
    for (;;) {
      int st = 0;
      const pid_t pid = ::waitpid(-1, &st, WNOHANG);
      if (pid <= 0) break;
      for (auto& [id, s] : sessions_)
        if (s.pid == pid) {
          s.exited = true;
          s.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
    }
  }

  void finish_sessions() {
    for (auto it = sessions_.begin(); it != sessions_.end();) {
      auto& s = it->second;
      if (s.exited && s.out < 0 && s.err < 0) {
        if (s.in >= 0) ::close(s.in);
        send(FrameType::exit, it->first, std::to_string(s.status));
        it = sessions_.erase(it);
      } else {
        ++it;
      }
    }
  }

  static int open_power_button() {
    DIR* d = ::opendir("/sys/class/input");
    if (!d) return -1;
    int fd = -1;
    while (auto* e = ::readdir(d)) {
      if (std::strncmp(e->d_name, "event", 5) != 0) continue;
      std::ifstream f(std::string("/sys/class/input/") + e->d_name + "/device/name");
      std::string name;
      std::getline(f, name);
      if (name == "Power Button") fd = ::open((std::string("/dev/input/") + e->d_name).c_str(), O_RDONLY | O_CLOEXEC);
    }
    ::closedir(d);
    return fd;
  }

  int port_ = -1;
  int sigfd_ = -1;
  int button_ = -1;
  sandgate::vmm::FrameDecoder decoder_;
  std::string out_;
  std::map<std::uint32_t, Session> sessions_;
};

// `sandgate-agent --load-modules ORDER`: loads the modules ORDER lists (one
// name a line, dependencies first) from ORDER's folder, all from this one
// process: under TCG a busybox insmod per module cost about 10 ms each in
// process start-up alone. Returns how many failed (already loaded is fine).
int load_modules(const std::string& order) {
  const auto dir = order.substr(0, order.rfind('/') + 1);
  std::ifstream names(order);
  int failed = 0;
  for (std::string name; std::getline(names, name);) {
    if (name.empty()) continue;
    const auto path = dir + name + ".ko";
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0 || (::syscall(SYS_finit_module, fd, "", 0) != 0 && errno != EEXIST)) {
      std::fprintf(stderr, "sandgate-agent: cannot load %s: %s\n", path.c_str(), std::strerror(errno));
      ++failed;
    }
    if (fd >= 0) ::close(fd);
  }
  return failed;
}

}  // namespace

// The guest's way to its proxy: a listener on the proxy address (init puts
// it on the loopback device; the guest has no network device), each
// connection a stream on the port "net0", which the host's supervisor
// hands to the sandbox's proxy. Runs for the agent's life; a host that
// disconnects is waited for, the listener's backlog holding new clients.
void serve_network() {
  const int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  ::setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(3128);
  ::inet_pton(AF_INET, "10.0.2.100", &addr.sin_addr);
  if (::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(listener, 1024) != 0) {
    std::fprintf(stderr, "sandgate-agent: cannot listen on 10.0.2.100:3128: %s\n", std::strerror(errno));
    return;
  }
  for (;;) {
    const auto path = find_port("net0");
    const int port = path.empty() ? -1 : ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (port < 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    sandgate::vmm::StreamMux(port, listener, nullptr).run({});  // runs until the port closes
    ::close(port);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

int main(int argc, char** argv) {
  if (argc == 3 && std::string_view(argv[1]) == "--load-modules") return load_modules(argv[2]) == 0 ? 0 : 1;
  ::signal(SIGPIPE, SIG_IGN);
  // SIGCHLD is read from the agent's signalfd: blocked in every thread, the
  // network one included, or it could be delivered there and lost.
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  ::sigprocmask(SIG_BLOCK, &chld, nullptr);
  std::thread(serve_network).detach();
  return Agent().run();
}
