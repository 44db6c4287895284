#include "head_check.h"

#include <boost/asio/buffer.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/rfc7230.hpp>
#include <boost/container/small_vector.hpp>
#include <boost/url/parse.hpp>

#include <algorithm>
#include <charconv>
#include <string>
#include <utility>

#include "sandgate/policy/target.h"
#include "token.h"

namespace sandgate::proxy::detail {
namespace {

bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }

// Whether `authority` ("host[:port]") names host:port; no port means `port`.
bool names(std::string_view authority, std::string_view host, std::uint16_t port) {
  // The spelling clients send, host or host:port as the tunnel has them,
  // needs no parse. (Not for an IPv6 address: unbracketed, "::1:80" is
  // another address to the parse below, not ::1 port 80.)
  if (authority.starts_with(host) && host.find(':') == std::string_view::npos) {
    const auto rest = authority.substr(host.size());
    if (rest.empty()) return true;
    char digits[8];
    const auto end = std::to_chars(digits, digits + sizeof digits, port).ptr;
    if (rest.size() == static_cast<std::size_t>(end - digits) + 1 && rest[0] == ':' &&
        rest.substr(1) == std::string_view(digits, end))
      return true;
  }
  const auto t = policy::parse_target(authority, port);
  return t && t->host == host && t->port == port;
}

}  // namespace

std::string_view check_raw_head(std::string_view head) noexcept {
  bool line_start = true;
  for (std::size_t i = 0; i < head.size(); ++i) {
    const auto c = static_cast<unsigned char>(head[i]);
    if (c == '\r') {
      if (i + 1 >= head.size() || head[i + 1] != '\n') return "a bare CR in the request head";
      ++i;
      line_start = true;
      continue;
    }
    if (c == '\n') return "a bare LF in the request head (lines end in CRLF)";
    if (line_start && (c == ' ' || c == '\t') && i > 0) return "obs-fold (a header line continued on the next line)";
    line_start = false;
    if (c == 0) return "a NUL byte in the request head";
    if ((c < 0x20 && c != '\t') || c == 0x7f) return "a control byte in the request head";
  }
  return "";
}

bool bare_lf(std::string_view bytes, std::size_t from) noexcept {
  for (auto i = bytes.find('\n', from); i != std::string_view::npos; i = bytes.find('\n', i + 1))
    if (i == 0 || bytes[i - 1] != '\r') return true;
  return false;
}

std::size_t missing_reason_space(std::string_view head) noexcept {
  constexpr std::size_t at = 12;  // after "HTTP/1.x NNN"
  if (head.size() < at + 2 || !head.starts_with("HTTP/1.") || head[8] != ' ') return 0;
  for (std::size_t i = 9; i < at; ++i)
    if (head[i] < '0' || head[i] > '9') return 0;
  return head.substr(at, 2) == "\r\n" ? at : 0;
}

