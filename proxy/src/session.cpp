// The life of one client connection, top to bottom:
//   read the head (bounded, timed) -> refuse anything malformed (400)
//   -> decide the target: host phase, resolve, address phase (403 on deny)
//   -> dial only an address that passed -> CONNECT: 200 and splice both ways;
//      absolute-form: forward in origin form, stream the bodies, keep alive.
// Expected ends (EOF, reset, timeout) are outcomes, not errors.
#include "session.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http.hpp>
#include <boost/container/small_vector.hpp>
#include <boost/url/parse.hpp>

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <optional>

#include "answers.h"
#include "head_check.h"
#include "tunnel.h"

namespace sandgate::proxy::detail {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using Clock = std::chrono::steady_clock;
using tcp = asio::ip::tcp;
constexpr auto token = asio::as_tuple(asio::use_awaitable);
// A body this small is read into the buffer (when already here) and sent with
// its head; a larger one is spliced.
constexpr std::uint64_t small_body = 16 * 1024;

// Fields a proxy must not forward (RFC 9110 7.6.1), besides those Connection lists.
constexpr http::field hop_by_hop[] = {http::field::connection,    http::field::keep_alive,
                                      http::field::proxy_connection, http::field::proxy_authorization,
                                      http::field::te,            http::field::trailer,
                                      http::field::upgrade};

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
                       return beast::iequals(l, it->name_string());
                     }));
    it = hop && name != http::field::connection ? f.erase(it) : std::next(it);
  }
  f.erase(http::field::connection);
}

// Whether a body's relay failed on its framing (a bad chunk size, extension
// or line end), not on the connection.
bool malformed_body(const boost::system::error_code& ec) {
  return ec.category() == http::make_error_code(http::error::bad_chunk).category() &&
         ec != http::error::end_of_stream && ec != http::error::partial_message;
}

// Whether a message keeps its connection open (RFC 9112 9.3), reading every
// Connection field: Beast's keep_alive() reads only the first, so a "close"
// in a second one would be missed.
template <bool isRequest, class Body>
bool keeps_alive(const http::message<isRequest, Body, Fields>& m) {
  bool close = false, keep_alive = false;
  for (auto [it, end] = m.equal_range(http::field::connection); it != end; ++it)
    for (auto option : http::token_list(it->value())) {
      close |= beast::iequals(option, "close");
      keep_alive |= beast::iequals(option, "keep-alive");
    }
  return !close && (m.version() >= 11 || keep_alive);
}

// Adds this hop to Via (RFC 9110 7.6.3), naming the version of the message
// as received, after every Via field it came with, in order.
template <bool isRequest, class Body>
void add_via(http::message<isRequest, Body, Fields>& m) {
  const std::string_view hop = m.version() == 10 ? "1.0 sandgate" : "1.1 sandgate";
  if (m.count(http::field::via) == 0) {
    m.set(http::field::via, hop);
    return;
  }
  std::string joined;
  for (auto [it, end] = m.equal_range(http::field::via); it != end; ++it) joined.append(it->value()).append(", ");
  m.set(http::field::via, joined.append(hop));
}

asio::ip::address to_asio(const policy::Address& a) {
  if (a.is_v4()) return asio::ip::address_v4(a.v4());
  asio::ip::address_v6::bytes_type b;
  for (int i = 0; i < 8; ++i) {
    b[static_cast<std::size_t>(i)] = static_cast<unsigned char>(a.hi >> (56 - 8 * i));
    b[static_cast<std::size_t>(8 + i)] = static_cast<unsigned char>(a.lo >> (56 - 8 * i));
  }
  return asio::ip::address_v6(b);
}

policy::Address from_asio(const asio::ip::address& a) {
  if (a.is_v4()) return policy::Address::from_v4(a.to_v4().to_uint());
  const auto b = a.to_v6().to_bytes();
  return policy::Address::from_bytes(std::span<const std::uint8_t, 16>(b.data(), 16));
}

class Session : public std::enable_shared_from_this<Session>, public OpenConnection {
 public:
  Session(Socket client, ThreadContext& ctx, const Listener& listener, const netlog::Source* source,
          std::atomic<std::size_t>& open_tunnels, std::atomic<std::uint32_t>* client_slot)
      : source_(source),
        open_tunnels_(open_tunnels),
        client_slot_(client_slot),
        client_(std::move(client)),
        upstream_(client_.get_executor()),
        timer_(client_.get_executor()),
        ctx_(ctx),
        listener_(listener) {}

  void start(const asio::generic::stream_protocol::endpoint& peer) {
    ++ctx_.open_connections;
    ctx_.sessions.insert(this);
    const auto* sa = reinterpret_cast<const sockaddr*>(peer.data());
    if (sa->sa_family == AF_INET || sa->sa_family == AF_INET6) {
      tcp::endpoint tep;
      std::memcpy(tep.data(), peer.data(), std::min<std::size_t>(peer.size(), sizeof(sockaddr_in6)));
      client_addr_ = from_asio(tep.address());
      client_port_ = tep.port();
      client_is_ip_ = true;
    }
    ctx_.counters.connections.fetch_add(1, std::memory_order_relaxed);
    // The watchdog's first wait is for the head. (A deadline already past
    // would put the timer first in the reactor's queue: two timerfd_settime
    // calls a connection, a tenth of a short tunnel's CPU time in a VM.)
    arm(ctx_.limits.head_timeout);
    asio::co_spawn(client_.get_executor(), watchdog(shared_from_this()), asio::detached);
    asio::co_spawn(client_.get_executor(), run(shared_from_this()), asio::detached);
  }

