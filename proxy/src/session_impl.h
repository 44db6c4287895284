// The session of one client connection: the class both halves of its code
// share. session.cpp holds the connection's life, its decisions, the
// network log and CONNECT tunnels; http_exchange.cpp, absolute-form requests
// and their answers. Private to the proxy.
#pragma once

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/message.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "head_arena.h"
#include "session.h"
#include "tunnel.h"

namespace sandgate::proxy::detail {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

// One client connection, from accept to close.
class Session : public std::enable_shared_from_this<Session>, public OpenConnection {
  using Clock = std::chrono::steady_clock;
  static constexpr auto token = asio::as_tuple(asio::use_awaitable);

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

  void start(const asio::generic::stream_protocol::endpoint& peer);

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

  asio::awaitable<void> watchdog(std::shared_ptr<Session>);

  asio::awaitable<void> run(std::shared_ptr<Session>);

  // The policy in force decides each request, also the next one on a kept
  // connection after a reload: a pointer compare per request.
  void take_policy() {
    if (set_ == ctx_.policy) return;
    set_ = ctx_.policy;
    policy_ = set_->for_sandbox(listener_.sandbox).get();
  }

  void recheck(const config::PolicySet& set) override;

  void end_for_shutdown() override;

  void finish();

  asio::awaitable<void> answer(const std::string& response);

  // Refuses the request for a reason other than policy: logs, then answers.
  asio::awaitable<void> fail(int status, const char* code, std::string_view why, int retry_after = 0);

  asio::awaitable<void> bad_request(std::string_view why) { co_await fail(400, "bad-request", why); }

  // --- The network log: one decision per request, one close per allowed one. ---

  // Waits for room in this thread's log queue (back-pressure), or counts a
  // drop. True when claim() will succeed: only this thread fills the queue.
  asio::awaitable<bool> log_room();

  void begin_audit(netlog::ProxyType type, std::string_view method, std::string_view requested);

  // Counts the request's decision (metrics) and logs it, once per request.
  // status: the proxy's own answer (0 when the origin's answer follows).
  asio::awaitable<void> log_decision(std::uint16_t status, const char* code);

  asio::awaitable<void> log_close(std::uint64_t up, std::uint64_t down, netlog::EndReason end,
                                  std::uint16_t http_status);

  // Reads and serves one request; false when the connection is done.
  asio::awaitable<bool> serve_one(ReadBuffer& buf);

  // Reads until the blank line that ends a head (bytes after it stay in buf,
  // for a body or a pipelined request). Returns the head's size, or 0 when
  // the connection ends: EOF, reset, timeout, or a head over the limit (431).
  asio::awaitable<std::size_t> read_head(ReadBuffer& buf);

  // Host phase, resolution, address phase. On success `allowed` holds the
  // addresses that passed, in order; otherwise the client has its answer.
  asio::awaitable<bool> decide(const policy::Target& target, std::vector<policy::Address>& allowed);

  // After resolving and dialing, which may take a while: a reload that came
  // meanwhile has the policy now in force decide again, on the same answer.
  // False when it denies (the client has its 403; nothing was sent).
  asio::awaitable<bool> still_allowed(const policy::Target& target, std::span<const policy::Address> answer);

  // A reload denied the destination of an exchange before the origin
  // answered: the client is told so, by the rule that denies it now.
  asio::awaitable<void> refuse_after_reload(std::uint64_t sent);

  asio::awaitable<void> refuse(const policy::Decision& d, const policy::Target& target);

  // An idle upstream connection the origin has closed shows EOF (or an
  // error) to a non-blocking peek; one that is still open shows EAGAIN.
  bool upstream_still_open();

  // Why a relay that failed ended, for its close record: a reload or a
  // shutdown that closed it, else the idle timeout, else an error.
  netlog::EndReason failure_end() const noexcept;

  // Whether the origin has sent bytes of an answer that are not read yet.
  bool upstream_has_answer() { return upbuf_.size() > 0 || peek_upstream() > 0; }

  // Whether the origin's side has ended (closed or reset), as seen now.
  bool upstream_ended();

  // recv(2) of one byte, left in place, without waiting.
  ssize_t peek_upstream();

  // Ends a connection whose client may still be sending a body nobody will
  // read, after its answer: stop sending, then take and drop what comes for
  // a bounded while, so that closing does not reset the connection (and
  // discard the answer) before the client has read it.
  asio::awaitable<void> linger();

  // Tries each allowed address in turn until one connects.
  asio::awaitable<bool> dial(const std::vector<policy::Address>& addrs, std::uint16_t port);

