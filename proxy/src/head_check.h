// Checks on the raw request head that HTTP parsers tend to tolerate, and a
// forward proxy must not: each is a known request-smuggling or confusion
// vector. Cost: one pass over the head bytes; no allocation.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "head_arena.h"

namespace sandgate::proxy::detail {

// Returns "" when the head is clean, or the reason it is refused: a NUL or
// other control byte, a bare CR or LF, obs-fold (a line that starts with a
// space or tab). head runs up to and including the blank line.
std::string_view check_raw_head(std::string_view head) noexcept;

// Whether bytes[from..] hold an LF that no CR comes right before (a line
// ended by a bare LF: in a head, or in a chunk's size line).
bool bare_lf(std::string_view bytes, std::size_t from) noexcept;

// An origin's status line with no space after the code, its reason being
// empty ("HTTP/1.1 204\r\n"). RFC 9112 4 asks for the space and Beast
// requires it; curl, browsers and Python take the line without. Returns
// where the space belongs (right after the code), or 0 when the head does
// not start with such a line.
std::size_t missing_reason_space(std::string_view head) noexcept;

// Why a request head is refused: status 0 when it is acceptable, else 400
// (malformed, ambiguous, a header bomb) or 505 (an HTTP major version other
// than 1), and the reason, for the answer's body.
struct HeadRefusal {
  int status = 0;
  std::string why;
};

// Checks the raw bytes, then parses the head into `parser` (which must be
// fresh, its limits set) and refuses request smuggling and header bombs:
// several Content-Length fields, Content-Length with Transfer-Encoding, a
// Transfer-Encoding other than a single "chunked", several Host fields, more
// than max_fields fields, Transfer-Encoding in an HTTP/1.0 request, a CONNECT
// with content. A later HTTP/1 minor version (1.2) is served as 1.1, as RFC
// 9110 2.5 asks; another major version (2.0) gets 505.
HeadRefusal parse_request_head(std::string_view head, std::size_t max_fields, RequestParser& parser);

// Why an HTTP request may not go through a CONNECT tunnel to host:port (host
// normalized): a CONNECT (a tunnel inside the tunnel), no Host, or a Host or
// an absolute-form target that names another host or port. A Host without a
// port names the tunnel's. `why` is empty when the request may go; `named`
// views the authority in the request that names another host (empty when
// none does). No I/O; allocates only for a refusal.
struct TunnelRefusal {
  std::string why;
  std::string_view named;
};
TunnelRefusal tunnel_request_refusal(const RequestParser::value_type& req, std::string_view host, std::uint16_t port);

// Whether a 101's Upgrade value (RFC 9110 7.8: the protocols switched to)
// leaves a tunnel carrying requests whose hosts the proxy cannot read:
// HTTP/2 in cleartext ("h2c"), whose requests name their hosts in HPACK,
// or TLS ("TLS/1.2", RFC 2817), whose SNI would come after the check. An
// empty value (no Upgrade: no protocol named) counts too. No allocation.
bool switches_out_of_sight(std::string_view upgrade) noexcept;

}  // namespace sandgate::proxy::detail
