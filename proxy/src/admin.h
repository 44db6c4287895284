// The admin listener: GET /metrics (Prometheus text), GET /healthz and
// GET /readyz.
// Separate from the proxy listeners, on the server's control thread; one
// request per connection, bounded and timed.
#pragma once

#include <functional>
#include <string>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>

namespace sandgate::proxy::detail {

struct AdminHandlers {
  std::function<std::string()> metrics;  // the /metrics body
  std::function<bool()> healthy;         // /healthz: 200 "ok" or 503 "stopping"
  // /readyz: "" for 200 "ready", else why new connections would not be
  // served now (503): draining, or the network log not being written.
  std::function<std::string()> unready;
};

boost::asio::awaitable<void> serve_admin(boost::asio::ip::tcp::acceptor& acceptor, const AdminHandlers& handlers);

}  // namespace sandgate::proxy::detail