  // A CONNECT: its target as parsed (a parse error gets the 400), the
  // decision, the dial, the 200, then the tunnel until either side ends it.
  using ParsedTarget = boost::system::result<policy::Target, policy::TargetError>;
  asio::awaitable<void> serve_connect(ParsedTarget target, ReadBuffer& buf);

  // Writes the (rewritten) header of p's message to `out`, then its body.
  // A Content-Length body is spliced socket to socket after the bytes already
  // read; any other body (chunked, or ended by close) is re-framed by Beast
  // through a fixed buffer. `complete` says whether the whole body went
  // through.
  // Not a coroutine itself: each path is one, so that each frame stays under
  // the 1 KiB Asio recycles (a larger one is a malloc and free per message).
  template <bool isRequest>
  asio::awaitable<boost::system::error_code> relay_body(Socket& in, ReadBuffer& inbuf,
                                                        HeadParser<isRequest>& p, Socket& out,
                                                        bool& complete, std::uint64_t& moved);

  // The serialized header of msg, in head_ (valid until the next call). One
  // copy of a few hundred bytes: it then leaves in one buffer rather than as
  // one per field, which Beast's serializer views walk several times a write.
  template <bool isRequest>
  void serialize_head(const http::message<isRequest, http::buffer_body, Fields>& msg);

  template <bool isRequest>
  asio::awaitable<boost::system::error_code> relay_sized_body(Socket& in, ReadBuffer& inbuf,
                                                              HeadParser<isRequest>& p,
                                                              Socket& out, bool& complete, std::uint64_t& moved);

  template <bool isRequest>
  asio::awaitable<boost::system::error_code> relay_chunked_body(Socket& in, ReadBuffer& inbuf,
                                                                HeadParser<isRequest>& p,
                                                                Socket& out, bool& complete, std::uint64_t& moved);

  // Parses into p's body buffer what else is already here, without waiting:
  // the rest of inbuf, then the socket's bytes, read with MSG_DONTWAIT.
  // Stops when the body buffer is full, the message is done, or nothing more
  // has come. (Beast's read_some would wait instead: it reads on while a
  // chunk line is incomplete, even with body bytes in hand.)
  template <bool isRequest>
  boost::system::error_code take_ready(Socket& in, ReadBuffer& inbuf,
                                       HeadParser<isRequest>& p);

  // Checks an absolute-form request's target and Host header. When they are
  // acceptable, sets http_target_, requested_ (host:port as asked, for the
  // log) and host_ (the Host the origin gets), and rewrites the target to
  // origin form; else returns why, for a 400.
  std::string take_http_target(http::request<http::buffer_body, Fields>& req);

  // One absolute-form request; true when the client connection stays open.
  // (Its response is a coroutine of its own: one frame for both would be
  // over the 1 KiB Asio recycles.)
  asio::awaitable<bool> serve_http(RequestParser& parser, ReadBuffer& buf);

  // RFC 9110 7.6.2: OPTIONS and TRACE count their hops down in
  // Max-Forwards, which goes on one less. At 0 the proxy is the final
  // recipient and answers itself: nothing is sent to the origin. False when
  // the proxy answered (then the connection ends).
  asio::awaitable<bool> count_hop(RequestParser& parser);

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
                                                           std::uint64_t sent, bool may_resend, HeadAllocator heads);

  // Reads the origin's answer and relays it: keep when the client connection
  // stays open, again when `may_resend` and the connection ended before any
  // byte of an answer (the request is to be sent on a new one). `sent`: the
  // request body's bytes, for the close record; `heads`: the request's arena.
  asio::awaitable<Answered> relay_response(Asked asked, std::uint64_t sent, bool may_resend, HeadAllocator heads);

  // After the head of a request with Expect: 100-continue went to the
  // origin: waits up to --continue-timeout for the origin's word on the body.
  // True: send it (a 100 came and went on to the client, or none came in
  // time, as from an origin that ignores Expect). False: the origin sent a
  // final answer (or closed) first; expecting_ says so, and the answer waits
  // in upbuf_ for relay_response.
  asio::awaitable<bool> await_continue();

  // Sends a 1xx answer's head on to the client.
  asio::awaitable<bool> relay_interim(http::response<http::buffer_body, Fields>& res);

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
  ReadBuffer upbuf_;         // the origin's answer (plain HTTP): a page during an exchange, none between
  beast::flat_buffer head_;  // a head on its way out (serialize_head)
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

}  // namespace sandgate::proxy::detail