 private:
  // dial: resolving or connecting; answer: waiting for the origin's answer.
  // In both a timeout fails the origin's side, and the client gets a 504.
  // expect: waiting for the origin's 100 (Continue); a timeout sends the body.
  enum class Stage : std::uint8_t { head, dial, relay, answer, expect, done };

  // --- Timeouts: one timer per connection, re-armed by moving a deadline. ---
  // A later deadline waits for the timer to fire (then it sleeps again); an
  // earlier one, a stage whose timeout is shorter than what is left, wakes
  // the watchdog now. That happens at most once per firing, not per request.
  void arm(std::chrono::milliseconds d) {
    deadline_ = Clock::now() + d;
    if (deadline_ < timer_.expiry()) timer_.cancel();
  }

  asio::awaitable<void> watchdog(std::shared_ptr<Session>) {
    std::optional<Clock::time_point> grace;  // the deadline of the last look before calling a relay idle
    while (stage_ != Stage::done) {
      timer_.expires_at(deadline_);
      co_await timer_.async_wait(token);
      if (stage_ == Stage::done) break;
      if (Clock::now() < deadline_) continue;
      if (stage_ == Stage::relay && grace != deadline_) {
        // Before calling a transfer idle: a body spliced in batches may have
        // bytes waiting short of a batch, from a sender that slowed down.
        // Wake its reader for them and look again shortly; any byte moved
        // re-arms the deadline.
        wake_batched_reader(client_);
        wake_batched_reader(upstream_);
        deadline_ = Clock::now() + std::chrono::milliseconds(200);
        grace = deadline_;
        continue;
      }
      timed_out_ = true;
      boost::system::error_code ignored;
      if (stage_ == Stage::expect) {
        upstream_.cancel(ignored);  // ends the wait, not the connection
        continue;
      }
      if (stage_ == Stage::dial || stage_ == Stage::answer) {
        // Fail the lookup, the dial or the wait, not the client: it gets a 504.
        dns_wait_.cancel();
        upstream_.close(ignored);
        continue;
      }
      client_.close(ignored);
      upstream_.close(ignored);
      break;
    }
  }

  asio::awaitable<void> run(std::shared_ptr<Session>) {
    take_policy();
    beast::flat_buffer buf(ctx_.limits.head_bytes);
    while (co_await serve_one(buf)) {
    }
    finish();
  }

  // The policy in force decides each request, also the next one on a kept
  // connection after a reload: a pointer compare per request.
  void take_policy() {
    if (set_ == ctx_.policy) return;
    set_ = ctx_.policy;
    policy_ = set_->for_sandbox(listener_.sandbox).get();
  }

  void recheck(const config::PolicySet& set) override {
    // What is open toward an origin: a tunnel; a plain-HTTP exchange under
    // way (its answer may stream for as long as the origin likes); or a kept
    // upstream connection between requests.
    const bool exchanging = !tunnel_ && (stage_ == Stage::relay || stage_ == Stage::answer || stage_ == Stage::expect);
    if (!tunnel_ && !exchanging && !upstream_open_) return;
    const auto& p = *set.for_sandbox(listener_.sandbox);
    const policy::Address addr[] = {upstream_addr_};
    if (p.check(tunnel_ ? tunnel_target_ : http_target_, addr).verdict != policy::Verdict::deny) return;
    boost::system::error_code ignored;
    upstream_open_ = false;
    upstream_.close(ignored);
    if (!tunnel_ && !exchanging) return;  // the next request is decided afresh
    // The new policy denies this destination: the exchange ends now.
    end_ = netlog::EndReason::reload;
    if (tunnel_) {
      client_.close(ignored);
      return;
    }
    // A plain exchange ends by its origin's side. An answer on its way to
    // the client fails on what it still needs from the origin, and that ends
    // the client connection; one read in full, whose last write is under way
    // (the client may already have it all), completes, and the connection
    // stays. Before the answer, the client gets the new policy's 403
    // (refuse_after_reload); an upload's wait on the client is cancelled, so
    // that this happens now, not when the client next sends.
    if (!replying_) client_.cancel(ignored);
  }

  void end_for_shutdown() override {
    end_ = netlog::EndReason::shutdown;
    dns_wait_.cancel();
    boost::system::error_code ignored;
    client_.close(ignored);
    upstream_.close(ignored);
  }

  void finish() {
    if (counted_tunnel_) open_tunnels_.fetch_sub(1, std::memory_order_relaxed);
    if (client_slot_) client_slot_->fetch_sub(1, std::memory_order_relaxed);
    ctx_.sessions.erase(this);
    stage_ = Stage::done;
    timer_.cancel();
    boost::system::error_code ignored;
    client_.shutdown(asio::socket_base::shutdown_both, ignored);
    client_.close(ignored);
    upstream_.close(ignored);
    --ctx_.open_connections;
  }

  asio::awaitable<void> answer(const std::string& response) {
    arm(ctx_.limits.idle_timeout);
    // To a HEAD, the head alone (RFC 9110 9.3.2), its Content-Length still
    // that of the body a GET would get.
    const auto size = asked_head_ ? response.find("\r\n\r\n") + 4 : response.size();
    co_await asio::async_write(client_, asio::buffer(response.data(), size), token);
  }

