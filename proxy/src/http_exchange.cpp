// A session's absolute-form requests: the target and Host checked, the
// request sent on in origin form with its body streamed, the origin's answer
// (interim ones included) relayed back, the connection kept when both sides
// allow it.
#include <boost/asio/write.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http.hpp>
#include <boost/url/parse.hpp>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstring>

#include "answers.h"
#include "head_check.h"
#include "session_impl.h"

namespace sandgate::proxy::detail {
namespace {

// A body this small is read into the buffer (when already here) and sent with
// its head; a larger one is spliced.
constexpr std::uint64_t small_body = 16 * 1024;

// Whether a body's relay failed on its framing (a bad chunk size, extension
// or line end), not on the connection.
bool malformed_body(const boost::system::error_code& ec) {
  return ec.category() == http::make_error_code(http::error::bad_chunk).category() &&
         ec != http::error::end_of_stream && ec != http::error::partial_message;
}

// Puts the space that missing_reason_space finds wanting into the buffered
// answer, so that its head can be read again. False when none is wanting,
// or the buffer has no room for it.
bool mend_status_line(ReadBuffer& b) {
  const auto at = missing_reason_space({static_cast<const char*>(b.data().data()), b.size()});
  if (at == 0 || b.size() >= b.max_size()) return false;
  b.prepare(1);
  b.commit(1);
  auto* bytes = static_cast<char*>(b.data().data());
  std::memmove(bytes + at + 1, bytes + at, b.size() - 1 - at);
  bytes[at] = ' ';
  return true;
}

}  // namespace

std::string Session::take_http_target(http::request<http::buffer_body, Fields>& req) {
  auto url = boost::urls::parse_absolute_uri(req.target());
  if (req.target().starts_with("/") || req.target() == "*")
    return "a forward proxy needs an absolute-form target, as GET http://host/path";
  if (!url) return "the request target is not a valid absolute URI, as http://host/path?query";
  if (url->scheme_id() != boost::urls::scheme::http)
    return "only http:// targets are forwarded; https, wss and the rest go through a tunnel (CONNECT host:port)";
  // Boost.URL 1.81 reads "http://1.2.3.4.:80/x" as host 1.2.3.4 and path
  // ".:80/x"; an http URL's path is empty or starts with '/', so anything
  // else is a misparse and refused.
  if (const auto path = url->encoded_path(); !path.empty() && !path.starts_with("/"))
    return "the target's authority could not be parsed";
  if (url->has_userinfo()) return "userinfo (user@host) is not allowed in a target";
  // Copies into members that keep their capacity: url views req.target().
  requested_ = url->encoded_host_and_port();
  audit_.requested = requested_;
  origin_form_ = url->encoded_target();
  // An empty path is "/" in origin form (RFC 9112 3.2.1), also before a
  // query; but OPTIONS to a bare authority asks about the server as a
  // whole, which origin form spells "*" (3.2.4).
  if (origin_form_.empty() && req.method() == http::verb::options) origin_form_ = "*";
  else if (url->encoded_path().empty()) origin_form_.insert(0, 1, '/');
  auto target = policy::parse_target(requested_, 80);
  if (!target) return "bad target host: " + std::string(policy::describe(target.error()));
  // RFC 9112 3.2: an HTTP/1.1 request has a Host field, and with a target
  // that names a host, the same host. One that names another destination
  // is a confused-deputy attempt.
  if (const auto host_field = req.find(http::field::host); host_field != req.end()) {
    // (The same bytes as the target's authority, as most clients send,
    // name the same host: no second parse.)
    if (host_field->value() != requested_) {
      auto h = policy::parse_target(host_field->value(), 80);
      if (!h || h->host != target->host || h->port != target->port)
        return host_field->value().empty() ? "an empty Host header, though the target names a host"
                                           : "the Host header names another host than the request target";
    }
  } else if (req.version() == 11) {
    return "an HTTP/1.1 request needs a Host header (RFC 9112 3.2)";
  }
  http_target_ = std::move(*target);
  req.target(origin_form_);
  // The Host the origin gets names what the policy checked, in its normal
  // form (lower case, no trailing dot, the canonical address), with the
  // port unless it is 80: no spelling the policy read one way and the
  // origin might read another.
  const bool v6 = http_target_.address && !http_target_.address->is_v4();
  host_.assign(v6 ? "[" : "").append(http_target_.host).append(v6 ? "]" : "");
  if (http_target_.port != 80) {
    char digits[8];
    const auto end = std::to_chars(digits, digits + sizeof digits, http_target_.port).ptr;
    host_.append(":").append(digits, end);
  }
  return {};
}

asio::awaitable<bool> Session::serve_http(RequestParser& parser, ReadBuffer& buf) {
  auto& req = parser.get();
  if (auto why = take_http_target(req); !why.empty()) {
    co_await bad_request(why);
    co_return false;
  }
  const auto& target = http_target_;
  allowed_.clear();
  if (!co_await decide(target, allowed_)) co_return false;
  if ((req.method() == http::verb::options || req.method() == http::verb::trace) &&
      req.count(http::field::max_forwards) && !co_await count_hop(parser))
    co_return false;
  // A GET, HEAD or OPTIONS without a body may be sent again (RFC 9110
  // 9.2.2) when a kept upstream connection turns out to be closed. Any
  // other request goes only on a connection just seen open (a peek: one
  // system call).
  const auto method = req.method();
  const bool resendable =
      (method == http::verb::get || method == http::verb::head || method == http::verb::options) && parser.is_done();
  // Reuse the upstream connection of the previous request only for the same
  // target, and only if its address passed this request's checks too.
  const bool reuse = upstream_open_ && upstream_host_ == target.host && upstream_port_ == target.port &&
                     std::find(allowed_.begin(), allowed_.end(), upstream_addr_) != allowed_.end() &&
                     (resendable || upstream_still_open());
  if (!reuse) {
    upstream_open_ = false;
    if (!co_await dial(allowed_, target.port)) co_return false;
    upstream_host_ = target.host;
    upstream_port_ = target.port;
  } else {
    audit_.connected = true;
    audit_.connect_us = 0;  // the kept-alive connection
  }
  if (!co_await still_allowed(target, allowed_)) co_return false;
  stage_ = Stage::relay;  // from here a reload rechecks this exchange
  co_await log_decision(0, nullptr);

  // RFC 9112 9.3: a proxy keeps no connection alive for an HTTP/1.0
  // client, whose keep-alive an HTTP/1.0 hop before may have passed on.
  const bool http11 = req.version() == 11;
  const Asked asked{asked_head_, http11, http11 && keeps_alive(req, req.version())};
  // Expect: 100-continue goes on to the origin (RFC 9110 10.1.1), whose
  // 100 or refusal comes back before the body is sent; the expectation
  // of an HTTP/1.0 client is ignored (it cannot read a 100).
  expecting_ = Expecting::none;
  if (beast::iequals(req[http::field::expect], "100-continue")) {
    if (!asked.http11) req.erase(http::field::expect);
    else if (!parser.is_done()) expecting_ = Expecting::awaiting;
  }
  strip_hop_by_hop(req);
  req.set(http::field::host, host_);
  add_via(req, req.version());
  req.keep_alive(true);
  req.version(11);
  bool may_resend = reuse && resendable;
  for (;;) {
    stage_ = Stage::relay;
    bool request_complete = false;
    std::uint64_t sent = 0;
    auto answered = Answered::again;
    if (auto ec = co_await relay_body(client_, buf, parser, upstream_, request_complete, sent)) {
      if (malformed_body(ec) && !timed_out_) {
        // A bad chunk: the origin has a cut-off request and its connection
        // goes; the client, which has had no byte of an answer, a 400.
        boost::system::error_code ignored;
        upstream_open_ = false;
        upstream_.close(ignored);
        co_await log_close(sent, 0, netlog::EndReason::error, 400);
        // (The message is built before the co_await: GCC 12 destroys a
        // temporary of a conditional inside a co_await expression twice.)
        std::string why = "malformed request body: ";
        if (ec == http::error::buffer_overflow)
          why += "a chunk's size line (with its extensions) is over " + std::to_string(ctx_.limits.head_bytes) +
                 " bytes (--head-bytes)";
        else
          why += ec.message();
        co_await answer(error_answer(400, "bad-request", why));
        co_return false;
      }
      if (end_ == netlog::EndReason::reload) {
        // With the request under way: what the client still sends of its
        // body is taken and dropped after the 403, as for an early answer.
        co_await refuse_after_reload(sent);
        co_await linger();
        co_return false;
      }
      if (!timed_out_ && (expecting_ == Expecting::refused || upstream_has_answer())) {
        // The origin answered before it took the whole body (a 401, a 413;
        // or a 417 or any final answer instead of a 100) and stopped
        // reading: the client gets that answer, then the connection ends,
        // since what it may still send of the body has nowhere to go.
        co_await relay_response({asked.head, asked.http11, false}, sent, false, req.get_allocator());
        co_await linger();
        co_return false;
      }
      if (!may_resend && !timed_out_ && end_ == netlog::EndReason::client_close && upstream_ended()) {
        // The origin closed or reset the connection with the body under
        // way and no answer: the client, whose request is cut off, is told
        // so rather than left with a broken pipe or an empty reply.
        co_await log_close(sent, 0, netlog::EndReason::upstream_close, 502);
        std::string why = "the origin closed the connection without an answer, after the proxy had sent it " +
                          std::to_string(sent) + " bytes of the request body";
        co_await answer(error_answer(502, "bad-upstream-response", why));
        co_await linger();
        co_return false;
      }
      if (!may_resend || timed_out_ || end_ != netlog::EndReason::client_close) {
        co_await log_close(sent, 0, failure_end(), 0);
        co_return false;
      }
    } else {
      answered = co_await relay_response(asked, sent, may_resend, req.get_allocator());
    }
    if (answered != Answered::again) co_return answered == Answered::keep;
    // The kept connection was closed under it: dial afresh. On failure the
    // client has its answer (from dial); the decision needs its close.
    // (Inline on purpose: as a coroutine of its own, holding
    // `if (co_await dial(...)) co_return true;`, GCC 12 built code that
    // resumed the finished frame (SIGILL). Branch on an awaited value held
    // in a local, or on `!co_await`, as everywhere else here.)
    may_resend = false;
    upstream_open_ = false;
    if (!co_await dial(allowed_, target.port)) {
      co_await log_close(0, 0, netlog::EndReason::error, timed_out_ ? 504 : 502);
      co_return false;
    }
    // A reload since the decision, which a new dial may outlast too.
    if (!co_await still_allowed(target, allowed_)) {
      co_await log_close(0, 0, netlog::EndReason::reload, 403);
      co_return false;
    }
  }
}

asio::awaitable<bool> Session::count_hop(RequestParser& parser) {
  auto& req = parser.get();
  const auto value = req[http::field::max_forwards];
  std::uint32_t hops = 0;
  const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), hops);
  if (value.empty() || end != value.data() + value.size()) {
    co_await bad_request("Max-Forwards must be a number of hops");
    co_return false;
  }
  if (ec == std::errc::result_out_of_range) hops = UINT32_MAX;  // more hops than any path has
  if (hops > 0) {
    char digits[16];
    req.set(http::field::max_forwards,
            std::string_view(digits, std::to_chars(digits, digits + sizeof digits, hops - 1).ptr));
    co_return true;
  }
  // An OPTIONS asks about the proxy; a TRACE gets its request back as the
  // proxy received it, without fields that carry credentials (9.3.8).
  std::string body;
  if (req.method() == http::verb::trace) {
    body.append(req.method_string()).append(" http://").append(requested_);
    body.append(origin_form_).append(req.version() == 11 ? " HTTP/1.1\r\n" : " HTTP/1.0\r\n");
    for (const auto& f : req)
      if (f.name() != http::field::authorization && f.name() != http::field::proxy_authorization &&
          f.name() != http::field::cookie)
        body.append(f.name_string()).append(": ").append(f.value()).append("\r\n");
    body.append("\r\n");
  }
  std::string response = "HTTP/1.1 200 OK\r\nDate: " + http_date() + "\r\n";
  if (!body.empty()) response += "Content-Type: message/http\r\n";
  response += "Connection: close\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  co_await log_decision(200, nullptr);
  co_await log_close(0, 0, netlog::EndReason::complete, 200);
  co_await answer(response);
  if (!parser.is_done()) co_await linger();  // a body nobody reads
  co_return false;
}

