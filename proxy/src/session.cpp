// The life of one client connection, top to bottom:
//   read the head (bounded, timed) -> refuse anything malformed (400)
//   -> decide the target: host phase, resolve, address phase (403 on deny)
//   -> dial only an address that passed -> CONNECT: 200 and splice both ways;
//      absolute-form: forward in origin form, stream the bodies, keep alive
//      (http_exchange.cpp).
// Expected ends (EOF, reset, timeout) are outcomes, not errors.
#include "session_impl.h"

#include <sys/resource.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>

#include <algorithm>
#include <cstring>
#include <iostream>

#include "answers.h"
#include "head_check.h"

namespace sandgate::proxy::detail {
namespace {

using tcp = asio::ip::tcp;

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

}  // namespace

void Session::start(const asio::generic::stream_protocol::endpoint& peer) {
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

asio::awaitable<void> Session::watchdog(std::shared_ptr<Session>) {
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

asio::awaitable<void> Session::run(std::shared_ptr<Session>) {
  take_policy();
  ReadBuffer buf(ctx_.limits.head_bytes);
  while (co_await serve_one(buf)) {
  }
  finish();
}

void Session::recheck(const config::PolicySet& set) {
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

void Session::end_for_shutdown() {
  end_ = netlog::EndReason::shutdown;
  dns_wait_.cancel();
  boost::system::error_code ignored;
  client_.close(ignored);
  upstream_.close(ignored);
}

void Session::finish() {
  if (counted_tunnel_) open_tunnels_.fetch_sub(1, std::memory_order_relaxed);
  if (client_slot_) client_slot_->fetch_sub(1, std::memory_order_relaxed);
  ctx_.sessions.erase(this);
  stage_ = Stage::done;
  timer_.cancel();
  // close(2) sends the FIN (or the reset, for bytes left unread); a
  // shutdown(2) before it added only a system call.
  boost::system::error_code ignored;
  client_.close(ignored);
  upstream_.close(ignored);
  --ctx_.open_connections;
}

asio::awaitable<void> Session::answer(const std::string& response) {
  arm(ctx_.limits.idle_timeout);
  // To a HEAD, the head alone (RFC 9110 9.3.2), its Content-Length still
  // that of the body a GET would get.
  const auto size = asked_head_ ? response.find("\r\n\r\n") + 4 : response.size();
  co_await asio::async_write(client_, asio::buffer(response.data(), size), token);
}

asio::awaitable<void> Session::fail(int status, const char* code, std::string_view why, int retry_after) {
  co_await log_decision(static_cast<std::uint16_t>(status), code);
  co_await answer(error_answer(status, code, why, retry_after));
}

asio::awaitable<bool> Session::log_room() {
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

void Session::begin_audit(netlog::ProxyType type, std::string_view method, std::string_view requested) {
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

asio::awaitable<void> Session::log_decision(std::uint16_t status, const char* code) {
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

asio::awaitable<void> Session::log_close(std::uint64_t up, std::uint64_t down, netlog::EndReason end,
                                         std::uint16_t http_status) {
  ctx_.metrics.bytes_up.fetch_add(up, std::memory_order_relaxed);
  ctx_.metrics.bytes_down.fetch_add(down, std::memory_order_relaxed);
  ctx_.metrics.closed(end);
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

asio::awaitable<bool> Session::serve_one(ReadBuffer& buf) {
  stage_ = Stage::head;
  asked_head_ = false;
  arm(ctx_.limits.head_timeout);
  const auto head_size = co_await read_head(buf);
  if (head_size == 0) co_return false;
  take_policy();
  const std::string_view head(static_cast<const char*>(buf.data().data()), head_size);
  // The request's fields and its answer's come from this arena; a CONNECT
  // gives it back once its target is read, so that a tunnel holds no block.
  std::optional<HeadArena> heads(std::in_place);
  auto owned = make_parser<RequestParser>(heads->allocator());
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
  if (auto refused = parse_request_head(head, ctx_.limits.header_count, parser); refused.status == 505) {
    co_await fail(505, "http-version-not-supported", refused.why);
    co_return false;
  } else if (refused.status != 0) {
    co_await bad_request(refused.why);
    co_return false;
  }
  buf.consume(head_size);
  ctx_.counters.requests.fetch_add(1, std::memory_order_relaxed);
  auto& req = parser.get();
  asked_head_ = req.method() == http::verb::head;
  if (req.method() == http::verb::connect) {
    auto target = policy::parse_target(req.target(), std::nullopt);
    owned.reset();
    heads.reset();
    co_await serve_connect(std::move(target), buf);
    co_return false;
  }
  co_return co_await serve_http(parser, buf);
}

asio::awaitable<std::size_t> Session::read_head(ReadBuffer& buf) {
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

asio::awaitable<bool> Session::decide(const policy::Target& target, std::vector<policy::Address>& allowed) {
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
    if (out_of_descriptors(ec)) {
      warn_out_of_descriptors();
      co_await fail(503, "out-of-descriptors",
                    "the proxy has no file descriptor free to look up " + target.host + " (" + ec.message() +
                        "); retry shortly",
                    1);
      co_return false;
    }
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

asio::awaitable<bool> Session::still_allowed(const policy::Target& target, std::span<const policy::Address> answer) {
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

asio::awaitable<void> Session::refuse_after_reload(std::uint64_t sent) {
  take_policy();
  const policy::Address used[] = {upstream_addr_};
  const auto d = policy_->check(http_target_, used);
  ctx_.counters.denied.fetch_add(1, std::memory_order_relaxed);
  co_await log_close(sent, 0, netlog::EndReason::reload, 403);
  co_await answer(blocked_answer(*policy_, d, http_target_, listener_.sandbox, set_->file));
}

asio::awaitable<void> Session::refuse(const policy::Decision& d, const policy::Target& target) {
  ctx_.counters.denied.fetch_add(1, std::memory_order_relaxed);
  co_await log_decision(403, policy::to_string(d.reason).data());
  co_await answer(blocked_answer(*policy_, d, target, listener_.sandbox, set_->file));
}

bool Session::upstream_still_open() {
  const ssize_t n = peek_upstream();
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

netlog::EndReason Session::failure_end() const noexcept {
  if (end_ != netlog::EndReason::client_close) return end_;
  return timed_out_ ? netlog::EndReason::idle_timeout : netlog::EndReason::error;
}

bool Session::upstream_ended() {
  const auto n = peek_upstream();
  return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

ssize_t Session::peek_upstream() {
  char byte;
  return ::recv(upstream_.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
}

asio::awaitable<void> Session::linger() {
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

void warn_out_of_descriptors() {
  // A burst of refusals must not become a burst of blocking writes to stderr.
  static std::atomic<std::int64_t> last_s{0};
  const std::int64_t now_s =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
  auto last = last_s.load(std::memory_order_relaxed);
  if (now_s - last < 10 || !last_s.compare_exchange_strong(last, now_s, std::memory_order_relaxed)) return;
  rlimit r{};
  ::getrlimit(RLIMIT_NOFILE, &r);
  std::cerr << "sandgate proxy: out of file descriptors (the open-files limit is " << r.rlim_cur
            << ", RLIMIT_NOFILE): requests get 503 until connections close; lower --max-connections or raise the"
               " limit (ulimit -Hn; systemd: LimitNOFILE=)\n";
}

asio::awaitable<bool> Session::dial(const std::vector<policy::Address>& addrs, std::uint16_t port) {
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
    if (out_of_descriptors(last)) {
      // The proxy's limit, not the destination's fault: another address
      // would fail alike, and the client may retry once connections close.
      warn_out_of_descriptors();
      co_await fail(503, "out-of-descriptors",
                    "the proxy has no file descriptor free for the connection to the destination (" +
                        last.message() + "); retry shortly",
                    1);
      co_return false;
    }
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

asio::awaitable<void> Session::serve_connect(ParsedTarget target, ReadBuffer& buf) {
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
  // (Captures only `this`: no allocation. The session outlives its tunnel,
  // and policy_ is the one in force when the request comes.)
  const TunnelTarget to{target->host, target->port, ctx_.limits.head_bytes, ctx_.limits.header_count,
                        [this](const policy::Target& named, std::string_view why) {
                          return tunnel_host_answer(*policy_, tunnel_target_, named, why, listener_.sandbox,
                                                    set_->file);
                        }};
  const auto result = co_await relay_tunnel(client_, upstream_, std::move(prefix), to,
                                            [this] { arm(ctx_.limits.tunnel_idle_timeout); });
  (result.http      ? ctx_.counters.http
   : result.spliced ? ctx_.counters.spliced
                    : ctx_.counters.buffered)
      .fetch_add(1, std::memory_order_relaxed);
  if (result.sni_refused || result.request_refused) ctx_.counters.denied.fetch_add(1, std::memory_order_relaxed);
  auto end = end_;
  if (result.sni_refused) end = netlog::EndReason::sni_mismatch;
  else if (result.request_refused) end = netlog::EndReason::request_refused;
  else if (end == netlog::EndReason::client_close && timed_out_) end = netlog::EndReason::idle_timeout;
  else if (end == netlog::EndReason::client_close && result.upstream_ended_first)
    end = netlog::EndReason::upstream_close;
  co_await log_close(result.bytes_up, result.bytes_down, end, result.refusal_status);
}

void start_session(Socket client, const asio::generic::stream_protocol::endpoint& peer, ThreadContext& ctx,
                   const Listener& listener, const netlog::Source* source, std::atomic<std::size_t>& open_tunnels,
                   std::atomic<std::uint32_t>* client_slot) {
  std::make_shared<Session>(std::move(client), ctx, listener, source, open_tunnels, client_slot)->start(peer);
}

}  // namespace sandgate::proxy::detail