  // Refuses the request for a reason other than policy: logs, then answers.
  asio::awaitable<void> fail(int status, const char* code, std::string_view why, int retry_after = 0) {
    co_await log_decision(static_cast<std::uint16_t>(status), code);
    co_await answer(error_answer(status, code, why, retry_after));
  }

  asio::awaitable<void> bad_request(std::string_view why) { co_await fail(400, "bad-request", why); }

  // --- The network log: one decision per request, one close per allowed one. ---

  // Waits for room in this thread's log queue (back-pressure), or counts a
  // drop. True when claim() will succeed: only this thread fills the queue.
  asio::awaitable<bool> log_room() {
    auto* log = ctx_.log;
    if (!log) co_return false;
    while (!log->claim()) {
      if (log->drop_when_full()) {
        log->drop();
        co_return false;
      }
      ctx_.counters.log_waits.fetch_add(1, std::memory_order_relaxed);
      asio::steady_timer wait(client_.get_executor(), std::chrono::milliseconds(1));
      co_await wait.async_wait(token);
    }
    co_return true;
  }

  void begin_audit(netlog::ProxyType type, std::string_view method, std::string_view requested) {
    audit_ = Audit{};
    audit_.start = Clock::now();
    audit_.start_us = std::chrono::duration_cast<std::chrono::microseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
    audit_.id = ctx_.log ? ctx_.log->next_id() : 0;
    audit_.type = type;
    audit_.method = method;
    audit_.requested = requested;
  }