asio::awaitable<std::optional<Session::Answered>> Session::read_final_head(ParserPtr<ResponseParser>& rp, Asked asked,
                                                                           std::uint64_t sent, bool may_resend,
                                                                           HeadAllocator heads) {
  for (;;) {
    rp = make_parser<ResponseParser>(heads);
    rp->header_limit(static_cast<std::uint32_t>(ctx_.limits.head_bytes));
    rp->body_limit(boost::none);
    if (asked.head) rp->skip(true);
    stage_ = Stage::answer;
    timed_out_ = false;
    arm(ctx_.limits.idle_timeout);
    // A page to read into: Beast would start an empty buffer at 512 bytes,
    // and a small answer would take two reads.
    upbuf_.reserve(page_size);
    auto [ec, n] = co_await http::async_read_header(upstream_, upbuf_, *rp, token);
    stage_ = Stage::relay;
    if (ec && timed_out_) {
      co_await log_close(sent, 0, netlog::EndReason::idle_timeout, 504);
      co_await answer(error_answer(504, "upstream-timeout",
                                   "the origin took the request but sent no answer within " +
                                       std::to_string(ctx_.limits.idle_timeout.count()) + " ms (--idle-timeout)"));
      co_return Answered::close;
    }
    if (ec && end_ == netlog::EndReason::reload) {
      co_await refuse_after_reload(sent);
      co_return Answered::close;
    }
    if (ec && end_ != netlog::EndReason::client_close) {
      co_await log_close(sent, 0, end_, 0);  // shutdown ended it; the client is gone
      co_return Answered::close;
    }
    // Nothing of it was taken: read it again with the space in.
    if (ec == http::error::bad_status && mend_status_line(upbuf_)) continue;
    if (ec && may_resend && upbuf_.size() == 0 &&
        (ec == http::error::end_of_stream || ec == asio::error::connection_reset))
      co_return Answered::again;
    if (ec) {
      co_await log_close(sent, 0, ec == http::error::end_of_stream ? netlog::EndReason::upstream_close
                                                                    : netlog::EndReason::error,
                         502);
      co_await answer(
          error_answer(502, "bad-upstream-response", "the origin's answer was not valid HTTP: " + ec.message()));
      co_return Answered::close;
    }
    const unsigned status = rp->get().result_int();
    if (auto why = answer_status_refusal(status); !why.empty()) {
      co_await log_close(sent, 0, netlog::EndReason::error, 502);
      co_await answer(error_answer(502, "bad-upstream-response", why));
      co_return Answered::close;
    }
    if (status >= 200) co_return std::nullopt;
    // An interim answer (RFC 9110 15.2): forwarded, except to an HTTP/1.0
    // client, which cannot read one.
    if (asked.http11 && !co_await relay_interim(rp->get())) {
      co_await log_close(sent, 0, netlog::EndReason::client_close, 0);
      co_return Answered::close;
    }
  }
}

