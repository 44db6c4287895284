// The forward proxy: CONNECT tunnels and absolute-form HTTP/1.1, every
// request decided by the policy in force, every tunnel relayed with splice(2).
//
// One io_context per thread, each with its own SO_REUSEPORT acceptor per TCP
// listener: no lock is shared on the request path. The policy snapshot is an
// atomic pointer (config::PolicyStore) taken once per connection.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <boost/system/result.hpp>

#include "sandgate/config/policy_store.h"
#include "sandgate/netlog/writer.h"

namespace sandgate::proxy {

// Limits and timeouts; the defaults are what `sandgate proxy --help` prints.
struct Limits {
  std::size_t head_bytes = 16 * 1024;  // request head, request line included
  std::size_t header_count = 100;
  std::chrono::milliseconds head_timeout{10'000};     // slowloris: the whole head within this
  std::chrono::milliseconds resolve_timeout{5'000};
  std::chrono::milliseconds connect_timeout{10'000};  // per address tried
  std::chrono::milliseconds idle_timeout{60'000};     // keep-alive between requests, and body transfers
  // Expect: 100-continue: how long the origin has to ask for the body (100)
  // or refuse it (a final answer) before the body goes anyway.
  std::chrono::milliseconds continue_timeout{1'000};
  std::chrono::milliseconds tunnel_idle_timeout{300'000};
  std::chrono::milliseconds drain_timeout{10'000};    // SIGTERM: time for open connections to finish
  // Per thread; more get 503. 0: 10000, or fewer where the open-files limit
  // (RLIMIT_NOFILE, raised to its hard limit at start) holds fewer.
  std::size_t max_connections = 0;
  std::size_t max_client_connections = 0;             // per client address, all threads; more get 429 (0 = off)
  // The longest a resolved answer is reused (per thread): a DNS answer for
  // its TTL when that is shorter, an /etc/hosts answer (no TTL) for this
  // long; 0 turns caching off. Cached addresses are checked on every request.
  std::chrono::milliseconds dns_cache{5'000};
};

struct Listener {
  std::string address;  // "host:port", "[v6]:port" or "unix:PATH"
  std::string sandbox;  // the sandbox whose named policy applies ("" = default policy)
  std::size_t max_tunnels = 0;  // open CONNECT tunnels through this listener; more get 429 (0 = no limit)
};

struct ServerConfig {
  std::vector<Listener> listeners;
  std::string hosts_file;  // static "ADDRESS NAME..." lines consulted before DNS; "" for none
  std::string dns_servers;  // "ADDR[:PORT],..." asked instead of /etc/resolv.conf's; "" for those
  Limits limits;
  unsigned threads = 0;  // 0: one per core
  // After running work, an event loop keeps polling this long before it
  // sleeps in epoll_wait(2). Where waking a sleeping CPU is slow (virtual
  // machines) that cuts a connection's latency, at the cost of CPU time
  // spent polling; 0 sleeps at once.
  std::chrono::microseconds busy_poll{0};
  bool watch_policy = true;  // reload when the policy file or the hosts file changes, as on SIGHUP
  // On reload, end open tunnels and plain-HTTP exchanges the new policy denies.
  bool close_denied_tunnels = true;
  // The network log; none when unset. SIGUSR1 reopens it (for logrotate).
  std::optional<netlog::WriterConfig> log;
  // "host:port" for GET /metrics (Prometheus) and /healthz; "" for none.
  std::string admin;
  // Catch SIGHUP, SIGUSR1, SIGTERM and SIGINT (off when the proxy is part of
  // a larger program that handles them, such as `sandgate run`).
  bool handle_signals = true;
};

// Counters the server keeps, read at any time (relaxed).
struct Stats {
  std::uint64_t connections = 0;
  std::uint64_t requests = 0;
  std::uint64_t denied = 0;
  std::uint64_t tunnels_spliced = 0;
  std::uint64_t tunnels_buffered = 0;
  std::uint64_t tunnels_http = 0;  // followed as HTTP, each request checked
  std::uint64_t log_waits = 0;  // times a connection waited for room in the log queue
  netlog::WriterStats log;
};

class Server {
 public:
  // Binds every listener; fails with a message naming the listener and errno.
  static boost::system::result<std::unique_ptr<Server>, std::string> start(ServerConfig config,
                                                                          std::shared_ptr<config::PolicyStore> store);
  ~Server();

  // Runs until stop(): serves on all threads. Handles SIGHUP and changes of
  // the policy file (reload), SIGUSR1 (reopen the log) and SIGTERM/SIGINT
  // (drain, then stop) itself. Returns once the log is flushed and closed.
  void run();
  // Stops accepting; open connections get drain_timeout to finish, then are
  // closed (each still logged).
  void stop();
  // The bound address of listener i ("127.0.0.1:41234"), for port 0.
  std::string bound_address(std::size_t i) const;
  // The admin listener's bound address ("" without one).
  std::string admin_address() const;
  // What the operator should hear of at start, one line each: a connection
  // limit the open-files limit cannot hold, or a default it cut below 1000.
  const std::vector<std::string>& warnings() const;
  Stats stats() const;
  // The /metrics body: Prometheus text format.
  std::string metrics_text() const;

 private:
  struct Impl;
  explicit Server(std::unique_ptr<Impl> impl);
  void wait_signal();
  void watch_files();  // the policy file and the hosts file
  void reload();
  std::unique_ptr<Impl> impl_;
};

}  // namespace sandgate::proxy