HeadRefusal parse_request_head(std::string_view head, std::size_t max_fields, RequestParser& parser) {
  const auto bad = [](std::string why) { return HeadRefusal{400, std::move(why)}; };
  namespace http = boost::beast::http;
  if (auto why = check_raw_head(head); !why.empty()) return bad("malformed request: " + std::string(why));
  // The request line ends in the version, "HTTP/" DIGIT "." DIGIT, and
  // Beast reads 1.0 and 1.1 only. RFC 9110 2.5: a later minor version is
  // served as the highest this proxy speaks, 1.1 (and goes on as 1.1);
  // another major version is not HTTP/1 at all (RFC 9110 15.6.6).
  const auto line_end = head.find("\r\n");
  const auto version =
      line_end != std::string_view::npos && line_end >= 8 ? head.substr(line_end - 8, 8) : std::string_view();
  std::string as_11;  // a copy of the head, only for a later 1.x
  if (version.starts_with("HTTP/") && is_digit(version[5]) && version[6] == '.' && is_digit(version[7]) &&
      line_end > 8 && head[line_end - 9] == ' ') {
    if (version[5] != '1')
      return {505, std::string(version) + " is not served here: this proxy speaks HTTP/1.1 (for https://, send CONNECT)"};
    if (version[7] > '1') {
      as_11 = head;
      as_11[line_end - 1] = '1';
      head = as_11;
    }
  }
  boost::system::error_code ec;
  parser.put(boost::asio::buffer(head.data(), head.size()), ec);
  if (ec || !parser.is_header_done()) return bad("malformed request: " + (ec ? ec.message() : "incomplete head"));
  const auto& req = parser.get();
  std::size_t fields = 0, lengths = 0, encodings = 0, hosts = 0;
  for (const auto& f : req) {
    ++fields;
    lengths += f.name() == http::field::content_length;
    encodings += f.name() == http::field::transfer_encoding;
    hosts += f.name() == http::field::host;
  }
  if (fields > max_fields) return bad("too many header fields (limit " + std::to_string(max_fields) + ")");
  // RFC 9112 3.2: the proxy checks one Host, and an origin may read another.
  if (hosts > 1) return bad("several Host fields");
  if (lengths > 1) return bad("several Content-Length fields");
  // Beast takes a list of one value repeated ("5, 5"), which RFC 9110 8.6
  // allows a recipient to reject: a hop behind may read it another way.
  if (lengths && req[http::field::content_length].find_first_not_of("0123456789") != std::string_view::npos)
    return bad("a Content-Length that is not a single number");
  if (lengths && encodings) return bad("both Content-Length and Transfer-Encoding");
  if (encodings > 1 || (encodings && !boost::beast::iequals(req[http::field::transfer_encoding], "chunked")))
    return bad("a Transfer-Encoding other than a single final 'chunked'");
  // RFC 9110 7.6.1: Connection names fields meant for this hop alone, which
  // the proxy removes. Named there, a framing field or Host would reach the
  // origin removed: the body it announced read as the next request.
  for (auto [it, end] = req.equal_range(http::field::connection); it != end; ++it)
    for (const auto option : http::token_list(it->value()))
      for (const auto field : {http::field::content_length, http::field::transfer_encoding, http::field::host})
        if (boost::beast::iequals(option, http::to_string(field)))
          return bad("the Connection header lists " + std::string(http::to_string(field)) +
                     ", a field every hop must read (RFC 9110 7.6.1)");
  // RFC 9112 6.1: an HTTP/1.0 message with Transfer-Encoding has faulty
  // framing; a 1.0 parser behind or before us would read its body as the next
  // request.
  if (encodings && req.version() == 10) return bad("Transfer-Encoding in an HTTP/1.0 request");
  // RFC 9110 9.3.6: CONNECT has no content. Bytes after its head are tunnel
  // data, which a hop that honoured the framing field would read as a body.
  if (req.method() == http::verb::connect && (encodings || (lengths && req[http::field::content_length] != "0")))
    return bad("a CONNECT request with content (Content-Length or Transfer-Encoding)");
  return {};
}

TunnelRefusal tunnel_request_refusal(const RequestParser::value_type& req, std::string_view host, std::uint16_t port) {
  namespace http = boost::beast::http;
  const auto tunnel = [&] {
    return "a request in the tunnel to " + policy::authority(policy::Target{std::string(host), std::nullopt, port});
  };
  if (req.method() == http::verb::connect)
    return {tunnel() + " is a CONNECT; send CONNECT to the proxy itself", req.target()};
  const auto field = req.find(http::field::host);
  if (field == req.end()) return {tunnel() + " has no Host header; it must name the tunnel's target", {}};
  if (!names(field->value(), host, port))
    return {tunnel() + " names another host (Host: " + std::string(field->value()) +
                "); requests in a tunnel must name its target",
            field->value()};
  // An absolute-form target names a host too, which an origin may prefer
  // to Host (RFC 9112 3.2.2).
  const auto t = req.target();
  if (!t.starts_with("/") && t != "*") {
    const auto url = boost::urls::parse_absolute_uri(t);
    if (!url || !url->has_authority())
      return {tunnel() + " has a target that is neither a path nor a URL naming the tunnel's host: " + std::string(t),
              {}};
    if (!names(url->encoded_host_and_port(), host, port))
      return {tunnel() + " has a target that names another host: " + std::string(t), url->encoded_host_and_port()};
  }
  return {};
}

