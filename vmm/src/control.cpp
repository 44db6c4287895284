#include "sandgate/vmm/control.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>
#include <vector>

#include "sandgate/vmm/agent_protocol.h"

namespace sandgate::vmm {
namespace {

struct Client {
  int fd;
  FrameDecoder decoder;
};

void send_frame(int fd, FrameType t, std::uint32_t session, std::string_view payload) {
  std::string out;
  encode_frame(out, t, session, payload);
  std::size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = ::send(fd, out.data() + done, out.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    done += static_cast<std::size_t>(n);
  }
}

}  // namespace

boost::system::result<int, std::string> listen_control(const std::string& path) {
  ::unlink(path.c_str());
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) return "the socket path " + path + " is too long";
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  const mode_t old = ::umask(0077);
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 && ::listen(fd, 16) == 0;
  ::umask(old);
  if (!ok) {
    const std::string why = std::strerror(errno);
    ::close(fd);
    return "cannot listen on " + path + ": " + why;
  }
  return fd;
}

ControlEnd serve_control(int listen_fd, int agent_fd, const std::function<bool()>& vm_alive) {
  std::map<int, Client> clients;  // by fd
  // agent session -> (client fd, client session)
  std::map<std::uint32_t, std::pair<int, std::uint32_t>> routes;
  std::uint32_t next = 1;
  FrameDecoder from_agent;
  auto drop_client = [&](int fd) {
    for (auto it = routes.begin(); it != routes.end();) {
      if (it->second.first == fd) {
        // Its commands die with it, as a terminal's do.
        send_frame(agent_fd, FrameType::signal, it->first, "9");
        it = routes.erase(it);
      } else {
        ++it;
      }
    }
    ::close(fd);
    clients.erase(fd);
  };
  // Out of descriptors, the listener stays readable and accept(2) keeps
  // failing: it is left out of the poll for a while rather than spun on.
  auto accept_again = std::chrono::steady_clock::time_point::min();
  for (;;) {
    if (!vm_alive()) return ControlEnd::vm_exited;
    const short listen_for = std::chrono::steady_clock::now() >= accept_again ? POLLIN : 0;
    std::vector<pollfd> fds = {{listen_fd, listen_for, 0}, {agent_fd, POLLIN, 0}};
    for (auto& [fd, c] : clients) fds.push_back({fd, POLLIN, 0});
    if (::poll(fds.data(), fds.size(), 200) < 0 && errno != EINTR) return ControlEnd::agent_lost;
    if (fds[0].revents & POLLIN) {
      // Invariant: each accepted fd is closed by drop_client or at the end of this function.
      const int c = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
      if (c >= 0) clients[c].fd = c;
      else if (errno == EMFILE || errno == ENFILE)
        accept_again = std::chrono::steady_clock::now() + std::chrono::milliseconds(100);
    }
    if (fds[1].revents) {
      char buf[64 * 1024];
      const ssize_t n = ::read(agent_fd, buf, sizeof buf);
      if (n <= 0) {
        for (auto& [fd, c] : clients) ::close(fd);
        return ControlEnd::agent_lost;
      }
      from_agent.feed({buf, static_cast<std::size_t>(n)});
      while (auto f = from_agent.next()) {
        const auto it = routes.find(f->session);
        if (it == routes.end()) continue;
        send_frame(it->second.first, f->type, it->second.second, f->payload);
        if (f->type == FrameType::exit || f->type == FrameType::error || f->type == FrameType::pong)
          routes.erase(it);
      }
    }
    for (std::size_t i = 2; i < fds.size(); ++i) {
      const auto found = clients.find(fds[i].fd);
      if (!fds[i].revents || found == clients.end()) continue;
      auto& c = found->second;
      char buf[64 * 1024];
      const ssize_t n = ::read(c.fd, buf, sizeof buf);
      if (n <= 0) {
        drop_client(c.fd);
        continue;
      }
      c.decoder.feed({buf, static_cast<std::size_t>(n)});
      while (auto f = c.decoder.next()) {
        if (f->type == FrameType::stop) {
          for (auto& [fd, other] : clients) ::close(fd);
          return ControlEnd::stop_requested;
        }
        if (f->type == FrameType::poweroff) continue;  // only through stop
        // The client's session number, mapped to one unique on the agent channel.
        std::uint32_t agent_session = 0;
        for (const auto& [as, route] : routes)
          if (route.first == c.fd && route.second == f->session) agent_session = as;
        if (agent_session == 0) {
          agent_session = next++;
          routes[agent_session] = {c.fd, f->session};
        }
        send_frame(agent_fd, f->type, agent_session, f->payload);
      }
      if (c.decoder.error()) drop_client(c.fd);
    }
  }
}

}  // namespace sandgate::vmm
