#include "sandgate/vmm/stream_mux.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <vector>

#include "unix_socket.h"

namespace sandgate::vmm {
namespace {

// Past this much queued for the channel, streams are not read: the channel
// is the bottleneck, and what waits for it stays bounded.
constexpr std::size_t port_high_water = 1 << 20;
constexpr std::size_t read_chunk = 64 * 1024;

void set_non_blocking(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK); }

}  // namespace

StreamMux::StreamMux(int port, int listener, std::function<int()> dial)
    : port_(port), listener_(listener), dial_(std::move(dial)) {
  set_non_blocking(port_);
  if (listener_ >= 0) set_non_blocking(listener_);
}

void StreamMux::send(FrameType type, std::uint32_t id, std::string_view payload) {
  encode_frame(port_out_, type, id, payload);
}

bool StreamMux::flush_port() {
  std::size_t done = 0;
  while (done < port_out_.size()) {
    const ssize_t n = ::write(port_, port_out_.data() + done, port_out_.size() - done);
    if (n > 0) {
      done += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) break;
    port_out_.erase(0, done);
    return false;  // the channel is gone
  }
  port_out_.erase(0, done);
  return true;
}

void StreamMux::drop(std::uint32_t id, bool tell_far_side) {
  auto it = streams_.find(id);
  if (it == streams_.end()) return;
  ::close(it->second.fd);
  streams_.erase(it);
  if (tell_far_side) send(FrameType::net_close, id);
}

void StreamMux::on_frame(Frame&& f) {
  const auto id = f.session;
  if (f.type == FrameType::net_open) {
    if (streams_.count(id)) return drop(id, true);  // a reused id: the far side is confused
    const int fd = dial_ && streams_.size() < max_streams ? dial_() : -1;
    if (fd < 0) return send(FrameType::net_close, id);
    set_non_blocking(fd);
    streams_[id].fd = fd;
    return;
  }
  auto it = streams_.find(id);
  if (it == streams_.end()) return;  // a stream this side already closed
  Stream& s = it->second;
  switch (f.type) {
    case FrameType::net_data:
      // More than the window means the far side ignores flow control.
      if (s.far_eof || s.out.size() + f.payload.size() > window) return drop(id, true);
      if (s.out.empty()) s.out = std::move(f.payload);  // the usual case: no second copy
      else s.out += f.payload;
      write_stream(id, s);
      return;
    case FrameType::net_eof:
      s.far_eof = true;
      write_stream(id, s);
      return;
    case FrameType::net_close:
      return drop(id, false);
    case FrameType::net_credit: {
      std::size_t n = 0;
      std::from_chars(f.payload.data(), f.payload.data() + f.payload.size(), n);
      s.credit = std::min(window, s.credit + n);
      return;
    }
    default:
      return;
  }
}

void StreamMux::read_stream(std::uint32_t id, Stream& s) {
  char buf[read_chunk];
  const ssize_t n = ::read(s.fd, buf, std::min(sizeof buf, s.credit));
  if (n > 0) {
    s.credit -= static_cast<std::size_t>(n);
    send(FrameType::net_data, id, {buf, static_cast<std::size_t>(n)});
  } else if (n == 0) {
    s.near_eof = true;
    send(FrameType::net_eof, id);
    if (s.shut) drop(id, false);  // both ways done
  } else if (errno != EAGAIN && errno != EINTR) {
    drop(id, true);
  }
}

void StreamMux::write_stream(std::uint32_t id, Stream& s) {
  std::size_t done = 0;
  while (done < s.out.size()) {
    const ssize_t n = ::send(s.fd, s.out.data() + done, s.out.size() - done, MSG_NOSIGNAL);
    if (n > 0) {
      done += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) break;
    return drop(id, true);  // the local end is gone
  }
  s.out.erase(0, done);
  s.unacked += done;
  // Credit back in quarters of the window (or all at once when drained), so
  // the far side never waits on a full window that has room.
  if (s.unacked >= window / 4 || (s.unacked > 0 && s.out.empty())) {
    send(FrameType::net_credit, id, std::to_string(s.unacked));
    s.unacked = 0;
  }
  if (s.far_eof && s.out.empty() && !s.shut) {
    ::shutdown(s.fd, SHUT_WR);
    s.shut = true;
  }
  if (s.shut && s.near_eof) drop(id, false);  // both ways done
}

void StreamMux::run(std::stop_token stop) {
  std::vector<pollfd> fds;
  std::vector<std::uint32_t> ids;
  char buf[read_chunk];
  bool port_done = false;
  while (!stop.stop_requested() && !port_done) {
    fds.clear();
    ids.clear();
    fds.push_back({port_, static_cast<short>(POLLIN | (port_out_.empty() ? 0 : POLLOUT)), 0});
    const bool room = port_out_.size() < port_high_water;
    fds.push_back({room && streams_.size() < max_streams ? listener_ : -1, POLLIN, 0});
    for (auto& [id, s] : streams_) {
      short events = 0;
      if (room && !s.near_eof && s.credit > 0) events |= POLLIN;
      if (!s.out.empty()) events |= POLLOUT;
      // A stream waiting only on the far side is not polled: a hung-up
      // socket would report POLLHUP on every round.
      if (events == 0) continue;
      fds.push_back({s.fd, events, 0});
      ids.push_back(id);
    }
    if (::poll(fds.data(), fds.size(), 200) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    constexpr short ended = POLLHUP | POLLERR;
    for (std::size_t i = 2; i < fds.size(); ++i) {
      const short got = fds[i].revents;
      if (!got) continue;
      auto it = streams_.find(ids[i - 2]);
      if (it != streams_.end() && (fds[i].events & POLLOUT) && (got & (POLLOUT | ended)))
        write_stream(it->first, it->second);
      it = streams_.find(ids[i - 2]);
      if (it != streams_.end() && (fds[i].events & POLLIN) && (got & (POLLIN | ended)))
        read_stream(it->first, it->second);
    }
    if (fds[1].revents & POLLIN) {
      const int fd = ::accept4(listener_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd >= 0) {
        const auto id = ++next_id_;
        streams_[id].fd = fd;
        send(FrameType::net_open, id);
      }
    }
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      const ssize_t n = ::read(port_, buf, sizeof buf);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        port_done = true;
      } else if (n > 0) {
        decoder_.feed({buf, static_cast<std::size_t>(n)});
        while (auto f = decoder_.next()) on_frame(std::move(*f));
        if (decoder_.error()) port_done = true;  // garbage on the channel: end it
      }
    }
    if (!port_out_.empty() && !flush_port()) port_done = true;
  }
  for (auto& [id, s] : streams_) ::close(s.fd);
  streams_.clear();
}

int connect_guest_network(const std::string& port_socket) { return detail::connect_unix(port_socket); }

void relay_guest_network(int port, const std::string& proxy_socket, std::stop_token stop) {
  StreamMux mux(port, -1, [&] { return detail::connect_unix(proxy_socket); });
  mux.run(stop);
  ::close(port);
}

}  // namespace sandgate::vmm
