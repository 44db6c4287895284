#include "tunnel_http.h"

#include <algorithm>
#include <chrono>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http/error.hpp>

#include "answers.h"
#include "head_check.h"
#include "sandgate/policy/target.h"

namespace sandgate::proxy::detail {
namespace {

namespace asio = boost::asio;
namespace http = boost::beast::http;
constexpr auto token = asio::as_tuple(asio::use_awaitable);

// An answer's head only has to be followed, not judged: a larger limit
// than for requests, so that a big Set-Cookie or policy header passes as it
// did in an opaque tunnel.
constexpr std::size_t answer_head_bytes = 64 * 1024;

std::string_view view(const ReadBuffer& buf) { return {static_cast<const char*>(buf.data().data()), buf.size()}; }

// Where Beast puts the payload of a body it parses for its framing only.
// Invariant: written only inside one put(), which nothing else on this
// thread interleaves with; never read.
std::array<char, 16 * 1024>& body_scratch() {
  thread_local std::array<char, 16 * 1024> scratch;
  return scratch;
}

enum class BodyEnd : std::uint8_t { done, done_at_eof, cut, bad, failed };

// Sends buf's first n bytes and consumes them.
asio::awaitable<bool> send(Socket& out, ReadBuffer& buf, std::size_t n, std::uint64_t& bytes,
                           const std::function<void()>& on_activity) {
  // (Named, not written inline in an if: GCC 12 miscompiled that form of
  // this co_await, resuming a destroyed frame after a wait.)
  const asio::const_buffer bytes_out(buf.data().data(), n);
  const auto ec = co_await send_all(out, bytes_out);
  if (ec) co_return false;
  buf.consume(n);
  bytes += n;
  on_activity();
  co_return true;
}

// Reads what has come, up to `most` bytes, into buf. eof at the end.
// While nothing has come, an empty buf holds no memory, so a kept tunnel
// idle between messages costs no buffer; the next read into an empty buf
// takes a page of the thread's again, a larger one only as it must.
asio::awaitable<boost::system::error_code> read_more(Socket& in, ReadBuffer& buf, std::size_t most) {
  for (;;) {
    const auto want = buf.capacity() == 0 ? std::min(most, page_size) : most;
    const auto [ec, n] = try_receive(in, buf.prepare(want));
    if (ec != asio::error::would_block) {
      buf.commit(n);
      co_return ec;
    }
    if (buf.size() == 0) buf.shrink_to_fit();
    auto [wec] = co_await in.async_wait(asio::socket_base::wait_read, token);
    if (wec) co_return wec;
  }
}

enum class HeadStatus : std::uint8_t { ok, ended, too_large, bare_lf, failed };
struct Head {
  HeadStatus status;
  std::size_t size = 0;  // with the blank line
};

// Reads until the blank line that ends a head; what follows stays in buf.
asio::awaitable<Head> read_head(Socket& in, ReadBuffer& buf, std::size_t limit) {
  std::size_t searched = 0;
  for (;;) {
    const auto have = view(buf);
    const auto end = have.find("\r\n\r\n", searched);
    // A line ended by a bare LF is read one way here and maybe another
    // behind: deny on doubt, as for the proxy's own requests.
    if (bare_lf(have.substr(0, end == std::string_view::npos ? have.size() : end + 4), searched))
      co_return Head{HeadStatus::bare_lf};
    if (end != std::string_view::npos) co_return Head{HeadStatus::ok, end + 4};
    if (have.size() >= limit) co_return Head{HeadStatus::too_large};
    searched = have.size() < 3 ? 0 : have.size() - 3;
    const auto ec = co_await read_more(in, buf, std::min<std::size_t>(limit - have.size(), 16 * 1024));
    if (ec == asio::error::eof) co_return Head{HeadStatus::ended};
    if (ec) co_return Head{HeadStatus::failed};
  }
}

// Forwards the message whose head p has parsed: its head, the first `head`
// bytes of buf, then its body, framing and all, as it came. The head leaves
// with the body bytes already read, in one write: a small answer is one
// send, and one wakeup of the reader, as it was spliced. The rest of a body
// of known length is spliced; a chunked one, or one that ends with the
// connection, is put through the parser piece by piece (its payload lands in
// a scratch buffer nobody reads) and each piece goes on once parsed.
template <bool isRequest>
asio::awaitable<BodyEnd> forward_message(Socket& in, ReadBuffer& buf, std::size_t head, HeadParser<isRequest>& p,
                                         Socket& out, std::uint64_t& bytes,
                                         const std::function<void()>& on_activity) {
  if (p.is_done()) {
    // (Held in a local: GCC 12 miscompiles a co_await in a condition that
    // is not negated; see send.)
    const bool sent = co_await send(out, buf, head, bytes, on_activity);
    co_return sent ? BodyEnd::done : BodyEnd::failed;
  }
  if (const auto length = p.content_length_remaining(); length && !p.chunked()) {
    const auto now = static_cast<std::size_t>(std::min<std::uint64_t>(*length, buf.size() - head));
    if (!co_await send(out, buf, head + now, bytes, on_activity)) co_return BodyEnd::failed;
    std::uint64_t left = *length - now;
    if (left == 0) co_return BodyEnd::done;
    const auto before = left;
    const bool whole = co_await splice_body(in, out, left, on_activity);
    bytes += before - left;
    co_return whole ? BodyEnd::done : BodyEnd::cut;
  }
  auto& scratch = body_scratch();
  p.eager(true);
  std::size_t unsent = head;  // parsed, not yet sent: buf's first bytes
  for (;;) {
    if (buf.size() > unsent) {
      p.get().body().data = scratch.data();
      p.get().body().size = scratch.size();
      boost::system::error_code ec;
      const auto n = p.put(asio::buffer(buf.data() + unsent), ec);
      if (ec == http::error::need_buffer) ec = {};
      // Part of a chunk line: more may come, unless the line has ended in
      // a bare LF, which Beast would wait on past it for a CR.
      if (ec == http::error::need_more) {
        if (bare_lf(view(buf).substr(unsent + n), 0)) co_return BodyEnd::bad;
        ec = {};
      }
      if (ec) co_return BodyEnd::bad;
      unsent += n;
      if (p.is_done() || n == 0) {
        if (unsent > 0 && !co_await send(out, buf, unsent, bytes, on_activity)) co_return BodyEnd::failed;
        unsent = 0;
        if (p.is_done()) co_return BodyEnd::done;
      }
      if (n > 0) continue;
    } else if (unsent > 0) {
      if (!co_await send(out, buf, unsent, bytes, on_activity)) co_return BodyEnd::failed;
      unsent = 0;
    }
    auto ec = co_await read_more(in, buf, 16 * 1024);
    if (ec == asio::error::eof) {
      if (!p.need_eof()) co_return BodyEnd::cut;
      p.put_eof(ec);
      co_return ec ? BodyEnd::cut : BodyEnd::done_at_eof;
    }
    if (ec) co_return BodyEnd::failed;
  }
}

}  // namespace

HttpTunnel::HttpTunnel(const Socket::executor_type& ex, const TunnelTarget& target)
    : target_(target), executor_(ex) {}

asio::awaitable<void> HttpTunnel::wait_for_answers() {
  if (!signal_) signal_.emplace(executor_);
  signal_->expires_at(std::chrono::steady_clock::time_point::max());
  co_await signal_->async_wait(token);
}

asio::awaitable<HttpTunnel::End> HttpTunnel::refuse(Socket& client, int status, std::string_view code,
                                                    std::string_view why, std::string answer) {
  refused_ = true;
  // The answer goes only where the client reads it as the next one: when
  // every earlier request has had its answer whole. Else the tunnel just
  // closes, as for a refused ClientHello.
  if (answered_ != sent_) co_return End::refused;
  if (answer.empty()) answer = error_answer(status, code, why);
  auto [ec, n] = co_await asio::async_write(client, asio::buffer(answer), token);
  if (ec) co_return End::refused;
  refusal_status_ = static_cast<std::uint16_t>(status);
  // Closing a socket with unread bytes resets it, and the client may lose
  // the answer: take what has come (bounded) after a half-close.
  boost::system::error_code ignored;
  client.shutdown(asio::socket_base::shutdown_send, ignored);
  char sink[4096];
  for (std::size_t taken = 0; taken < (1u << 20);) {
    const ssize_t got = ::recv(client.native_handle(), sink, sizeof sink, MSG_DONTWAIT);
    if (got <= 0) break;
    taken += static_cast<std::size_t>(got);
  }
  co_return End::refused;
}

asio::awaitable<HttpTunnel::End> HttpTunnel::requests(Socket& client, Socket& upstream, ReadBuffer& buf,
                                                      std::uint64_t& bytes,
                                                      const std::function<void()>& on_activity) {
  for (;;) {
    while (sent_ - answered_ >= max_outstanding && !answers_over_) co_await wait_for_answers();
    const auto head = co_await read_head(client, buf, target_.head_bytes);
    switch (head.status) {
      case HeadStatus::ok: break;
      case HeadStatus::ended: co_return End::ended;
      case HeadStatus::failed: co_return End::failed;
      case HeadStatus::too_large:
        co_return co_await refuse(client, 431, "header-too-large",
                                  "the request head is larger than " + std::to_string(target_.head_bytes) + " bytes");
      case HeadStatus::bare_lf:
        co_return co_await refuse(client, 400, "bad-request",
                                  "a line of the head ends in a bare LF; HTTP lines end in CRLF");
    }
    HeadArena heads;
    auto p = make_parser<RequestParser>(heads.allocator());
    p->header_limit(static_cast<std::uint32_t>(target_.head_bytes));
    p->body_limit(boost::none);
    if (auto refused = parse_request_head(view(buf).substr(0, head.size), target_.header_count, *p); refused.status) {
      if (refused.status == 505)
        co_return co_await refuse(client, 505, "http-version-not-supported",
                                  "HTTP/2 in cleartext (h2c) cannot go through a tunnel: its requests name their hosts "
                                  "where the proxy cannot check them. Use https (TLS) or HTTP/1.1");
      co_return co_await refuse(client, refused.status, "bad-request", refused.why);
    }
    const auto& req = p->get();
    if (auto refused = tunnel_request_refusal(req, target_.host, target_.port); !refused.why.empty()) {
      const auto named = policy::parse_target(refused.named, target_.port);
      std::string answer;
      if (named && target_.host_mismatch_answer) answer = target_.host_mismatch_answer(*named, refused.why);
      co_return co_await refuse(client, 403, "host-mismatch", refused.why, std::move(answer));
    }
    const bool upgrade = req.find(http::field::upgrade) != req.end();
    asked_[sent_ % max_outstanding] = Asked{req.method() == http::verb::head, upgrade};
    const auto number = ++sent_;
    switch (co_await forward_message(client, buf, head.size, *p, upstream, bytes, on_activity)) {
      case BodyEnd::done: break;
      case BodyEnd::done_at_eof:  // (a request's body never ends with the connection)
      case BodyEnd::cut: co_return End::ended;
      case BodyEnd::bad: co_return co_await refuse(client, 400, "bad-request", "a malformed chunked body");
      case BodyEnd::failed: co_return End::failed;
    }
    // After a request that may switch protocols, the next bytes are HTTP
    // only if its answer is not a 101: wait for it.
    if (upgrade) {
      while (!switched_ && answered_ < number && !answers_over_) co_await wait_for_answers();
      if (switched_) co_return End::switched;
    }
  }
}

asio::awaitable<HttpTunnel::End> HttpTunnel::answers(Socket& upstream, Socket& client, ReadBuffer& buf,
                                                     std::uint64_t& bytes,
                                                     const std::function<void()>& on_activity) {
  const auto end = co_await follow_answers(upstream, client, buf, bytes, on_activity);
  // However this side ended, the requests side may be waiting on it.
  answers_over_ = true;
  wake();
  co_return end;
}

asio::awaitable<HttpTunnel::End> HttpTunnel::follow_answers(Socket& upstream, Socket& client, ReadBuffer& buf,
                                                            std::uint64_t& bytes,
                                                            const std::function<void()>& on_activity) {
  for (;;) {
    const auto head = co_await read_head(upstream, buf, answer_head_bytes);
    if (head.status == HeadStatus::ended) {
      // Bytes of a head cut off by the close still go to the client.
      if (buf.size() > 0 && !co_await send(client, buf, buf.size(), bytes, on_activity)) co_return End::failed;
      co_return End::ended;
    }
    if (head.status != HeadStatus::ok) co_return End::failed;
    HeadArena heads;
    // An answer nobody asked for (a 408 before a close, say) is read as one to a GET.
    const Asked asked = answered_ < sent_ ? asked_[answered_ % max_outstanding] : Asked{};
    const auto parse = [&](std::string_view text, boost::system::error_code& ec) {
      auto p = make_parser<ResponseParser>(heads.allocator());
      p->header_limit(static_cast<std::uint32_t>(answer_head_bytes));
      p->body_limit(boost::none);
      if (asked.head) p->skip(true);
      p->put(asio::buffer(text), ec);
      return p;
    };
    const std::string_view raw(static_cast<const char*>(buf.data().data()), head.size);
    boost::system::error_code ec;
    auto p = parse(raw, ec);
    if (const auto at = ec == http::error::bad_status ? missing_reason_space(raw) : 0) {
      // Read a copy with the space in; the answer goes on as it came.
      std::string mended(raw);
      mended.insert(at, 1, ' ');
      ec = {};
      p = parse(mended, ec);
    }
    if (ec || !p->is_header_done()) co_return End::failed;
    const int status = p->get().result_int();
    // A switch nobody asked for leaves no way to read what follows.
    if (status == 101 && !asked.upgrade) co_return End::failed;
    // A switch to a protocol whose requests name hosts out of the proxy's
    // sight (h2c, TLS) would carry them past the Host check: the client gets
    // a refusal for an answer instead, and the tunnel ends.
    if (status == 101) {
      const std::string_view upgrade = p->get()[http::field::upgrade];  // "" when absent
      if (switches_out_of_sight(upgrade)) {
        ++answered_;  // the refusal is this request's answer
        // Built before the co_await: GCC 12 overflowed the coroutine frame with
        // the temporaries of a conditional expression inside it (ASan saw it).
        std::string why = "the origin switched the tunnel to ";
        why.append(upgrade.empty() ? std::string_view("an unnamed protocol") : upgrade)
            .append(", whose requests name hosts the proxy cannot check. Use https (TLS), or HTTP/1.1 without that "
                    "Upgrade");
        co_return co_await refuse(client, 403, "upgrade-refused", why);
      }
    }
    if (status < 200) {
      if (!co_await send(client, buf, head.size, bytes, on_activity)) co_return End::failed;
      if (status != 101) continue;  // an interim answer; the final one follows
      switched_ = true;
      co_return End::switched;
    }
    switch (co_await forward_message(upstream, buf, head.size, *p, client, bytes, on_activity)) {
      case BodyEnd::done: break;
      case BodyEnd::done_at_eof:
      case BodyEnd::cut: co_return End::ended;
      case BodyEnd::bad:
      case BodyEnd::failed: co_return End::failed;
    }
    if (answered_ < sent_) ++answered_;
    wake();
  }
}

}  // namespace sandgate::proxy::detail