asio::awaitable<Session::Answered> Session::relay_response(Asked asked, std::uint64_t sent, bool may_resend,
                                                           HeadAllocator heads) {
  ParserPtr<ResponseParser> rp;
  if (const auto ended = co_await read_final_head(rp, asked, sent, may_resend, heads)) co_return *ended;
  auto& res = rp->get();
  const unsigned status = res.result_int();
  const bool keep = asked.keep_alive;
  const auto prepared = prepare_answer(*rp, asked.head, asked.http11, keep);
  if (!prepared.why.empty()) {
    co_await log_close(sent, 0, netlog::EndReason::error, 502);
    co_await answer(error_answer(502, "bad-upstream-response", prepared.why));
    co_return Answered::close;
  }
  const bool origin_keeps = prepared.origin_keeps;
  bool response_complete = false;
  std::uint64_t received = 0;
  replying_ = true;
  const auto ec = co_await relay_body(upstream_, upbuf_, *rp, client_, response_complete, received);
  replying_ = false;
  if (ec) {
    co_await log_close(sent, received, failure_end(), static_cast<std::uint16_t>(status));
    co_return Answered::close;
  }
  // A reload that came as the answer's last bytes left ended nothing.
  if (end_ == netlog::EndReason::reload) end_ = netlog::EndReason::client_close;
  co_await log_close(sent, received, keep ? netlog::EndReason::complete : netlog::EndReason::client_close,
                     static_cast<std::uint16_t>(status));
  // Bytes past the response (a misbehaving origin) mean the stream is not
  // reusable, and neither is one whose answer ended by closing.
  upstream_open_ = origin_keeps && !rp->need_eof() && (response_complete || rp->is_done()) && upbuf_.size() == 0 &&
                   upstream_.is_open();  // (a reload may have closed it)
  if (!upstream_open_) {
    boost::system::error_code ignored;
    upstream_.close(ignored);
  }
  // The read buffer goes back to the thread: an idle keep-alive connection
  // holds none. (A stream kept open has nothing in it, as checked above;
  // what is left of a closed one is nobody's answer.)
  upbuf_.clear();
  upbuf_.shrink_to_fit();
  if (head_.capacity() > 4096) head_.shrink_to_fit();  // a few KiB, not a large head's worth
  co_return keep ? Answered::keep : Answered::close;
}