namespace {
namespace http = boost::beast::http;

// Fields a proxy must not forward (RFC 9110 7.6.1), besides those Connection lists.
constexpr http::field hop_by_hop[] = {http::field::connection,    http::field::keep_alive,
                                      http::field::proxy_connection, http::field::proxy_authorization,
                                      http::field::te,            http::field::trailer,
                                      http::field::upgrade};

}  // namespace

void strip_hop_by_hop(Fields& f) {
  // Names listed in Connection are hop-by-hop too. Kept as views into the
  // Connection fields, which therefore go last; then one pass over the
  // fields, not a lookup per name (this runs twice per request).
  // The framing fields stay, whatever Connection says: without them the
  // body would be read as what follows the message. (A request that lists
  // them was refused; this guards answers.)
  boost::container::small_vector<std::string_view, 8> listed;
  for (auto [it, end] = f.equal_range(http::field::connection); it != end; ++it)
    for (auto name : http::token_list(it->value())) listed.push_back(name);
  for (auto it = f.begin(); it != f.end();) {
    const auto name = it->name();
    const bool framing = name == http::field::content_length || name == http::field::transfer_encoding;
    const bool hop = std::find(std::begin(hop_by_hop), std::end(hop_by_hop), name) != std::end(hop_by_hop) ||
                     (!framing && std::any_of(listed.begin(), listed.end(), [&](std::string_view l) {
                       return boost::beast::iequals(l, it->name_string());
                     }));
    it = hop && name != http::field::connection ? f.erase(it) : std::next(it);
  }
  f.erase(http::field::connection);
}

bool keeps_alive(const Fields& f, unsigned version) noexcept {
  bool close = false, keep_alive = false;
  for (auto [it, end] = f.equal_range(http::field::connection); it != end; ++it)
    for (auto option : http::token_list(it->value())) {
      close |= boost::beast::iequals(option, "close");
      keep_alive |= boost::beast::iequals(option, "keep-alive");
    }
  return !close && (version >= 11 || keep_alive);
}

void add_via(Fields& f, unsigned version) {
  const std::string_view hop = version == 10 ? "1.0 sandgate" : "1.1 sandgate";
  if (f.count(http::field::via) == 0) {
    f.set(http::field::via, hop);
    return;
  }
  std::string joined;
  for (auto [it, end] = f.equal_range(http::field::via); it != end; ++it) joined.append(it->value()).append(", ");
  f.set(http::field::via, joined.append(hop));
}

std::string answer_status_refusal(unsigned status) {
  // Beast reads any three digits; RFC 9110 15: valid codes are 100 to 599.
  // One below would pass as an interim answer.
  if (status < 100 || status > 599)
    return "the origin's answer has status " + std::to_string(status) + ", outside 100-599";
  // Upgrade is hop-by-hop and never forwarded, so nothing asked for it:
  // what follows would be another protocol on a stream read as HTTP.
  if (status == 101) return "the origin switched protocols (101) though the proxy does not forward Upgrade";
  return {};
}

void prepare_interim(ResponseParser::value_type& res) {
  res.erase(http::field::content_length);
  res.erase(http::field::transfer_encoding);
  strip_hop_by_hop(res);
  add_via(res, res.version());
  res.version(11);
}

