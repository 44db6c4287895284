// The first bytes a client sends through a CONNECT tunnel, checked against
// the tunnel's target: a TLS ClientHello whose SNI names another host than
// the one the policy allowed is domain fronting, and is refused. An HTTP/1
// request line is told apart, for its Host to be checked (tunnel_http.h).
#pragma once

#include <cstdint>
#include <string_view>

namespace sandgate::proxy::detail {

enum class FirstFlight : std::uint8_t {
  need_more,  // a TLS record or an HTTP request line has started; wait for the rest of it
  allow,      // neither TLS nor HTTP/1, or TLS with no SNI or one that names the target
  refuse,     // the SNI names another host, or the ClientHello is malformed
  http,       // an HTTP/1 request line, as the most lenient server would read one
};

// The most a check reads before it decides: one full TLS record.
inline constexpr std::size_t max_first_flight = 5 + (1 << 14);

// Decides on the bytes received so far. A request line longer than
// max_first_flight counts as HTTP (its head limit then refuses it), and so
// does a request line only a lenient server reads (blank lines before it,
// runs of spaces, a bare LF, "http/1.1", an HTTP/0.9 GET, HTTP/2's
// cleartext preface): the tunnel's strict reading then refuses it. target_host is the normalized host
// of the CONNECT target. The ClientHello is parsed by OpenSSL (a client-hello
// callback on a memory BIO), not by hand. Cost: one SSL object per call that
// sees a complete record; no network I/O.
FirstFlight check_first_flight(std::string_view bytes, std::string_view target_host);

}  // namespace sandgate::proxy::detail
