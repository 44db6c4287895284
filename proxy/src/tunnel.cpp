#include "tunnel.h"

#include "client_hello.h"
#include "tunnel_http.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <memory>
#include <optional>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

namespace sandgate::proxy::detail {
namespace {

namespace asio = boost::asio;
using asio::experimental::awaitable_operators::operator&&;
constexpr auto token = asio::as_tuple(asio::use_awaitable);
constexpr std::size_t chunk = 1 << 16;  // buffered fallback

// Invariant: a Pipe owns both ends (non-blocking) and closes them; ok() is
// false when pipe2 failed (then callers copy through a buffer).
struct Pipe {
  int fd[2] = {-1, -1};
  std::size_t size = 0;  // its capacity
  Pipe() {
    if (::pipe2(fd, O_NONBLOCK | O_CLOEXEC) != 0) fd[0] = fd[1] = -1;
    // The default capacity (64 KiB). Larger pipes gained little here, and an
    // unprivileged user's pipe pages are capped (pipe-user-pages-soft): big
    // pipes would starve later tunnels.
    size = fd[1] >= 0 ? static_cast<std::size_t>(std::max(::fcntl(fd[1], F_GETPIPE_SZ), 4096)) : 0;
  }
  ~Pipe() {
    for (int f : fd)
      if (f >= 0) ::close(f);
  }
  Pipe(const Pipe&) = delete;
  Pipe& operator=(const Pipe&) = delete;
  bool ok() const { return fd[0] >= 0; }
};

// A failed direction ends the tunnel: closing both sockets wakes the other
// direction's wait with an error.
void abort_both(Socket& a, Socket& b) {
  boost::system::error_code ignored;
  a.close(ignored);
  b.close(ignored);
}

struct Direction {
  std::uint64_t bytes = 0;
  bool spliced = true;
  std::chrono::steady_clock::time_point ended = std::chrono::steady_clock::time_point::max();
};

// Buffered copy: used only where splice is refused (EINVAL).
asio::awaitable<void> copy(Socket& from, Socket& to, Direction& d, const std::function<void()>& on_activity) {
  d.spliced = false;
  std::array<char, chunk> buf;
  for (;;) {
    auto [ec, n] = co_await from.async_read_some(asio::buffer(buf), token);
    if (ec == asio::error::eof) break;
    if (ec) co_return abort_both(from, to);
    auto [wec, m] = co_await asio::async_write(to, asio::buffer(buf.data(), n), token);
    if (wec) co_return abort_both(from, to);
    d.bytes += m;
    on_activity();
  }
  boost::system::error_code ignored;
  to.shutdown(asio::socket_base::shutdown_send, ignored);
}

// Empty pipes kept for this thread's next tunnels and bodies: a tunnel
// needs two, and making and closing one is four system calls. Only a pipe
// left empty comes back.
std::vector<std::unique_ptr<Pipe>>& spare_pipes() {
  thread_local std::vector<std::unique_ptr<Pipe>> spare;
  return spare;
}

std::unique_ptr<Pipe> take_pipe() {
  auto& spare = spare_pipes();
  if (spare.empty()) return std::make_unique<Pipe>();
  auto p = std::move(spare.back());
  spare.pop_back();
  return p;
}

void give_back(std::unique_ptr<Pipe> p) {
  constexpr std::size_t keep = 16;
  if (auto& spare = spare_pipes(); p->ok() && spare.size() < keep) spare.push_back(std::move(p));
}

asio::awaitable<void> splice_one_way(Socket& from, Socket& to, Direction& d,
                                     const std::function<void()>& on_activity) {
  auto owned = take_pipe();
  Pipe& pipe = *owned;
  if (!pipe.ok()) co_return co_await copy(from, to, d, on_activity);
  const int in = from.native_handle();
  const int out = to.native_handle();
  std::size_t in_pipe = 0;
  for (;;) {
    const ssize_t n = ::splice(in, nullptr, pipe.fd[1], nullptr, pipe.size, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n == 0) break;  // EOF from this side
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EINVAL && d.bytes == 0 && in_pipe == 0) co_return co_await copy(from, to, d, on_activity);
      if (errno != EAGAIN) co_return abort_both(from, to);  // reset
      auto [ec] = co_await from.async_wait(asio::socket_base::wait_read, token);
      if (ec) co_return abort_both(from, to);
      continue;
    }
    in_pipe += static_cast<std::size_t>(n);
    while (in_pipe > 0) {
      const ssize_t m = ::splice(pipe.fd[0], nullptr, out, nullptr, in_pipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (m > 0) {
        in_pipe -= static_cast<std::size_t>(m);
        d.bytes += static_cast<std::uint64_t>(m);
        continue;
      }
      if (m < 0 && errno == EINTR) continue;
      if (m < 0 && errno == EAGAIN) {
        auto [ec] = co_await to.async_wait(asio::socket_base::wait_write, token);
        if (ec) co_return abort_both(from, to);
        continue;
      }
      co_return abort_both(from, to);  // the other side is gone
    }
    on_activity();
  }
  give_back(std::move(owned));  // EOF with nothing in it
  // Half-close: the peer sees EOF, and may still answer the other way.
  boost::system::error_code ignored;
  to.shutdown(asio::socket_base::shutdown_send, ignored);
}

// What a tunnel turned out to carry: decided by the client's first flight,
// or by the origin speaking first.
enum class Mode : std::uint8_t { undecided, opaque, http };

// What both directions of one tunnel share (one strand: no lock).
struct Shared {
  Mode mode = Mode::undecided;
  std::optional<HttpTunnel> http;  // for Mode::http
  bool sni_refused = false;
  bool http_refused = false;  // HTTP/1 from a client after the origin spoke first
};

// Writes `bytes` (what was read before the splicing starts), then splices
// the rest of the direction, or half-closes it when `eof` came already.
asio::awaitable<void> send_then_splice(Socket& from, Socket& to, std::string bytes, bool eof, Direction& d,
                                       const std::function<void()>& on_activity) {
  if (!bytes.empty()) {
    const auto ec = co_await send_all(to, asio::buffer(bytes));
    if (ec) co_return abort_both(from, to);
    d.bytes += bytes.size();
    on_activity();
    std::string().swap(bytes);  // a tunnel that goes quiet keeps no buffer
  }
  if (eof) {
    boost::system::error_code ignored;
    to.shutdown(asio::socket_base::shutdown_send, ignored);
    co_return;
  }
  co_await splice_one_way(from, to, d, on_activity);
}

// After a direction followed as HTTP ended.
asio::awaitable<void> after_http(HttpTunnel::End end, Socket& from, Socket& to, ReadBuffer& buf, Direction& d,
                                 const std::function<void()>& on_activity) {
  switch (end) {
    case HttpTunnel::End::switched: {
      // The rest of the buffer is the new protocol's first bytes.
      std::string rest(static_cast<const char*>(buf.data().data()), buf.size());
      buf.clear();
      buf.shrink_to_fit();
      co_return co_await send_then_splice(from, to, std::move(rest), false, d, on_activity);
    }
    case HttpTunnel::End::ended: {
      boost::system::error_code ignored;
      to.shutdown(asio::socket_base::shutdown_send, ignored);
      co_return;
    }
    case HttpTunnel::End::refused:
    case HttpTunnel::End::failed: co_return abort_both(from, to);
  }
}

// The client's side. Its first flight goes through a buffer and the SNI
// check; then the rest of the direction is spliced, or, for HTTP, followed
// request by request.
asio::awaitable<void> client_side(Socket& client, Socket& upstream, std::string first, const TunnelTarget& target,
                                  Shared& shared, Direction& d, const std::function<void()>& on_activity) {
  FirstFlight verdict = check_first_flight(first, target.host);
  bool eof = false;
  while (verdict == FirstFlight::need_more) {
    // A tunnel whose client has not spoken yet holds no buffer.
    if (first.empty()) {
      auto [ec] = co_await client.async_wait(asio::socket_base::wait_read, token);
      if (ec) co_return abort_both(client, upstream);
    }
    // Grow as needed: most first flights (a ClientHello, a request line) fit in 2 KiB.
    const std::size_t have = first.size();
    first.resize(std::min(max_first_flight, std::max<std::size_t>(2048, have * 2)));
    auto [ec, n] = co_await receive_some(client, asio::buffer(first.data() + have, first.size() - have));
    first.resize(have + (ec ? 0 : n));
    if (ec == asio::error::eof) {
      eof = true;
      verdict = first.empty() ? FirstFlight::allow : check_first_flight(first, target.host);
      if (verdict == FirstFlight::need_more) verdict = FirstFlight::refuse;  // a cut-off hello
      break;
    }
    if (ec) co_return abort_both(client, upstream);
    verdict = check_first_flight(first, target.host);
  }
  if (verdict == FirstFlight::refuse) {
    shared.sni_refused = true;
    co_return abort_both(client, upstream);
  }
  if (verdict == FirstFlight::http) {
    // HTTP after the origin spoke first is not an exchange that can be
    // followed from its start: deny on doubt.
    if (shared.mode == Mode::opaque) {
      shared.http_refused = true;
      co_return abort_both(client, upstream);
    }
    shared.mode = Mode::http;
    shared.http.emplace(client.get_executor(), target);
    d.spliced = false;
    ReadBuffer buf;
    buf.commit(asio::buffer_copy(buf.prepare(first.size()), asio::buffer(first)));
    std::string().swap(first);
    const auto end = co_await shared.http->requests(client, upstream, buf, d.bytes, on_activity);
    co_return co_await after_http(end, client, upstream, buf, d, on_activity);
  }
  shared.mode = Mode::opaque;
  co_await send_then_splice(client, upstream, std::move(first), eof, d, on_activity);
}

// The origin's side: waits for its first bytes, by which time the client's
// first flight has said whether this is HTTP (an origin that speaks first
// makes the tunnel opaque).
asio::awaitable<void> origin_side(Socket& upstream, Socket& client, Shared& shared, Direction& d,
                                  const std::function<void()>& on_activity) {
  auto [ec] = co_await upstream.async_wait(asio::socket_base::wait_read, token);
  if (ec) co_return abort_both(upstream, client);
  if (shared.mode == Mode::undecided) shared.mode = Mode::opaque;
  if (shared.mode == Mode::http) {
    d.spliced = false;
    ReadBuffer buf;
    const auto end = co_await shared.http->answers(upstream, client, buf, d.bytes, on_activity);
    co_return co_await after_http(end, upstream, client, buf, d, on_activity);
  }
  co_await splice_one_way(upstream, client, d, on_activity);
}

// While a body of known length comes fast, the reader is woken only when
// this much of it (or all that is left) has arrived: fewer, larger rounds,
// and fewer wakeups the sender's core pays for. A slow body is passed on as
// it comes (per segment), since it would otherwise sit in the socket, seen
// by nobody, until the idle timeout. Back to 1 when the body is done, since
// the connection's next read is a head.
class ReadLowWater {
 public:
  explicit ReadLowWater(Socket& s) : s_(s) {}
  ~ReadLowWater() { reset(); }
  ReadLowWater(const ReadLowWater&) = delete;
  ReadLowWater& operator=(const ReadLowWater&) = delete;
  void expect(std::uint64_t left) { set(static_cast<int>(std::min<std::uint64_t>(left, 256 * 1024))); }
  void reset() { set(1); }