asio::awaitable<bool> Session::await_continue() {
  stage_ = Stage::expect;
  timed_out_ = false;
  arm(ctx_.limits.continue_timeout);
  for (;;) {
    // Enough of the status line ("HTTP/1.1 100") to tell a 1xx from a final answer.
    constexpr std::size_t status_end = 12;
    while (upbuf_.size() < status_end) {
      auto [ec, n] = co_await upstream_.async_read_some(upbuf_.prepare(page_size), token);
      upbuf_.commit(n);
      if (ec && timed_out_ && upbuf_.size() == 0) {
        timed_out_ = false;
        stage_ = Stage::relay;
        expecting_ = Expecting::none;
        arm(ctx_.limits.idle_timeout);
        co_return true;
      }
      if (ec) break;  // relay_response reports what there is
    }
    timed_out_ = false;
    stage_ = Stage::answer;
    arm(ctx_.limits.idle_timeout);
    const std::string_view status(static_cast<const char*>(upbuf_.data().data()), upbuf_.size());
    if (status.size() < status_end || !status.starts_with("HTTP/1.") || status[9] != '1' ||
        status.substr(9, 3) == "101") {
      // A final answer, or a 101 or something not HTTP, which relay_response refuses.
      expecting_ = Expecting::refused;
      co_return false;
    }
    // An interim answer: on to the client (which is HTTP/1.1, since it
    // expects). A 100 means: send the body; any other (103) means wait on.
    // (Rare: its fields come from the heap.)
    ResponseParser interim;
    interim.header_limit(static_cast<std::uint32_t>(ctx_.limits.head_bytes));
    auto [ec, n] = co_await http::async_read_header(upstream_, upbuf_, interim, token);
    if (ec || !co_await relay_interim(interim.get())) {
      expecting_ = Expecting::refused;  // relay_response reports the origin's or the client's failure
      co_return false;
    }
    if (interim.get().result_int() == 100) {
      stage_ = Stage::relay;
      expecting_ = Expecting::none;
      co_return true;
    }
    stage_ = Stage::expect;
    arm(ctx_.limits.continue_timeout);
  }
}

