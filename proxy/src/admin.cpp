#include "admin.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

namespace sandgate::proxy::detail {
namespace {

namespace asio = boost::asio;
namespace http = boost::beast::http;
using asio::ip::tcp;
constexpr auto token = asio::as_tuple(asio::use_awaitable);

asio::awaitable<void> answer_one(tcp::socket socket, const AdminHandlers& handlers) {
  boost::beast::flat_buffer buf(8192);
  http::request_parser<http::empty_body> parser;
  parser.header_limit(8192);
  // A slow scraper gets five seconds for its request.
  asio::steady_timer deadline(socket.get_executor(), std::chrono::seconds(5));
  deadline.async_wait([&socket](const boost::system::error_code& ec) {
    if (!ec) socket.close();
  });
  auto [ec, n] = co_await http::async_read(socket, buf, parser, token);
  deadline.cancel();
  if (ec) co_return;
  const auto& req = parser.get();
  http::response<http::string_body> res;
  res.version(11);
  res.keep_alive(false);
  res.set(http::field::content_type, "text/plain; charset=utf-8");
  const auto target = std::string_view(req.target().data(), req.target().size());
  const auto path = target.substr(0, target.find('?'));
  if (req.method() != http::verb::get && req.method() != http::verb::head) {
    res.result(http::status::method_not_allowed);
    res.body() = "GET /metrics or GET /healthz\n";
  } else if (path == "/metrics") {
    res.result(http::status::ok);
    res.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
    res.body() = handlers.metrics();
  } else if (path == "/healthz") {
    const bool ok = handlers.healthy();
    res.result(ok ? http::status::ok : http::status::service_unavailable);
    res.body() = ok ? "ok\n" : "stopping\n";
  } else {
    res.result(http::status::not_found);
    res.body() = "not found: GET /metrics or GET /healthz\n";
  }
  res.prepare_payload();
  co_await http::async_write(socket, res, token);
  boost::system::error_code ignored;
  socket.shutdown(tcp::socket::shutdown_both, ignored);
}

}  // namespace

asio::awaitable<void> serve_admin(tcp::acceptor& acceptor, const AdminHandlers& handlers) {
  for (;;) {
    auto [ec, socket] = co_await acceptor.async_accept(token);
    if (!acceptor.is_open() || ec == asio::error::operation_aborted) co_return;
    if (ec) continue;
    asio::co_spawn(acceptor.get_executor(), answer_one(std::move(socket), handlers), asio::detached);
  }
}

}  // namespace sandgate::proxy::detail