 private:
  void set(int bytes) {
    if (bytes == current_) return;
    // A refusal only costs wakeups; the splice loop is correct at any level.
    if (::setsockopt(s_.native_handle(), SOL_SOCKET, SO_RCVLOWAT, &bytes, sizeof bytes) == 0) current_ = bytes;
  }
  Socket& s_;
  int current_ = 1;
};

// Sets O_NONBLOCK on the socket, once (splice needs it; Asio waits for
// readiness). native_non_blocking() reads Asio's flag; setting it is an ioctl.
void set_non_blocking(Socket& s) {
  if (!s.native_non_blocking()) s.native_non_blocking(true);
}

}  // namespace

asio::awaitable<boost::system::error_code> send_all(Socket& out, asio::const_buffer bytes) {
  const auto* data = static_cast<const char*>(bytes.data());
  for (std::size_t done = 0; done < bytes.size();) {
    const ssize_t m = ::send(out.native_handle(), data + done, bytes.size() - done, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (m > 0) {
      done += static_cast<std::size_t>(m);
      continue;
    }
    if (m < 0 && errno == EINTR) continue;
    if (m < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
      co_return boost::system::error_code(errno, boost::system::system_category());
    auto [ec] = co_await out.async_wait(asio::socket_base::wait_write, token);
    if (ec) co_return ec;
  }
  co_return boost::system::error_code{};
}

std::tuple<boost::system::error_code, std::size_t> try_receive(Socket& in, asio::mutable_buffer into) noexcept {
  for (;;) {
    const ssize_t n = ::recv(in.native_handle(), into.data(), into.size(), MSG_DONTWAIT);
    if (n > 0) return {boost::system::error_code{}, static_cast<std::size_t>(n)};
    if (n == 0) return {asio::error::eof, 0};
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return {asio::error::would_block, 0};
    return {boost::system::error_code(errno, boost::system::system_category()), 0};
  }
}

asio::awaitable<std::tuple<boost::system::error_code, std::size_t>> receive_some(Socket& in,
                                                                                asio::mutable_buffer into) {
  for (;;) {
    const auto got = try_receive(in, into);
    if (std::get<0>(got) != asio::error::would_block) co_return got;
    auto [ec] = co_await in.async_wait(asio::socket_base::wait_read, token);
    if (ec) co_return std::tuple(ec, std::size_t{0});
  }
}

void wake_batched_reader(Socket& s) noexcept {
  // Lowering SO_RCVLOWAT signals a waiting reader when bytes are there. The
  // splice loop's ReadLowWater may then think the mark higher than it is,
  // which only costs it wakeups.
  const int one = 1;
  ::setsockopt(s.native_handle(), SOL_SOCKET, SO_RCVLOWAT, &one, sizeof one);
}

asio::awaitable<bool> splice_body(Socket& from, Socket& to, std::uint64_t& bytes,
                                  const std::function<void()>& on_activity) {
  set_non_blocking(from);
  set_non_blocking(to);
  auto owned = take_pipe();
  Pipe& pipe = *owned;
  bool use_splice = pipe.ok();
  std::unique_ptr<char[]> copy_buf;
  ReadLowWater low(from);
  // Bytes taken since the last wait: a round of 16 KiB or more means the
  // sender is fast, and the next wait may be for a larger batch.
  std::uint64_t round = 0;
  constexpr std::uint64_t fast_round = 16 * 1024;
  while (bytes > 0) {
    if (!use_splice) {
      // Buffered fallback: only where the kernel refuses splice.
      if (!copy_buf) copy_buf.reset(new char[chunk]);
      auto [ec, n] = co_await from.async_read_some(
          asio::buffer(copy_buf.get(), static_cast<std::size_t>(std::min<std::uint64_t>(bytes, chunk))), token);
      if (ec) co_return false;
      auto [wec, m] = co_await asio::async_write(to, asio::buffer(copy_buf.get(), n), token);
      if (wec) co_return false;
      bytes -= m;
      on_activity();
      continue;
    }
    const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(bytes, pipe.size));
    const ssize_t n = ::splice(from.native_handle(), nullptr, pipe.fd[1], nullptr, want, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n == 0) co_return false;  // the body ended early
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EINVAL) {
        use_splice = false;
        low.reset();  // the buffered copy reads what is there
        continue;
      }
      if (errno != EAGAIN) co_return false;
      if (round >= fast_round) low.expect(bytes);
      else low.reset();
      round = 0;
      auto [ec] = co_await from.async_wait(asio::socket_base::wait_read, token);
      if (ec) co_return false;
      continue;
    }
    bytes -= static_cast<std::uint64_t>(n);
    round += static_cast<std::uint64_t>(n);
    for (auto in_pipe = static_cast<std::size_t>(n); in_pipe > 0;) {
      const ssize_t m = ::splice(pipe.fd[0], nullptr, to.native_handle(), nullptr, in_pipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (m > 0) {
        in_pipe -= static_cast<std::size_t>(m);
        continue;
      }
      if (m < 0 && errno == EINTR) continue;
      if (m < 0 && errno == EAGAIN) {
        auto [ec] = co_await to.async_wait(asio::socket_base::wait_write, token);
        if (ec) co_return false;
        continue;
      }
      co_return false;
    }
    on_activity();
  }
  give_back(std::move(owned));  // all of the body moved: nothing in it
  co_return true;
}

asio::awaitable<TunnelResult> relay_tunnel(Socket& client, Socket& upstream, std::string prefix,
                                           const TunnelTarget& target,
                                           const std::function<void()>& on_activity) {
  // splice needs the fds in non-blocking mode; Asio waits for readiness.
  set_non_blocking(client);
  set_non_blocking(upstream);
  Direction up, down;
  Shared shared;
  auto timed = [](asio::awaitable<void> a, Direction& d) -> asio::awaitable<void> {
    co_await std::move(a);
    d.ended = std::chrono::steady_clock::now();
  };
  co_await (timed(client_side(client, upstream, std::move(prefix), target, shared, up, on_activity), up) &&
            timed(origin_side(upstream, client, shared, down, on_activity), down));
  TunnelResult r;
  r.bytes_up = up.bytes;
  r.bytes_down = down.bytes;
  r.spliced = up.spliced && down.spliced;
  r.http = shared.mode == Mode::http;
  r.sni_refused = shared.sni_refused;
  r.request_refused = shared.http_refused || (shared.http && shared.http->refused());
  r.refusal_status = shared.http ? shared.http->refusal_status() : 0;
  r.upstream_ended_first = down.ended < up.ended;
  co_return r;
}

}  // namespace sandgate::proxy::detail