asio::awaitable<bool> Session::relay_interim(http::response<http::buffer_body, Fields>& res) {
  prepare_interim(res);
  serialize_head(res);
  auto [ec, n] = co_await asio::async_write(client_, head_.data(), token);
  co_return !ec;
}

template <bool isRequest>
asio::awaitable<boost::system::error_code> Session::relay_body(Socket& in, ReadBuffer& inbuf,
                                                               HeadParser<isRequest>& p, Socket& out, bool& complete,
                                                               std::uint64_t& moved) {
  complete = false;
  moved = 0;
  // (No body at all, as for most requests, takes the sized path: length 0.)
  if (!p.chunked() && (p.is_done() || p.content_length())) return relay_sized_body(in, inbuf, p, out, complete, moved);
  return relay_chunked_body(in, inbuf, p, out, complete, moved);
}

template <bool isRequest>
void Session::serialize_head(const http::message<isRequest, http::buffer_body, Fields>& msg) {
  head_.clear();
  const auto first_line = [&] {
    if constexpr (isRequest) return msg.method();
    else return msg.result_int();
  }();
  const Fields::writer w(msg.base(), msg.version(), first_line);
  head_.commit(asio::buffer_copy(head_.prepare(beast::buffer_bytes(w.get())), w.get()));
}

