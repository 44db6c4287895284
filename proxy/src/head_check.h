// Checks on heads in both directions, and what a proxy changes in them, as
// pure functions (no I/O; the fuzz targets run them):
// - a request head: what HTTP parsers tend to tolerate and a forward proxy
//   must not, each a known request-smuggling or confusion vector (one pass
//   over the head bytes; no allocation);
// - an origin's answer head: refused, or made ready for the client with
//   exactly one framing;
// - the hop-by-hop fields and Via, both ways.
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

// Removes the fields a proxy must not forward (RFC 9110 7.6.1): Connection,
// Keep-Alive, Proxy-Connection, Proxy-Authorization, TE, Trailer, Upgrade
// and those Connection lists, except the framing fields.
void strip_hop_by_hop(Fields& f);

// Whether a message of this HTTP version keeps its connection open (RFC
// 9112 9.3), reading every Connection field: Beast's keep_alive() reads
// only the first, so a "close" in a second one would be missed.
bool keeps_alive(const Fields& f, unsigned version) noexcept;

// Adds this hop to Via (RFC 9110 7.6.3), naming the version of the message
// as received, after every Via field it came with, in order.
void add_via(Fields& f, unsigned version);

// Why an origin's answer with this status cannot go on ("" when it can): a
// code outside 100-599, or a 101 (the proxy never forwards Upgrade, so
// nothing asked to switch).
std::string answer_status_refusal(unsigned status);

// An interim (1xx) answer, made ready for an HTTP/1.1 client: hop-by-hop
// fields and framing fields (no 1xx has content; RFC 9110 8.6, RFC 9112
// 6.1) removed, Via added, sent as HTTP/1.1.
void prepare_interim(ResponseParser::value_type& res);

// An origin's final answer head (its status checked above), made ready for
// the client in place, its body then relayed by the framing in `rp` (the
// origin's) into the framing the head now names: one length, or chunked
// (HTTP/1.1 clients only), or none and the connection closed after it.
// `head_request`: the answer has no body. `keep`: the client's connection
// may stay open. `why` is empty when it goes on, else the answer gets a 502
// saying why (a transfer coding that cannot pass on). origin_keeps: the
// origin keeps its own connection open.
struct AnswerHead {
  std::string why;
  bool origin_keeps = false;
};
AnswerHead prepare_answer(ResponseParser& rp, bool head_request, bool client_http11, bool keep);

}  // namespace sandgate::proxy::detail
