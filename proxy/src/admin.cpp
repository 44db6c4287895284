#include "admin.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include <algorithm>
#include <list>
#include <memory>
#include <tuple>

#include "answers.h"

namespace sandgate::proxy::detail {
namespace {

namespace asio = boost::asio;
namespace http = boost::beast::http;
using asio::ip::tcp;
constexpr auto token = asio::as_tuple(asio::use_awaitable);

// The connections being served, oldest first (on the control thread only).
// At the bound, a newcomer closes the oldest one still waiting for its
// request head, so that silent connections cannot hold scrapes off.
struct Open {
  struct Connection {
    tcp::socket* socket;
    bool reading = true;              // its request head has not come
    bool closed_for_newcomer = false;
  };
  std::list<Connection> connections;

  // Closed for a newcomer, not yet ended.
  std::size_t closing() const noexcept {
    return static_cast<std::size_t>(std::count_if(connections.begin(), connections.end(),
                                                  [](const Connection& c) { return c.closed_for_newcomer; }));
  }
  std::size_t held() const noexcept { return connections.size() - closing(); }
  std::list<Connection>::iterator oldest_silent() {
    return std::find_if(connections.begin(), connections.end(),
                        [](const Connection& c) { return c.reading && !c.closed_for_newcomer; });
  }
};

asio::awaitable<void> answer_one(tcp::socket socket, const AdminHandlers& handlers, std::shared_ptr<Open> open) {
  // Invariant: the entry lives as long as this coroutine's body, so the
  // socket it points at outlives it.
  const auto entry = open->connections.insert(open->connections.end(), {&socket});
  struct Leave {
    Open& open;
    std::list<Open::Connection>::iterator entry;
    ~Leave() { open.connections.erase(entry); }
  } leave{*open, entry};
  boost::beast::flat_buffer buf(8192);
  // The head only: any body is not read, since the answer ends the connection.
  http::request_parser<http::empty_body> parser;
  parser.header_limit(8192);
  // A slow scraper gets five seconds for its request.
  asio::steady_timer deadline(socket.get_executor(), std::chrono::seconds(5));
  deadline.async_wait([&socket](const boost::system::error_code& ec) {
    if (!ec) socket.close();
  });
  auto [ec, n] = co_await http::async_read_header(socket, buf, parser, token);
  deadline.cancel();
  entry->reading = false;
  // Nobody to answer: the deadline passed, or the client left without a word.
  if (!socket.is_open() || (ec == http::error::end_of_stream && buf.size() == 0)) co_return;
  http::response<http::string_body> res;
  res.version(11);
  res.keep_alive(false);
  res.set(http::field::content_type, "text/plain; charset=utf-8");
  const auto& req = parser.get();
  const auto target = std::string_view(req.target().data(), req.target().size());
  const auto path = target.substr(0, target.find('?'));
  if (ec) {
    res.result(http::status::bad_request);
    res.body() = "not an HTTP request: " + ec.message() + "; try GET /metrics, /healthz or /readyz\n";
  } else if (req.method() != http::verb::get && req.method() != http::verb::head) {
    res.result(http::status::method_not_allowed);
    res.set(http::field::allow, "GET, HEAD");
    res.body() = "GET /metrics, /healthz or /readyz\n";
  } else if (path == "/metrics") {
    res.result(http::status::ok);
    res.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
    res.body() = handlers.metrics();
  } else if (path == "/healthz") {
    const bool ok = handlers.healthy();
    res.result(ok ? http::status::ok : http::status::service_unavailable);
    res.body() = ok ? "ok\n" : "stopping\n";
  } else if (path == "/readyz") {
    const auto why = handlers.unready();
    res.result(why.empty() ? http::status::ok : http::status::service_unavailable);
    res.body() = why.empty() ? "ready\n" : why + "\n";
  } else {
    res.result(http::status::not_found);
    res.body() = "not found: GET /metrics, /healthz or /readyz\n";
  }
  res.set(http::field::date, http_date());
  res.prepare_payload();
  // A HEAD gets the head a GET would, with its Content-Length, and no body.
  http::response_serializer<http::string_body> sr(res);
  if (!ec && req.method() == http::verb::head) co_await http::async_write_header(socket, sr, token);
  else co_await http::async_write(socket, sr, token);
  boost::system::error_code ignored;
  socket.shutdown(tcp::socket::shutdown_send, ignored);
}

}  // namespace

asio::awaitable<void> serve_admin(tcp::acceptor& acceptor, const AdminHandlers& handlers,
                                  std::shared_ptr<SpareDescriptor> spare) {
  // Connections at once: each holds a descriptor the proxy's clients could
  // use, for up to the five seconds a request may take.
  constexpr std::size_t most_open = 16;
  auto open = std::make_shared<Open>();
  for (;;) {
    if (open->held() >= most_open) {
      // At the bound: once another connection waits to be taken, the
      // oldest still silent makes room for it. With none silent (all
      // being answered), look again shortly.
      if (open->oldest_silent() != open->connections.end()) {
        auto [wec] = co_await acceptor.async_wait(tcp::acceptor::wait_read, token);
        if (!acceptor.is_open() || wec == asio::error::operation_aborted) co_return;
        // Looked up again: the wait may have let some end.
        if (const auto oldest = open->oldest_silent();
            !wec && oldest != open->connections.end() && open->held() >= most_open) {
          oldest->closed_for_newcomer = true;
          boost::system::error_code ignored;
          oldest->socket->close(ignored);
        }
        if (!wec) continue;
      }
    } else if (open->connections.size() < most_open) {
      auto [ec, socket] = co_await acceptor.async_accept(token);
      if (!acceptor.is_open() || ec == asio::error::operation_aborted) co_return;
      if (out_of_descriptors(ec) && spare->held()) {
        spare->release();
        std::tie(ec, socket) = co_await acceptor.async_accept(token);
      }
      if (!ec) {
        asio::co_spawn(acceptor.get_executor(), answer_one(std::move(socket), handlers, open),
                       [spare](std::exception_ptr) { spare->take(); });
        continue;
      }
      spare->take();
    }
    // At the bound with nothing to close, a connection closed for a
    // newcomer still ending, out of descriptors with the spare in use, or
    // a transient error: the connections wait in the listen queue;
    // accepting again at once would spin.
    asio::steady_timer pause(acceptor.get_executor(), std::chrono::milliseconds(open->closing() > 0 ? 1 : 100));
    co_await pause.async_wait(token);
  }
}

}  // namespace sandgate::proxy::detail