template <bool isRequest>
asio::awaitable<boost::system::error_code> Session::relay_sized_body(Socket& in, ReadBuffer& inbuf,
                                                                     HeadParser<isRequest>& p, Socket& out,
                                                                     bool& complete, std::uint64_t& moved) {
  const std::uint64_t length = p.is_done() ? 0 : *p.content_length();
  auto remaining = length;
  if (remaining > inbuf.size() && remaining <= small_body) {
    // Part of a small body came with the head: take the rest if it is
    // already here, so the whole message leaves in one write. MSG_DONTWAIT,
    // not Asio's read_some: that one polls until data comes, and would
    // stop this thread for a client that pauses.
    const auto want = std::min(static_cast<std::size_t>(remaining) - inbuf.size(), inbuf.max_size() - inbuf.size());
    if (want > 0) {
      const auto room = inbuf.prepare(want);
      const ssize_t n = ::recv(in.native_handle(), room.data(), room.size(), MSG_DONTWAIT);
      if (n > 0) inbuf.commit(static_cast<std::size_t>(n));
    }
  }
  arm(ctx_.limits.idle_timeout);
  serialize_head(p.get());
  if constexpr (isRequest) {
    if (expecting_ == Expecting::awaiting) {
      // The head alone, then the body only once the origin asks for it.
      auto [hec, hn] = co_await asio::async_write(out, head_.data(), token);
      if (hec) co_return hec;
      if (!co_await await_continue()) co_return asio::error::make_error_code(asio::error::operation_aborted);
      head_.clear();
    }
  }
  const auto first = static_cast<std::size_t>(std::min<std::uint64_t>(inbuf.size(), remaining));
  // The head and the body bytes already read leave in one write: a small
  // message is one segment and one wakeup of the reader, not two.
  const std::array<asio::const_buffer, 2> message{head_.data(), asio::buffer(inbuf.data().data(), first)};
  auto [wec, m] = co_await asio::async_write(out, message, token);
  if (wec) co_return wec;
  inbuf.consume(first);
  remaining -= first;
  arm(ctx_.limits.idle_timeout);
  moved = first;
  if (remaining > 0 && !co_await splice_body(in, out, remaining, [this] { arm(ctx_.limits.idle_timeout); })) {
    moved = length - remaining;
    co_return asio::error::make_error_code(asio::error::connection_aborted);
  }
  moved = length;
  complete = true;
  co_return boost::system::error_code{};
}

