// The admin listener: GET /metrics (Prometheus text), GET /healthz and
// GET /readyz. Separate from the proxy listeners, on the server's control
// thread; one request per connection, bounded and timed, at most 16 at once
// (a newcomer past them closes the oldest that has sent no request yet).
#pragma once

#include <functional>
#include <memory>
#include <string>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "descriptors.h"

namespace sandgate::proxy::detail {

struct AdminHandlers {
  std::function<std::string()> metrics;  // the /metrics body
  std::function<bool()> healthy;         // /healthz: 200 "ok" or 503 "stopping"
  // /readyz: "" for 200 "ready", else why new connections would not be
  // served now (503): draining, or the network log not being written.
  std::function<std::string()> unready;
};

// `spare`: a descriptor kept free, so that a proxy out of them still
// answers a scrape (when its metrics are wanted most); made by the caller,
// before any connection can take the last one.
boost::asio::awaitable<void> serve_admin(boost::asio::ip::tcp::acceptor& acceptor, const AdminHandlers& handlers,
                                         std::shared_ptr<SpareDescriptor> spare);

}  // namespace sandgate::proxy::detail
