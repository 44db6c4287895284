// Plain HTTP inside a CONNECT tunnel. The tunnel's target passed the
// policy, but an HTTP request names its host again, in Host (or an
// absolute-form target), and a shared front end (a CDN, a virtual-host
// server, a proxy) routes by that name: a request naming another host would
// reach it through the allowed one's address. That is domain fronting, as a
// ClientHello with another SNI is. So a tunnel whose first bytes are an
// HTTP/1 request line is followed as HTTP:
//   - every request head is read (limits as for the proxy's own requests),
//     checked as the proxy checks its own (smuggling, header bombs) and its
//     Host compared with the tunnel's target, then forwarded unchanged;
//   - the origin's answers are parsed only to know where each ends and
//     whether one switches protocols (101 to a request with Upgrade), after
//     which both directions go on opaque, spliced.
// Bodies go on as they came: one of known length is spliced, a chunked one
// passes through a small buffer while Beast reads its framing.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>

#include "head_arena.h"
#include "tunnel.h"

namespace sandgate::proxy::detail {

// The two directions of one tunnel followed as HTTP. Both run on the
// tunnel's strand and share this object; no lock. Memory: each direction's
// buffer (a page, more only for a larger head) and, while a head is being
// read, one HeadArena page.
class HttpTunnel {
 public:
  enum class End : std::uint8_t {
    ended,     // the reading side closed: the other gets a half-close
    switched,  // protocols switched (a 101): the rest of `buf`, then opaque bytes
    refused,   // a request was refused (the client has its answer when it could get one)
    failed,    // a side failed, or an answer could not be followed: close both
  };

  // `target` outlives this object (the caller holds it for the tunnel).
  HttpTunnel(const Socket::executor_type& ex, const TunnelTarget& target);

  // Client to origin. `buf` holds what the client has sent so far (its
  // first flight); `bytes` counts what went on.
  boost::asio::awaitable<End> requests(Socket& client, Socket& upstream, ReadBuffer& buf, std::uint64_t& bytes,
                                       const std::function<void()>& on_activity);

  // Origin to client.
  boost::asio::awaitable<End> answers(Socket& upstream, Socket& client, ReadBuffer& buf, std::uint64_t& bytes,
                                      const std::function<void()>& on_activity);

  // Whether a request was refused, and the status of the answer the client
  // got (0 when it could get none: an earlier answer was still coming).
  bool refused() const noexcept { return refused_; }
  std::uint16_t refusal_status() const noexcept { return refusal_status_; }

 private:
  struct Asked {
    bool head = false;     // HEAD: its answer has no body
    bool upgrade = false;  // has Upgrade: a 101 may answer it
  };
  // Requests the origin has not finished answering. A client this far ahead
  // waits: the answers it has not read bound what the proxy keeps.
  static constexpr std::size_t max_outstanding = 16;

  boost::asio::awaitable<End> follow_answers(Socket& upstream, Socket& client, ReadBuffer& buf, std::uint64_t& bytes,
                                             const std::function<void()>& on_activity);
  // `answer`: the whole answer, when the caller made one; else the plain
  // one for status, code and why.
  boost::asio::awaitable<End> refuse(Socket& client, int status, std::string_view code, std::string_view why,
                                     std::string answer = {});
  // The other direction's progress: a wait on a timer that never expires,
  // which the other direction cancels. Callers re-check their condition.
  boost::asio::awaitable<void> wait_for_answers();
  void wake() noexcept {
    if (signal_) signal_->cancel();
  }

  const TunnelTarget& target_;
  std::array<Asked, max_outstanding> asked_{};
  std::uint64_t sent_ = 0;      // request heads sent on
  std::uint64_t answered_ = 0;  // final answers relayed whole
  bool switched_ = false;
  bool answers_over_ = false;  // the origin's side has ended
  bool refused_ = false;
  std::uint16_t refusal_status_ = 0;
  // Made on the first wait: most tunnels never wait (a timer is a service
  // lookup under a mutex to make).
  Socket::executor_type executor_;
  std::optional<boost::asio::steady_timer> signal_;
};

}  // namespace sandgate::proxy::detail
