// Relays a CONNECT tunnel in both directions until both sides are done.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/generic/stream_protocol.hpp>

namespace sandgate::proxy::detail {

using Socket = boost::asio::generic::stream_protocol::socket;

struct TunnelResult {
  std::uint64_t bytes_up = 0;    // client to upstream
  std::uint64_t bytes_down = 0;  // upstream to client
  bool spliced = true;           // false: splice was refused, bytes went through a buffer
  bool sni_refused = false;      // the ClientHello named another host: closed at once
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
// whose SNI names another host than target_host ends the tunnel before a
// byte reaches the upstream. The other direction runs meanwhile, so
// protocols where the server speaks first work.
boost::asio::awaitable<TunnelResult> relay_tunnel(Socket& client, Socket& upstream, std::string prefix,
                                                  std::string_view target_host,
                                                  const std::function<void()>& on_activity);

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