AnswerHead prepare_answer(ResponseParser& rp, bool head_request, bool client_http11, bool keep) {
  auto& res = rp.get();
  const unsigned status = res.result_int();
  const bool bodiless = head_request || status == 204 || status == 304;
  // Both framings: the coding would override the length (RFC 9112 6.3),
  // and the message "ought to be handled as an error", a sign of response
  // splitting. (Beast refuses a length beside chunked; this is the rest,
  // and any answer without a body.)
  if (res.count(http::field::content_length) && res.count(http::field::transfer_encoding))
    return {"the origin's answer has both Content-Length and Transfer-Encoding (RFC 9112 6.3)", false};
  // Codings the proxy cannot pass on as they are: a body whose codings do
  // not end in chunked ends at close, and chunking it again is forbidden
  // (RFC 9112 7); an HTTP/1.0 client may get no Transfer-Encoding (6.1),
  // and without it a coding other than chunked is lost.
  // An HTTP/1.0 answer has no transfer codings: one that names any has
  // faulty framing (RFC 9112 6.1), whatever the proxy could make of it.
  // Chunked only when the parser, which frames the body the proxy relays,
  // and the field, which the client reads, both say so: a list with bytes
  // no token may hold ("chunked\x97") is chunked to one and not the other.
  if (const auto codings = res.count(http::field::transfer_encoding);
      codings && (res.version() == 10 ||
                  (!bodiless && (!(res.chunked() && rp.chunked()) || (!client_http11 && (codings > 1 || !boost::beast::iequals(
                                                                           res[http::field::transfer_encoding],
                                                                           "chunked"))))))) {
    std::string why = res.version() == 10 ? "the origin's HTTP/1.0 answer has a transfer coding, which HTTP/1.0 "
                                            "does not have (faulty framing)"
                                          : "the origin's answer has a transfer coding the proxy cannot pass on";
    if (!client_http11 && res.version() != 10) why += " to an HTTP/1.0 client";
    why += ": Transfer-Encoding: ";
    why += res[http::field::transfer_encoding];
    return {std::move(why), false};
  }
  // A length repeated ("5, 5", or in two fields; RFC 9110 8.6) goes on as
  // the one number it is: a client may read the repeats another way.
  if (const auto length = rp.content_length();
      length && (res.count(http::field::content_length) > 1 ||
                 res[http::field::content_length].find(',') != std::string_view::npos))
    res.content_length(*length);
  // A 204 has no content and no length, and neither it nor a 304 is sent
  // with a transfer coding (RFC 9110 8.6, RFC 9112 6.1): a client that took
  // such a field for framing would wait for a body that never comes. (A
  // 304's Content-Length describes the resource, and stays.)
  if (status == 204) res.erase(http::field::content_length);
  if (status == 204 || status == 304) res.erase(http::field::transfer_encoding);
  AnswerHead out{{}, keeps_alive(res, res.version())};
  strip_hop_by_hop(res);
  add_via(res, res.version());
  if (!client_http11) {
    // An HTTP/1.0 client must not get chunked (RFC 9112 6.1): a body
    // without a length goes as it is, and closing the connection (which
    // ends every HTTP/1.0 exchange) ends it. Nor any Transfer-Encoding,
    // not even in an answer to HEAD.
    if (!bodiless && res.chunked()) res.chunked(false);  // (which also drops any Content-Length)
    res.erase(http::field::transfer_encoding);
  } else if (!bodiless && !res.has_content_length() && !res.chunked()) {
    res.chunked(true);  // close-delimited from the origin: chunked, the client kept
  }
  res.version(11);  // an intermediary sends its own HTTP version
  res.keep_alive(keep);
  return out;
}

bool switches_out_of_sight(std::string_view upgrade) noexcept {
  bool named = false;
  while (!upgrade.empty()) {
    const auto comma = upgrade.find(',');
    auto protocol = upgrade.substr(0, comma);
    upgrade = comma == std::string_view::npos ? std::string_view() : upgrade.substr(comma + 1);
    while (!protocol.empty() && (protocol.front() == ' ' || protocol.front() == '\t')) protocol.remove_prefix(1);
    while (!protocol.empty() && (protocol.back() == ' ' || protocol.back() == '\t')) protocol.remove_suffix(1);
    if (protocol.empty()) continue;
    named = true;
    // protocol-name ["/" protocol-version], each a token; anything else is
    // a protocol nobody can tell.
    const auto slash = protocol.find('/');
    const auto name = protocol.substr(0, slash);
    const auto version = slash == std::string_view::npos ? std::string_view("v") : protocol.substr(slash + 1);
    if (!is_token(name) || !is_token(version)) return true;
    if (equals_lower(name, "h2c") || equals_lower(name, "tls")) return true;
  }
  return !named;
}

}  // namespace sandgate::proxy::detail