template <bool isRequest>
asio::awaitable<boost::system::error_code> Session::relay_chunked_body(Socket& in, ReadBuffer& inbuf,
                                                                       HeadParser<isRequest>& p, Socket& out,
                                                                       bool& complete, std::uint64_t& moved) {
  http::serializer<isRequest, http::buffer_body, Fields> sr{p.get()};
  auto [hec, hn] = co_await http::async_write_header(out, sr, token);
  if (hec) co_return hec;
  if constexpr (isRequest) {
    if (expecting_ == Expecting::awaiting && !co_await await_continue())
      co_return asio::error::make_error_code(asio::error::operation_aborted);
  }
  // Invariant: a chunked body moves through this fixed buffer, whatever its
  // size. On the heap, not in the frame: Asio recycles only small frames.
  constexpr std::size_t chunk_size = 16 * 1024;
  const auto chunk = std::make_unique_for_overwrite<char[]>(chunk_size);
  do {
    arm(ctx_.limits.idle_timeout);
    if (!p.is_done()) {
      p.get().body().data = chunk.get();
      p.get().body().size = chunk_size;
      // What has come, not a full buffer: a body that streams (server-sent
      // events, a log tail, a slow upload) passes on as it arrives; one
      // that comes fast still moves in full buffers.
      auto ec = take_ready(in, inbuf, p);
      if (!ec && p.get().body().size == chunk_size && !p.is_done()) {
        // Nothing here yet: wait for some.
        auto [rec, n] = co_await http::async_read_some(in, inbuf, p, token);
        ec = rec;
        if (!ec) ec = take_ready(in, inbuf, p);
      }
      if (ec && ec != http::error::need_buffer) co_return ec;
      const auto got = chunk_size - p.get().body().size;
      // A chunk's size line alone: nothing to pass on yet.
      if (got == 0 && !p.is_done()) continue;
      moved += got;
      // (An empty buffer would be written as a chunk of size 0, which is
      // the last chunk: with no bytes, no buffer.)
      p.get().body().data = got ? chunk.get() : nullptr;
      p.get().body().size = got;
      p.get().body().more = !p.is_done();
    } else {
      p.get().body().data = nullptr;
      p.get().body().size = 0;
    }
    auto [wec, m] = co_await http::async_write(out, sr, token);
    if (wec && wec != http::error::need_buffer) co_return wec;
  } while (!p.is_done() && !sr.is_done());
  complete = p.is_done();
  co_return boost::system::error_code{};
}

template <bool isRequest>
boost::system::error_code Session::take_ready(Socket& in, ReadBuffer& inbuf, HeadParser<isRequest>& p) {
  boost::system::error_code ec;
  p.eager(true);  // a put parses all it can, not one chunk piece
  while (!p.is_done() && p.get().body().size > 0) {
    if (inbuf.size() > 0) {
      inbuf.consume(p.put(inbuf.data(), ec));
      // Part of a chunk line: more may be here, unless the line has ended
      // in a bare LF, which Beast would wait on past it for a CR.
      if (ec == http::error::need_more)
        ec = bare_lf({static_cast<const char*>(inbuf.data().data()), inbuf.size()}, 0)
                 ? http::error::bad_chunk
                 : boost::system::error_code{};
      if (ec || p.is_done() || p.get().body().size == 0) break;  // a framing error, done, or full
    }
    const auto room = std::min<std::size_t>(inbuf.max_size() - inbuf.size(), 16 * 1024);
    if (room == 0) break;  // a line longer than the buffer: the next read reports it
    const auto space = inbuf.prepare(room);
    const ssize_t n = ::recv(in.native_handle(), space.data(), space.size(), MSG_DONTWAIT);
    if (n <= 0) break;  // nothing yet; an end or an error shows on the next read
    inbuf.commit(static_cast<std::size_t>(n));
  }
  p.eager(false);
  return ec;
}

}  // namespace sandgate::proxy::detail
