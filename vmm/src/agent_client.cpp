#include "sandgate/vmm/agent_client.h"

#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/ioctl.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <cerrno>
#include <cstring>
#include <thread>

#include "sandgate/vmm/agent_protocol.h"
#include "unix_socket.h"

namespace sandgate::vmm {
namespace {

bool write_all(int fd, const char* p, std::size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

}  // namespace

boost::system::result<std::unique_ptr<AgentClient>, std::string> AgentClient::connect(
    const std::string& socket, std::chrono::milliseconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  int fd = -1;
  // QEMU creates the socket a moment after it starts.
  while ((fd = detail::connect_unix(socket)) < 0) {
    if (std::chrono::steady_clock::now() >= end)
      return "the VM's agent socket " + socket + " did not appear (QEMU did not start; see console.log)";
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::unique_ptr<AgentClient> c(new AgentClient(fd));
  // Ping until the agent answers: until the guest opens its port, bytes are
  // dropped. Several pings may have got through, so once one is answered, a
  // last "sync" ping is sent and everything up to its answer is read: the
  // channel is then at a frame boundary, with no stray pong half read.
  FrameDecoder decoder;
  auto last_ping = std::chrono::steady_clock::time_point{};
  bool synced = false;
  for (;;) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= end) return std::string("the guest agent did not answer in time (see the sandbox's console.log)");
    if (!synced && now - last_ping >= std::chrono::milliseconds(20)) {
      c->send(static_cast<unsigned char>(FrameType::ping), 0, "ready?");
      last_ping = now;
    }
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 20) <= 0) continue;
    char buf[4096];
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) return std::string("the VM closed the agent channel while booting (see console.log)");
    decoder.feed({buf, static_cast<std::size_t>(n)});
    while (auto f = decoder.next()) {
      if (f->type != FrameType::pong) continue;
      if (f->payload == "sync") return c;
      if (!synced) {
        c->send(static_cast<unsigned char>(FrameType::ping), 0, "sync");
        synced = true;
      }
    }
    if (decoder.error()) return std::string("the agent sent a malformed frame while booting");
  }
}

AgentClient::~AgentClient() { ::close(fd_); }

bool AgentClient::send(unsigned char type, std::uint32_t session, std::string_view payload) {
  std::string out;
  encode_frame(out, static_cast<FrameType>(type), session, payload);
  return write_all(fd_, out.data(), out.size());
}

void AgentClient::set_time() {
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count();
  send(static_cast<unsigned char>(FrameType::set_time), 0, std::to_string(us));
}

void AgentClient::poweroff() { send(static_cast<unsigned char>(FrameType::poweroff), 0, ""); }
void AgentClient::stop_sandbox() { send(static_cast<unsigned char>(FrameType::stop), 0, ""); }

boost::system::result<int, std::string> AgentClient::exec(const ExecRequest& r, int in_fd, int out_fd, int err_fd) {
  const std::uint32_t id = next_session_++;
  boost::json::object req;
  boost::json::array argv, env;
  for (const auto& a : r.argv) argv.emplace_back(a);
  for (const auto& e : r.env) env.emplace_back(e);
  req["argv"] = std::move(argv);
  req["env"] = std::move(env);
  req["cwd"] = r.cwd;
  winsize ws{};
  if (r.tty) {
    ::ioctl(in_fd >= 0 ? in_fd : out_fd, TIOCGWINSZ, &ws);
    req["tty"] = {{"rows", ws.ws_row}, {"cols", ws.ws_col}};
  }
  if (!send(static_cast<unsigned char>(FrameType::exec), id, boost::json::serialize(req)))
    return std::string("the agent channel is closed");
  if (in_fd < 0) send(static_cast<unsigned char>(FrameType::stdin_eof), id, "");

  // Signals to this process go to the command instead (Ctrl-C stops the command, not the VM).
  sigset_t mask, old;
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGHUP);
  if (r.tty) sigaddset(&mask, SIGWINCH);
  ::sigprocmask(SIG_BLOCK, &mask, &old);
  // A terminal passes every key through raw (Ctrl-C becomes the guest's
  // terminal's job); it is restored however this returns.
  termios saved{};
  const int term_fd = in_fd;
  const bool raw = r.tty && term_fd >= 0 && ::tcgetattr(term_fd, &saved) == 0;
  if (raw) {
    termios t = saved;
    ::cfmakeraw(&t);
    ::tcsetattr(term_fd, TCSANOW, &t);
  }
  // Invariant: sigfd is closed and the mask restored on every return below.
  const int sigfd = ::signalfd(-1, &mask, SFD_CLOEXEC);
  auto done = [&](boost::system::result<int, std::string> v) {
    if (raw) ::tcsetattr(term_fd, TCSANOW, &saved);
    ::close(sigfd);
    ::sigprocmask(SIG_SETMASK, &old, nullptr);
    return v;
  };
  FrameDecoder decoder;
  for (;;) {
    pollfd fds[3] = {{fd_, POLLIN, 0}, {sigfd, POLLIN, 0}, {in_fd, POLLIN, 0}};
    if (::poll(fds, in_fd >= 0 ? 3 : 2, -1) < 0 && errno != EINTR) return done(std::string("poll failed"));
    if (fds[1].revents) {
      signalfd_siginfo info{};
      if (::read(sigfd, &info, sizeof info) == sizeof info) {
        if (info.ssi_signo == SIGWINCH) {
          ::ioctl(term_fd >= 0 ? term_fd : out_fd, TIOCGWINSZ, &ws);
          send(static_cast<unsigned char>(FrameType::resize), id,
               std::to_string(ws.ws_row) + " " + std::to_string(ws.ws_col));
        } else {
          send(static_cast<unsigned char>(FrameType::signal), id, std::to_string(info.ssi_signo));
        }
      }
    }
    if (in_fd >= 0 && fds[2].revents) {
      char buf[32 * 1024];
      const ssize_t n = ::read(in_fd, buf, sizeof buf);
      if (n > 0) {
        send(static_cast<unsigned char>(FrameType::stdin_data), id, {buf, static_cast<std::size_t>(n)});
      } else {
        send(static_cast<unsigned char>(FrameType::stdin_eof), id, "");
        in_fd = -1;
      }
    }
    if (!fds[0].revents) continue;
    char buf[64 * 1024];
    const ssize_t n = ::read(fd_, buf, sizeof buf);
    if (n <= 0) return done(std::string("the VM went away while the command ran (see console.log)"));
    decoder.feed({buf, static_cast<std::size_t>(n)});
    while (auto f = decoder.next()) {
      if (f->session != id) continue;
      switch (f->type) {
        case FrameType::stdout_data: write_all(out_fd, f->payload.data(), f->payload.size()); break;
        case FrameType::stderr_data: write_all(err_fd, f->payload.data(), f->payload.size()); break;
        case FrameType::exit: return done(std::atoi(f->payload.c_str()));
        case FrameType::error: return done("cannot run " + r.argv[0] + ": " + f->payload);
        default: break;
      }
    }
    if (decoder.error()) return done(std::string("the agent sent a malformed frame"));
  }
}

}  // namespace sandgate::vmm
