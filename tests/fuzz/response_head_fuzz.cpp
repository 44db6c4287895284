// An origin's answer head on arbitrary bytes, through what the proxy does
// with it: the missing reason's space put in, Beast's parser, the status
// check, then the head made ready for the client (prepare_interim or
// prepare_answer). No crash, and every head that goes on is one the client
// reads with exactly one framing, the one the body is relayed by:
// - it parses again, as HTTP/1.1, with its Via;
// - at most one Content-Length, a plain number equal to the origin's length,
//   and never beside Transfer-Encoding;
// - a Transfer-Encoding only to an HTTP/1.1 client, and (unless it answers
//   HEAD) ending in chunked;
// - no framing field on a 1xx or a 204, no Transfer-Encoding on a 304;
// - no hop-by-hop field, and a Connection that says only close or keep-alive;
// - an answer with a body and no framing ends with its connection.
// The first byte picks the request it answers: HEAD or not, an HTTP/1.1
// client or 1.0, a kept connection or not.
#include <boost/asio/buffer.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/rfc7230.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "head_check.h"

namespace http = boost::beast::http;
using namespace sandgate::proxy::detail;

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

// The head as the proxy sends it (Session::serialize_head).
std::string serialized(const ResponseParser::value_type& res) {
  const Fields::writer w(res.base(), res.version(), res.result_int());
  return boost::beast::buffers_to_string(w.get());
}

void check_hop_by_hop_gone(const ResponseParser::value_type& res) {
  for (const auto field : {http::field::keep_alive, http::field::proxy_connection, http::field::proxy_authorization,
                           http::field::te, http::field::trailer, http::field::upgrade})
    check(res.count(field) == 0);
  for (auto [it, end] = res.equal_range(http::field::connection); it != end; ++it)
    for (const auto option : http::token_list(it->value()))
      check(boost::beast::iequals(option, "close") || boost::beast::iequals(option, "keep-alive"));
  const std::string_view via = res[http::field::via];
  check(via.ends_with("1.0 sandgate") || via.ends_with("1.1 sandgate"));
  check(res.version() == 11);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const bool head_request = data[0] & 1, client_http11 = data[0] & 2, keep = client_http11 && (data[0] & 4);
  std::string bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  const HeadArena heads;
  ParserPtr<ResponseParser> origin;
  boost::system::error_code ec;
  for (bool mended = false;; mended = true) {
    origin = make_parser<ResponseParser>(heads.allocator());
    origin->header_limit(16 * 1024);
    origin->body_limit(boost::none);
    if (head_request) origin->skip(true);
    ec = {};
    origin->put(boost::asio::buffer(bytes), ec);
    if (ec != http::error::bad_status || mended) break;
    // The proxy puts the missing space in and reads the head again.
    const auto at = missing_reason_space(bytes);
    if (at == 0) return 0;
    bytes.insert(at, " ");
  }
  auto& rp = *origin;
  if (ec || !rp.is_header_done()) return 0;  // a 502, or the proxy reads on
  auto& res = rp.get();
  const unsigned status = res.result_int();
  if (!answer_status_refusal(status).empty()) {
    check(status < 100 || status > 599 || status == 101);
    return 0;
  }
  const auto origin_length = rp.content_length();
  const bool origin_chunked = rp.chunked();
  bool bodiless = head_request || status == 204 || status == 304;
  if (status < 200) {
    prepare_interim(res);
    check(res.count(http::field::content_length) == 0 && res.count(http::field::transfer_encoding) == 0);
    bodiless = true;
  } else if (!prepare_answer(rp, head_request, client_http11, keep).why.empty()) {
    return 0;  // a 502
  }
  check_hop_by_hop_gone(res);

  // What the client reads.
  const auto text = serialized(res);
  const HeadArena again_heads;
  const auto again = make_parser<ResponseParser>(again_heads.allocator());
  auto& cp = *again;
  cp.header_limit(64 * 1024);
  cp.body_limit(boost::none);
  if (bodiless) cp.skip(true);
  cp.put(boost::asio::buffer(text), ec);
  check(!ec && cp.is_header_done());
  const auto& out = cp.get();
  check(out.result_int() == status && out.version() == 11);
  const auto lengths = out.count(http::field::content_length);
  const auto codings = out.count(http::field::transfer_encoding);
  check(lengths <= 1 && !(lengths && codings));
  if (lengths) {
    const std::string_view value = out[http::field::content_length];
    check(!value.empty() && value.find_first_not_of("0123456789") == std::string_view::npos);
    check(origin_length && cp.content_length() == origin_length);
  }
  if (codings) check(client_http11);
  if (status < 200 || status == 204) check(lengths == 0 && codings == 0);
  if (status == 304) check(codings == 0);
  if (!bodiless) {
    // The body goes by the framing the head names: the origin's length as
    // it is, or chunked (the origin's chunks, or a close-delimited body
    // chunked), or, for an HTTP/1.0 client only, until the connection ends.
    if (codings) check(cp.chunked() && (origin_chunked || !origin_length));
    else if (lengths) check(!origin_chunked);
    else check(!client_http11 && !keep && !out.keep_alive());
  }
  return 0;
}