  // Counts the request's decision (metrics) and logs it, once per request.
  // status: the proxy's own answer (0 when the origin's answer follows).
  asio::awaitable<void> log_decision(std::uint16_t status, const char* code) {
    if (audit_.logged) co_return;
    audit_.logged = true;
    ctx_.metrics.decided(netlog::outcome(audit_.decided, audit_.decision.verdict, status),
                         netlog::reason_code(audit_.decided, audit_.decision.reason, status, code));
    ctx_.metrics.decision_seconds.observe(
        audit_.decision_us >= 0 ? audit_.decision_us
                                : std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - audit_.start)
                                      .count());
    if (audit_.connect_us > 0) ctx_.metrics.connect_seconds.observe(audit_.connect_us);
    if (!co_await log_room()) co_return;
    netlog::Event& e = *ctx_.log->claim();
    e.kind = netlog::Event::Kind::decision;
    e.id = audit_.id;
    e.time_us = audit_.start_us;
    e.source = source_;
    e.client = client_addr_;
    e.client_port = client_port_;
    e.client_is_ip = client_is_ip_;
    e.proxy_type = audit_.type;
    e.method.assign(audit_.method);
    e.requested.assign(audit_.requested);
    e.host.assign(audit_.target ? std::string_view(audit_.target->host) : std::string_view());
    e.port = audit_.target ? audit_.target->port : 0;
    const std::size_t n = audit_.addresses ? audit_.addresses->size() : 0;
    e.address_count = static_cast<std::uint8_t>(std::min(n, netlog::Event::max_addresses));
    e.addresses_cut = static_cast<std::uint8_t>(std::min<std::size_t>(n - e.address_count, 255));
    for (std::size_t i = 0; i < e.address_count; ++i) e.addresses[i] = (*audit_.addresses)[i];
    e.has_used = audit_.connected;
    e.used = upstream_addr_;
    e.decided = audit_.decided;
    e.decision = audit_.decision;
    e.policy_set = set_;
    e.policy = policy_;
    e.status = status;
    e.error = code;
    e.dns_us = audit_.dns_us;
    e.connect_us = audit_.connect_us;
    ctx_.log->publish();
  }

  asio::awaitable<void> log_close(std::uint64_t up, std::uint64_t down, netlog::EndReason end,
                                  std::uint16_t http_status) {
    ctx_.metrics.bytes_up.fetch_add(up, std::memory_order_relaxed);
    ctx_.metrics.bytes_down.fetch_add(down, std::memory_order_relaxed);
    if (!co_await log_room()) co_return;
    netlog::Event& e = *ctx_.log->claim();
    e.kind = netlog::Event::Kind::close;
    e.id = audit_.id;
    e.time_us = std::chrono::duration_cast<std::chrono::microseconds>(
                    std::chrono::system_clock::now().time_since_epoch())
                    .count();
    e.source = source_;
    e.bytes_up = up;
    e.bytes_down = down;
    e.duration_us = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - audit_.start).count();
    e.end = end;
    e.http_status = http_status;
    e.policy_set.reset();
    ctx_.log->publish();
  }

  // Reads and serves one request; false when the connection is done.
  asio::awaitable<bool> serve_one(beast::flat_buffer& buf) {
    stage_ = Stage::head;
    asked_head_ = false;
    arm(ctx_.limits.head_timeout);
    const auto head_size = co_await read_head(buf);
    if (head_size == 0) co_return false;
    take_policy();
    const std::string_view head(static_cast<const char*>(buf.data().data()), head_size);
    // The request's fields and its answer's come from this arena.
    const HeadArena heads;
    const auto owned = make_parser<RequestParser>(heads.allocator());
    auto& parser = *owned;
    parser.header_limit(static_cast<std::uint32_t>(ctx_.limits.head_bytes));
    parser.body_limit(boost::none);  // bodies stream through a fixed buffer
    // Until the head parses, the log names what the request line held.
    const auto line = head.substr(0, head.find("\r\n"));
    const auto sp1 = line.find(' ');
    const auto sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
    const auto method = line.substr(0, std::min(sp1, line.size()));
    begin_audit(method == "CONNECT" ? netlog::ProxyType::connect : netlog::ProxyType::http, method,
                sp1 == std::string_view::npos ? std::string_view() : line.substr(sp1 + 1, sp2 - sp1 - 1));
    if (auto why = parse_request_head(head, ctx_.limits.header_count, parser); !why.empty()) {
      co_await bad_request(why);
      co_return false;
    }
    buf.consume(head_size);
    ctx_.counters.requests.fetch_add(1, std::memory_order_relaxed);
    auto& req = parser.get();
    asked_head_ = req.method() == http::verb::head;
    if (req.method() == http::verb::connect) {
      co_await serve_connect(req.target(), buf);
      co_return false;
    }
    co_return co_await serve_http(parser, buf);
  }

  // Reads until the blank line that ends a head (bytes after it stay in buf,
  // for a body or a pipelined request). Returns the head's size, or 0 when
  // the connection ends: EOF, reset, timeout, or a head over the limit (431).
  asio::awaitable<std::size_t> read_head(beast::flat_buffer& buf) {
    std::size_t searched = 0;
    for (;;) {
      const std::string_view have(static_cast<const char*>(buf.data().data()), buf.size());
      const auto end = have.find("\r\n\r\n", searched);
      // A line ended by a bare LF would leave the head unfinished until
      // its timeout, and the client with no word: it gets its 400 now.
      // (RFC 9112 2.2 lets a recipient accept one; deny on doubt.)
      if (bare_lf(have.substr(0, end == std::string_view::npos ? have.size() : end + 4), searched)) {
        begin_audit(netlog::ProxyType::http, {}, {});
        co_await bad_request("a line of the head ends in a bare LF; HTTP lines end in CRLF");
        co_return 0;
      }
      if (end != std::string_view::npos) co_return end + 4;
      searched = have.size() < 3 ? 0 : have.size() - 3;
      const std::size_t room = ctx_.limits.head_bytes - std::min(ctx_.limits.head_bytes, buf.size());
      if (room == 0) {
        begin_audit(netlog::ProxyType::http, {}, {});
        co_await fail(431, "header-too-large",
                      "the request head is larger than " + std::to_string(ctx_.limits.head_bytes) + " bytes");
        co_return 0;
      }
      auto [ec, n] = co_await client_.async_read_some(buf.prepare(std::min<std::size_t>(room, 4096)), token);
      if (ec) co_return 0;
      buf.commit(n);
    }
  }

  // Host phase, resolution, address phase. On success `allowed` holds the
  // addresses that passed, in order; otherwise the client has its answer.
  asio::awaitable<bool> decide(const policy::Target& target, std::vector<policy::Address>& allowed) {
    const policy::Decision host = policy_->check_host(target);
    audit_.target = &target;
    audit_.addresses = &allowed;
    audit_.decision = host;
    audit_.decided = true;
    audit_.decision_us = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - audit_.start).count();
    if (host.verdict == policy::Verdict::deny && !policy_->needs_address_phase(host, target)) {
      co_await refuse(host, target);
      co_return false;
    }
    // `allowed` is the answer; it is dialed only if the address phase passes it.
    if (target.address) {
      allowed.push_back(*target.address);
    } else if (const auto* pinned = ctx_.hosts ? ctx_.hosts->find(target.host) : nullptr) {
      allowed = *pinned;
    } else if (const auto* hit = ctx_.dns->cached(target.host)) {
      allowed = *hit;
    } else {
      stage_ = Stage::dial;
      arm(ctx_.limits.resolve_timeout);
      timed_out_ = false;
      const auto asked = Clock::now();
      auto [ec] = co_await ctx_.dns->async_lookup(target.host, dns_wait_, allowed, token);
      audit_.dns_us = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - asked).count();
      if (ec) {
        // Built before the co_await: GCC 12 destroys a conditional's temporaries twice across one.
        std::string why = "cannot resolve " + target.host + ": ";
        why += timed_out_ ? "no answer within " + std::to_string(ctx_.limits.resolve_timeout.count()) + " ms"
                          : ec.message();
        co_await fail(timed_out_ ? 504 : 502, timed_out_ ? "dns-timeout" : "dns-failure", why);
        co_return false;
      }
    }
    // Any denied address denies the request, so what passes is the whole
    // answer (report mode lets it all through, as it lets everything).
    const policy::Decision d = policy_->check_addresses(host, target, allowed);
    audit_.decision = d;
    audit_.decision_us = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - audit_.start).count();
    if (d.verdict == policy::Verdict::deny) {
      co_await refuse(d, target);
      co_return false;
    }
    co_return true;
  }

  // After resolving and dialing, which may take a while: a reload that came
  // meanwhile has the policy now in force decide again, on the same answer.
  // False when it denies (the client has its 403; nothing was sent).
  asio::awaitable<bool> still_allowed(const policy::Target& target, std::span<const policy::Address> answer) {
    if (set_ == ctx_.policy) co_return true;  // a pointer compare, nearly always
    take_policy();
    audit_.decision = policy_->check(target, answer);
    if (audit_.decision.verdict != policy::Verdict::deny) co_return true;
    boost::system::error_code ignored;
    upstream_open_ = false;
    upstream_.close(ignored);
    co_await refuse(audit_.decision, target);
    co_return false;
  }

  // A reload denied the destination of an exchange before the origin
  // answered: the client is told so, by the rule that denies it now.
  asio::awaitable<void> refuse_after_reload(std::uint64_t sent) {
    take_policy();
    const policy::Address used[] = {upstream_addr_};
    const auto d = policy_->check(http_target_, used);
    ctx_.counters.denied.fetch_add(1, std::memory_order_relaxed);
    co_await log_close(sent, 0, netlog::EndReason::reload, 403);
    co_await answer(blocked_answer(*policy_, d, http_target_, listener_.sandbox, set_->file));
  }

  asio::awaitable<void> refuse(const policy::Decision& d, const policy::Target& target) {
    ctx_.counters.denied.fetch_add(1, std::memory_order_relaxed);
    co_await log_decision(403, policy::to_string(d.reason).data());
    co_await answer(blocked_answer(*policy_, d, target, listener_.sandbox, set_->file));
  }

  // An idle upstream connection the origin has closed shows EOF (or an
  // error) to a non-blocking peek; one that is still open shows EAGAIN.
  bool upstream_still_open() {
    const ssize_t n = peek_upstream();
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
  }

  // Why a relay that failed ended, for its close record: a reload or a
  // shutdown that closed it, else the idle timeout, else an error.
  netlog::EndReason failure_end() const noexcept {
    if (end_ != netlog::EndReason::client_close) return end_;
    return timed_out_ ? netlog::EndReason::idle_timeout : netlog::EndReason::error;
  }

  // Whether the origin has sent bytes of an answer that are not read yet.
  bool upstream_has_answer() { return upbuf_.size() > 0 || peek_upstream() > 0; }

  // Whether the origin's side has ended (closed or reset), as seen now.
  bool upstream_ended() {
    const auto n = peek_upstream();
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
  }

  // recv(2) of one byte, left in place, without waiting.
  ssize_t peek_upstream() {
    char byte;
    return ::recv(upstream_.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  }

  // Ends a connection whose client may still be sending a body nobody will
  // read, after its answer: stop sending, then take and drop what comes for
  // a bounded while, so that closing does not reset the connection (and
  // discard the answer) before the client has read it.
  asio::awaitable<void> linger() {
    boost::system::error_code ignored;
    client_.shutdown(asio::socket_base::shutdown_send, ignored);
    stage_ = Stage::relay;
    arm(std::chrono::milliseconds(2000));
    std::uint64_t dropped = 0;
    while (dropped < (8u << 20)) {
      upbuf_.clear();
      auto [ec, n] = co_await client_.async_read_some(upbuf_.prepare(16 * 1024), token);
      if (ec) break;
      dropped += n;
    }
    upbuf_.clear();
  }

  // Tries each allowed address in turn until one connects.
  asio::awaitable<bool> dial(const std::vector<policy::Address>& addrs, std::uint16_t port) {
    stage_ = Stage::dial;
    upbuf_.clear();  // nothing read from an earlier connection is an answer on this one
    const auto started = Clock::now();
    bool any_timeout = false;
    boost::system::error_code last;
    for (const auto& a : addrs) {
      const tcp::endpoint ep(to_asio(a), port);
      const asio::generic::stream_protocol::endpoint gep(ep.data(), ep.size(), IPPROTO_TCP);
      boost::system::error_code ignored;
      upstream_.close(ignored);
      upstream_.open(gep.protocol(), last);
      if (last) continue;
      arm(ctx_.limits.connect_timeout);
      timed_out_ = false;
      auto [ec] = co_await upstream_.async_connect(gep, token);
      if (!ec) {
        const int one = 1;
        ::setsockopt(upstream_.native_handle(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        upstream_addr_ = a;
        upstream_open_ = true;
        audit_.connected = true;
        audit_.connect_us = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - started).count();
        co_return true;
      }
      any_timeout |= timed_out_;
      last = ec;
    }
    audit_.connect_us = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - started).count();
    if (any_timeout) co_await fail(504, "connect-timeout", "the destination did not answer in time");
    else co_await fail(502, "connect-failed", "cannot connect: " + last.message());
    co_return false;
  }

  asio::awaitable<void> serve_connect(std::string_view authority, beast::flat_buffer& buf) {
    auto target = policy::parse_target(authority, std::nullopt);
    if (!target) {
      co_await bad_request("CONNECT needs host:port: " + std::string(policy::describe(target.error())));
      co_return;
    }
    std::vector<policy::Address> allowed;
    if (!co_await decide(*target, allowed)) co_return;
    // One counter per listener (sandbox), shared by the threads: an atomic, no lock.
    if (listener_.max_tunnels > 0 &&
        open_tunnels_.fetch_add(1, std::memory_order_relaxed) >= listener_.max_tunnels) {
      open_tunnels_.fetch_sub(1, std::memory_order_relaxed);
      co_await fail(429, "too-many-tunnels",
                    "this sandbox has " + std::to_string(listener_.max_tunnels) +
                        " tunnels open, its limit; close one or retry shortly",
                    1);
      co_return;
    }
    counted_tunnel_ = listener_.max_tunnels > 0;
    if (!co_await dial(allowed, target->port)) co_return;
    if (!co_await still_allowed(*target, allowed)) co_return;
    // A reload from here on rechecks this tunnel's target. (Set only after
    // the 200 had gone, a reload in between rechecked the connection as a
    // plain-HTTP exchange, with that exchange's target: none, or an old one.)
    tunnel_target_ = *target;
    tunnel_ = true;
    stage_ = Stage::relay;
    co_await log_decision(200, nullptr);
    arm(ctx_.limits.tunnel_idle_timeout);
    constexpr std::string_view established = "HTTP/1.1 200 Connection established\r\n\r\n";
    auto [ec, n] = co_await asio::async_write(client_, asio::buffer(established), token);
    if (ec) {
      co_await log_close(0, 0, end_, 0);  // the client left, or a reload or shutdown ended it
      co_return;
    }
    // Bytes the client sent right after its head (a TLS ClientHello) go
    // through the first-flight check with the rest of it.
    std::string prefix(static_cast<const char*>(buf.data().data()), buf.size());
    buf.consume(buf.size());
    buf.shrink_to_fit();  // the head buffer is not needed again: the tunnel is the connection's last use
    const auto result = co_await relay_tunnel(client_, upstream_, std::move(prefix), target->host,
                                              [this] { arm(ctx_.limits.tunnel_idle_timeout); });
    (result.spliced ? ctx_.counters.spliced : ctx_.counters.buffered).fetch_add(1, std::memory_order_relaxed);
    if (result.sni_refused) ctx_.counters.denied.fetch_add(1, std::memory_order_relaxed);
    auto end = end_;
    if (result.sni_refused) end = netlog::EndReason::sni_mismatch;
    else if (end == netlog::EndReason::client_close && timed_out_) end = netlog::EndReason::idle_timeout;
    else if (end == netlog::EndReason::client_close && result.upstream_ended_first)
      end = netlog::EndReason::upstream_close;
    co_await log_close(result.bytes_up, result.bytes_down, end, 0);
  }

  // Writes the (rewritten) header of p's message to `out`, then its body.
  // A Content-Length body is spliced socket to socket after the bytes already
  // read; any other body (chunked, or ended by close) is re-framed by Beast
  // through a fixed buffer. `complete` says whether the whole body went
  // through.
  // Not a coroutine itself: each path is one, so that each frame stays under
  // the 1 KiB Asio recycles (a larger one is a malloc and free per message).
  template <bool isRequest>
  asio::awaitable<boost::system::error_code> relay_body(Socket& in, beast::flat_buffer& inbuf,
                                                        HeadParser<isRequest>& p, Socket& out,
                                                        bool& complete, std::uint64_t& moved) {
    complete = false;
    moved = 0;
    // (No body at all, as for most requests, takes the sized path: length 0.)
    if (!p.chunked() && (p.is_done() || p.content_length())) return relay_sized_body(in, inbuf, p, out, complete, moved);
    return relay_chunked_body(in, inbuf, p, out, complete, moved);
  }

  // The serialized header of msg, in head_ (valid until the next call). One
  // copy of a few hundred bytes: it then leaves in one buffer rather than as
  // one per field, which Beast's serializer views walk several times a write.
  template <bool isRequest>
  void serialize_head(const http::message<isRequest, http::buffer_body, Fields>& msg) {
    head_.clear();
    const auto first_line = [&] {
      if constexpr (isRequest) return msg.method();
      else return msg.result_int();
    }();
    const Fields::writer w(msg.base(), msg.version(), first_line);
    head_.commit(asio::buffer_copy(head_.prepare(beast::buffer_bytes(w.get())), w.get()));
  }

  template <bool isRequest>
  asio::awaitable<boost::system::error_code> relay_sized_body(Socket& in, beast::flat_buffer& inbuf,
                                                              HeadParser<isRequest>& p,
                                                              Socket& out, bool& complete, std::uint64_t& moved) {
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
  asio::awaitable<boost::system::error_code> relay_chunked_body(Socket& in, beast::flat_buffer& inbuf,
                                                                HeadParser<isRequest>& p,
                                                                Socket& out, bool& complete, std::uint64_t& moved) {
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

  // Whether bytes[from..] hold an LF that no CR comes right before.
  static bool bare_lf(std::string_view bytes, std::size_t from) {
    for (auto i = bytes.find('\n', from); i != std::string_view::npos; i = bytes.find('\n', i + 1))
      if (i == 0 || bytes[i - 1] != '\r') return true;
    return false;
  }

  // Parses into p's body buffer what else is already here, without waiting:
  // the rest of inbuf, then the socket's bytes, read with MSG_DONTWAIT.
  // Stops when the body buffer is full, the message is done, or nothing more
  // has come. (Beast's read_some would wait instead: it reads on while a
  // chunk line is incomplete, even with body bytes in hand.)
  template <bool isRequest>
  boost::system::error_code take_ready(Socket& in, beast::flat_buffer& inbuf,
                                       HeadParser<isRequest>& p) {
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

  // Checks an absolute-form request's target and Host header. When they are
  // acceptable, sets http_target_, requested_ (host:port as asked, for the
  // log) and host_ (the Host the origin gets), and rewrites the target to
  // origin form; else returns why, for a 400.
  std::string take_http_target(http::request<http::buffer_body, Fields>& req) {
    auto url = boost::urls::parse_absolute_uri(req.target());
    if (req.target().starts_with("/") || req.target() == "*")
      return "a forward proxy needs an absolute-form target, as GET http://host/path";
    if (!url) return "the request target is not a valid absolute URI, as http://host/path?query";
    if (url->scheme_id() != boost::urls::scheme::http)
      return "only http:// targets are forwarded; use CONNECT for https";
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

  // One absolute-form request; true when the client connection stays open.
  // (Its response is a coroutine of its own: one frame for both would be
  // over the 1 KiB Asio recycles.)
  asio::awaitable<bool> serve_http(RequestParser& parser, beast::flat_buffer& buf) {
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
    const Asked asked{asked_head_, http11, http11 && keeps_alive(req)};
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
    add_via(req);
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

  // RFC 9110 7.6.2: OPTIONS and TRACE count their hops down in
  // Max-Forwards, which goes on one less. At 0 the proxy is the final
  // recipient and answers itself: nothing is sent to the origin. False when
  // the proxy answered (then the connection ends).
  asio::awaitable<bool> count_hop(RequestParser& parser) {
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

  // What the client's request said, for its answer; taken before the request
  // is rewritten for the origin.
  struct Asked {
    bool head;          // HEAD: the answer has no body
    bool http11;        // may get a chunked answer
    bool keep_alive;
  };

  enum class Answered : std::uint8_t { close, keep, again };

  // Reads the origin's answer head into rp, passing interim answers on to
  // the client. Empty when rp holds a final answer's head; else how the
  // exchange ended (the client has its answer, the close is logged).
  // (A coroutine of its own: with relay_response's, one frame would be over
  // the 1 KiB Asio recycles.)
  asio::awaitable<std::optional<Answered>> read_final_head(ParserPtr<ResponseParser>& rp, Asked asked,
                                                           std::uint64_t sent, bool may_resend, HeadAllocator heads) {
    for (;;) {
      rp = make_parser<ResponseParser>(heads);
      rp->header_limit(static_cast<std::uint32_t>(ctx_.limits.head_bytes));
      rp->body_limit(boost::none);
      if (asked.head) rp->skip(true);
      stage_ = Stage::answer;
      timed_out_ = false;
      arm(ctx_.limits.idle_timeout);
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
      if (ec && may_resend && upbuf_.size() == 0 &&
          (ec == http::error::end_of_stream || ec == asio::error::connection_reset))
        co_return Answered::again;
      if (ec) {
        co_await log_close(sent, 0, ec == http::error::end_of_stream ? netlog::EndReason::upstream_close
                                                                      : netlog::EndReason::error,
                           502);
        co_await answer(error_answer(502, "bad-upstream-response", "the origin's answer was not valid HTTP: " + ec.message()));
        co_return Answered::close;
      }
      const unsigned status = rp->get().result_int();
      if (status < 100 || status > 599) {
        // Beast reads any three digits; RFC 9110 15: valid codes are 100 to
        // 599. One below would pass as an interim answer.
        co_await log_close(sent, 0, netlog::EndReason::error, 502);
        std::string why = "the origin's answer has status " + std::to_string(status) + ", outside 100-599";
        co_await answer(error_answer(502, "bad-upstream-response", why));
        co_return Answered::close;
      }
      if (status == 101) {
        // Upgrade is hop-by-hop and never forwarded, so nothing asked for it:
        // what follows would be another protocol on a stream read as HTTP.
        co_await log_close(sent, 0, netlog::EndReason::error, 502);
        co_await answer(error_answer(502, "bad-upstream-response",
                                     "the origin switched protocols (101) though the proxy does not forward Upgrade"));
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

  // Reads the origin's answer and relays it: keep when the client connection
  // stays open, again when `may_resend` and the connection ended before any
  // byte of an answer (the request is to be sent on a new one). `sent`: the
  // request body's bytes, for the close record; `heads`: the request's arena.
  asio::awaitable<Answered> relay_response(Asked asked, std::uint64_t sent, bool may_resend, HeadAllocator heads) {
    ParserPtr<ResponseParser> rp;
    if (const auto ended = co_await read_final_head(rp, asked, sent, may_resend, heads)) co_return *ended;
    auto& res = rp->get();
    const unsigned status = res.result_int();
    const bool bodiless = asked.head || status == 204 || status == 304;
    // Codings the proxy cannot pass on as they are: a body whose codings do
    // not end in chunked ends at close, and chunking it again is forbidden
    // (RFC 9112 7); an HTTP/1.0 client may get no Transfer-Encoding (6.1),
    // and without it a coding other than chunked is lost.
    if (const auto codings = res.count(http::field::transfer_encoding);
        codings && !bodiless &&
        (!res.chunked() ||
         (!asked.http11 && (codings > 1 || !beast::iequals(res[http::field::transfer_encoding], "chunked"))))) {
      std::string why = "the origin's answer has a transfer coding the proxy cannot pass on";
      if (!asked.http11) why += " to an HTTP/1.0 client";
      why += ": Transfer-Encoding: ";
      why += res[http::field::transfer_encoding];
      co_await log_close(sent, 0, netlog::EndReason::error, 502);
      co_await answer(error_answer(502, "bad-upstream-response", why));
      co_return Answered::close;
    }
    // A length repeated as a list ("5, 5"; RFC 9110 8.6) goes on as the one
    // number it is: a client may read the list another way.
    if (const auto length = rp->content_length();
        length && res[http::field::content_length].find(',') != std::string_view::npos)
      res.content_length(*length);
    const bool origin_keeps = keeps_alive(res);
    strip_hop_by_hop(res);
    add_via(res);
    bool keep = asked.keep_alive;
    if (!bodiless && !asked.http11) {
      // An HTTP/1.0 client must not get chunked (RFC 9112 6.1): a body
      // without a length goes as it is, and closing the connection (which
      // ends every HTTP/1.0 exchange) ends it.
      if (res.chunked()) res.chunked(false);  // (which also drops any Content-Length)
    } else if (!bodiless && !res.has_content_length() && !res.chunked()) {
      res.chunked(true);  // close-delimited from the origin: chunked, the client kept
    }
    res.version(11);  // an intermediary sends its own HTTP version
    res.keep_alive(keep);
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
    // An idle keep-alive connection holds a few KiB, not a 16 KiB body's worth.
    if (upbuf_.capacity() > 4096) upbuf_.shrink_to_fit();
    if (head_.capacity() > 4096) head_.shrink_to_fit();
    co_return keep ? Answered::keep : Answered::close;
  }

  // After the head of a request with Expect: 100-continue went to the
  // origin: waits up to --continue-timeout for the origin's word on the body.
  // True: send it (a 100 came and went on to the client, or none came in
  // time, as from an origin that ignores Expect). False: the origin sent a
  // final answer (or closed) first; expecting_ says so, and the answer waits
  // in upbuf_ for relay_response.
  asio::awaitable<bool> await_continue() {
    stage_ = Stage::expect;
    timed_out_ = false;
    arm(ctx_.limits.continue_timeout);
    for (;;) {
      // Enough of the status line ("HTTP/1.1 100") to tell a 1xx from a final answer.
      constexpr std::size_t status_end = 12;
      while (upbuf_.size() < status_end) {
        auto [ec, n] = co_await upstream_.async_read_some(upbuf_.prepare(4096), token);
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

  // Sends a 1xx answer's head on to the client.
  asio::awaitable<bool> relay_interim(http::response<http::buffer_body, Fields>& res) {
    strip_hop_by_hop(res);
    add_via(res);
    res.version(11);
    serialize_head(res);
    auto [ec, n] = co_await asio::async_write(client_, head_.data(), token);
    co_return !ec;
  }

  // What the network log needs of the request under way.
  struct Audit {
    std::uint64_t id = 0;
    std::int64_t start_us = 0;
    Clock::time_point start;
    netlog::ProxyType type = netlog::ProxyType::http;
    std::string_view method;     // views the request head; logged before the head is rewritten
    std::string_view requested;
    const policy::Target* target = nullptr;
    const std::vector<policy::Address>* addresses = nullptr;
    policy::Decision decision{};
    bool decided = false;
    bool connected = false;
    bool logged = false;
    std::int64_t dns_us = -1, connect_us = -1;
    std::int64_t decision_us = -1;  // head parsed to verdict
  };

  const netlog::Source* source_;
  policy::Address client_addr_{};
  std::uint16_t client_port_ = 0;
  bool client_is_ip_ = false;
  Audit audit_;
  netlog::EndReason end_ = netlog::EndReason::client_close;  // set by reload or shutdown
  std::atomic<std::size_t>& open_tunnels_;
  std::atomic<std::uint32_t>* client_slot_;
  bool counted_tunnel_ = false;
  Socket client_;
  Socket upstream_;
  Dns::Wait dns_wait_;  // a lookup under way
  asio::steady_timer timer_;
  beast::flat_buffer upbuf_;  // the origin's answer (plain HTTP); its capacity is reused
  beast::flat_buffer head_;   // a head on its way out (serialize_head)
  // Absolute-form requests: kept between requests so their capacity is reused.
  std::string requested_, origin_form_, host_;
  policy::Target http_target_;
  std::vector<policy::Address> allowed_;
  ThreadContext& ctx_;
  const Listener& listener_;
  std::shared_ptr<const config::PolicySet> set_;
  const policy::Policy* policy_ = nullptr;
  Clock::time_point deadline_ = Clock::now();
  Stage stage_ = Stage::head;
  bool timed_out_ = false;
  // Where a request with Expect: 100-continue stands: awaiting the origin's
  // word on its body, or refused (the origin answered without a 100).
  enum class Expecting : std::uint8_t { none, awaiting, refused };
  Expecting expecting_ = Expecting::none;
  // The upstream connection kept open between absolute-form requests.
  bool upstream_open_ = false;
  std::string upstream_host_;
  std::uint16_t upstream_port_ = 0;
  policy::Address upstream_addr_{};
  policy::Target tunnel_target_;
  bool tunnel_ = false;    // relaying a CONNECT tunnel to tunnel_target_
  bool replying_ = false;  // relaying the body of the origin's answer
  bool asked_head_ = false;  // the request is a HEAD: the proxy's own answers have no body
};

}  // namespace

void start_session(Socket client, const asio::generic::stream_protocol::endpoint& peer, ThreadContext& ctx,
                   const Listener& listener, const netlog::Source* source, std::atomic<std::size_t>& open_tunnels,
                   std::atomic<std::uint32_t>* client_slot) {
  std::make_shared<Session>(std::move(client), ctx, listener, source, open_tunnels, client_slot)->start(peer);
}

}  // namespace sandgate::proxy::detail
