// Relays a CONNECT tunnel in both directions until both sides are done.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <tuple>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/generic/stream_protocol.hpp>

#include "sandgate/policy/target.h"

namespace sandgate::proxy::detail {

using Socket = boost::asio::generic::stream_protocol::socket;

// What a tunnel goes to, and the limits for HTTP requests inside it.
struct TunnelTarget {
  std::string_view host;  // normalized (policy::Target::host)
  std::uint16_t port = 0;
  std::size_t head_bytes = 0;  // Limits::head_bytes: a request head, request line included
  std::size_t header_count = 0;  // Limits::header_count
  // The 403 for an HTTP request in the tunnel that names another host
  // (`named`), by the policy in force when it comes; `why` says how it
  // named it. Unset: a plain refusal.
  std::function<std::string(const policy::Target& named, std::string_view why)> host_mismatch_answer;
};

struct TunnelResult {
  std::uint64_t bytes_up = 0;    // client to upstream
  std::uint64_t bytes_down = 0;  // upstream to client
  bool spliced = true;           // false: bytes went through a buffer (splice refused, or HTTP followed)
  bool http = false;             // the client spoke HTTP/1, and each request was checked
  bool sni_refused = false;      // the ClientHello named another host: closed at once
  // A request in the tunnel was refused (its Host named another host, say),
  // with this answer (0: the tunnel was closed without one).
  bool request_refused = false;
  std::uint16_t refusal_status = 0;
  bool upstream_ended_first = false;  // the origin's side ended (EOF or error) before the client's
};

// Moves bytes with splice(2) through one pipe per direction, waiting for
// readiness on the reactor; no user-space copy. Falls back to a buffered copy
// only if the kernel refuses splice on these sockets. A direction that sees
// EOF shuts down writing on the other side (half-close) and the tunnel ends
// when both directions have. on_activity is called whenever bytes move (the
// caller's idle timer). Either socket closing ends both directions.
//
// The client's first flight (starting with `prefix`, bytes it sent after its
// CONNECT head) is read into a buffer and checked first: a TLS ClientHello
// whose SNI names another host than the target's ends the tunnel before a
// byte reaches the upstream. The other direction runs meanwhile, so
// protocols where the server speaks first work. A first flight that is an
// HTTP/1 request line makes the tunnel an HTTP one (tunnel_http.h): each
// request's Host is checked, until a 101 switches protocols.
boost::asio::awaitable<TunnelResult> relay_tunnel(Socket& client, Socket& upstream, std::string prefix,
                                                  const TunnelTarget& target,
                                                  const std::function<void()>& on_activity);

// Writes all of `bytes`. A write the socket takes at once, as most do,
// returns with no trip through the scheduler (Asio posts the completion
// even of an operation that completed at once, and the other side's next
// step then waits for that round); a full socket is waited on.
boost::asio::awaitable<boost::system::error_code> send_all(Socket& out, boost::asio::const_buffer bytes);

// Reads what has come into `into`, waiting only when nothing has; the same
// way as send_all. Returns eof at the end, and how many bytes came.
boost::asio::awaitable<std::tuple<boost::system::error_code, std::size_t>> receive_some(Socket& in,
                                                                                       boost::asio::mutable_buffer into);

// One recv(2) that does not wait: would_block when nothing has come (the
// caller waits for readability, as receive_some does), eof at the end.
std::tuple<boost::system::error_code, std::size_t> try_receive(Socket& in, boost::asio::mutable_buffer into) noexcept;

// Wakes a splice_body waiting for a batch of its body on `s`, to take what
// has come (its low-water mark goes back to one byte).
void wake_batched_reader(Socket& s) noexcept;

// Moves exactly `bytes` from `from` to `to` (an HTTP body of known length)
// with splice(2) through a pipe from the thread's pool (the tunnels' too), or
// a buffered copy where splice is refused. False if a side fails or the body
// ends early; `bytes` counts down as bytes are taken, so it then says how
// many were not. on_activity is called as bytes move.
boost::asio::awaitable<bool> splice_body(Socket& from, Socket& to, std::uint64_t& bytes,
                                         const std::function<void()>& on_activity);

}  // namespace sandgate::proxy::detail
