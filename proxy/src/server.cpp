#include "sandgate/proxy/server.h"

#include <fcntl.h>
#include <malloc.h>
#include <netinet/tcp.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <optional>
#include <thread>

#include "admin.h"
#include "answers.h"
#include "session.h"

namespace sandgate::proxy {
namespace {

namespace asio = boost::asio;
using Protocol = asio::generic::stream_protocol;
using Acceptor = asio::basic_socket_acceptor<Protocol>;
constexpr auto token = asio::as_tuple(asio::use_awaitable);

struct ParsedListen {
  bool is_unix = false;
  std::string path;
  asio::ip::tcp::endpoint tcp;
  int fd = -1;  // an inherited listening socket (socket activation)
};

boost::system::result<ParsedListen, std::string> parse_listen(const std::string& text) {
  ParsedListen out;
  if (text.starts_with("fd:")) {
    const auto n = text.substr(3);
    auto [end, ec] = std::from_chars(n.data(), n.data() + n.size(), out.fd);
    if (ec != std::errc{} || end != n.data() + n.size() || out.fd < 3)
      return "--listen " + text + ": write fd:N with N an inherited descriptor, 3 or more";
    return out;
  }
  if (text.starts_with("unix:")) {
    out.is_unix = true;
    out.path = text.substr(5);
    if (out.path.empty() || out.path.size() >= sizeof(sockaddr_un::sun_path))
      return "--listen " + text + ": a unix socket path of 1 to 107 bytes is needed";
    return out;
  }
  std::string host, port;
  if (text.starts_with("[")) {
    const auto close = text.find("]:");
    if (close == std::string::npos) return "--listen " + text + ": write [IPv6]:PORT";
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string::npos || text.find(':') != colon)
      return "--listen " + text + ": write HOST:PORT, [IPv6]:PORT or unix:PATH";
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  if (host == "localhost") host = "127.0.0.1";
  boost::system::error_code ec;
  const auto addr = asio::ip::make_address(host, ec);
  if (ec) return "--listen " + text + ": '" + host + "' is not an IP address";
  unsigned p = 0;
  try {
    std::size_t used = 0;
    p = static_cast<unsigned>(std::stoul(port, &used));
    if (used != port.size() || p > 65535) throw std::out_of_range("port");
  } catch (...) {
    return "--listen " + text + ": the port must be a number from 0 to 65535";
  }
  out.tcp = {addr, static_cast<std::uint16_t>(p)};
  return out;
}

// A connection refused as it was accepted: a short answer, written without
// waiting, and counted; the caller closes it.
void refuse_on_accept(int fd, detail::ThreadContext& ctx, detail::AcceptRefusal why, int status,
                      std::string_view message) {
  const auto answer =
      detail::error_answer(status, detail::accept_refusals[static_cast<std::size_t>(why)], message, 1);
  ::send(fd, answer.data(), answer.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  ctx.metrics.refused_on_accept(why);
}

// accept(2) found no descriptor free. With the thread's spare let go, takes
// the connection, answers 503 and closes it, then takes the spare back.
// False when there was no spare to let go.
bool refuse_for_descriptors(int listener, detail::ThreadContext& ctx) {
  if (!ctx.spare.held()) return false;
  ctx.spare.release();
  const int fd = ::accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd >= 0) {
    refuse_on_accept(fd, ctx, detail::AcceptRefusal::out_of_descriptors, 503,
                     "the proxy has no file descriptor free for this connection; retry shortly");
    ::close(fd);
    detail::warn_out_of_descriptors();
  }
  ctx.spare.take();
  return fd >= 0;
}

asio::awaitable<void> accept_loop(Acceptor& acceptor, detail::ThreadContext& ctx, const Listener& listener,
                                  const netlog::Source* source, std::atomic<std::size_t>& open_tunnels,
                                  bool is_tcp) {
  for (;;) {
    // The client's address comes with the accept, not from a getpeername(2) after it.
    Protocol::endpoint peer;
    auto [ec, socket] = co_await acceptor.async_accept(peer, token);
    if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
    if (detail::out_of_descriptors(ec) && refuse_for_descriptors(acceptor.native_handle(), ctx)) continue;
    ctx.spare.take();  // one lost to another thread at the moment it was free
    if (ec) {
      // Out of descriptors or a transient error: back off briefly, keep serving.
      asio::steady_timer t(acceptor.get_executor(), std::chrono::milliseconds(50));
      co_await t.async_wait(token);
      continue;
    }
    if (ctx.open_connections.load(std::memory_order_relaxed) >= ctx.limits.max_connections) {
      refuse_on_accept(socket.native_handle(), ctx, detail::AcceptRefusal::too_many_connections, 503,
                       "the proxy is at its connection limit; retry shortly");
      boost::system::error_code ignored;
      socket.close(ignored);
      continue;
    }
    std::atomic<std::uint32_t>* slot = nullptr;
    if (is_tcp) {
      const int one = 1;
      ::setsockopt(socket.native_handle(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      if (ctx.limits.max_client_connections > 0 && ctx.clients) {
        // The client's share, by its address (not its port).
        std::size_t h = 0;
        const auto* sa = reinterpret_cast<const sockaddr*>(peer.data());
        if (sa->sa_family == AF_INET)
          h = std::hash<std::uint32_t>{}(reinterpret_cast<const sockaddr_in*>(sa)->sin_addr.s_addr);
        else if (sa->sa_family == AF_INET6)
          h = std::hash<std::string_view>{}(std::string_view(
              reinterpret_cast<const char*>(&reinterpret_cast<const sockaddr_in6*>(sa)->sin6_addr), 16));
        slot = &ctx.clients->open[h % detail::ClientCounts::buckets];
        if (slot->fetch_add(1, std::memory_order_relaxed) >= ctx.limits.max_client_connections) {
          slot->fetch_sub(1, std::memory_order_relaxed);
          refuse_on_accept(socket.native_handle(), ctx, detail::AcceptRefusal::too_many_client_connections, 429,
                           "this client has " + std::to_string(ctx.limits.max_client_connections) +
                               " connections open, its limit; close one or retry shortly");
          boost::system::error_code ignored;
          socket.close(ignored);
          continue;
        }
      }
    }
    detail::start_session(std::move(socket), peer, ctx, listener, source, open_tunnels, slot);
  }
}

// Descriptors one connection may hold: the client's, the origin's, and a
// share of the pipes that spliced bodies and tunnels borrow while they move
// bytes. The reserve is for the rest: listeners, the log, epoll, timers, DNS.
constexpr std::size_t descriptors_per_connection = 3;
constexpr std::size_t descriptors_reserved = 64;
constexpr std::size_t default_max_connections = 10'000;
// A default cut to at least this many per thread is said nowhere: every
// start would warn on a machine whose hard limit is merely not huge.
constexpr std::size_t quiet_budget = 1'000;

// The --hosts-file, shared by the threads (at start, and at each reload).
boost::system::result<std::shared_ptr<const detail::HostsFile>, std::string> load_hosts(const std::string& path) {
  auto h = detail::HostsFile::load(path);
  if (!h) return h.error();
  return std::make_shared<const detail::HostsFile>(std::move(*h));
}

// A hosts file as the log's `policy` record names it: loaded, or why not.
netlog::Writer::HostsLoad hosts_loaded(const std::string& path, const detail::HostsFile& h) {
  return {.file = path, .sha256 = h.sha256(), .names = h.names(), .error = {}};
}
netlog::Writer::HostsLoad hosts_failed(const std::string& path, const std::string& error) {
  return {.file = path, .sha256 = {}, .names = 0, .error = error};
}

// Raises the open-files soft limit to the hard one (a shell's soft 1024
// would stop a proxy at a few hundred connections) and returns the
// connections per thread: `asked`, or when 0 the default cut to what the
// limit holds. Adds a warning when `asked` does not fit, or the default
// had to be cut below quiet_budget.
std::size_t connection_budget(std::size_t asked, unsigned threads, std::vector<std::string>& warnings) {
  rlimit r{};
  ::getrlimit(RLIMIT_NOFILE, &r);
  if (r.rlim_cur < r.rlim_max) {
    const rlimit raised{r.rlim_max, r.rlim_max};
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) r = raised;
  }
  const std::size_t files = r.rlim_cur;
  const std::size_t fits =
      files > descriptors_reserved ? (files - descriptors_reserved) / descriptors_per_connection / threads : 0;
  const std::size_t wanted = asked ? asked : default_max_connections;
  if (fits >= wanted) return wanted;
  const std::string limit = "the open-files limit (" + std::to_string(files) + ", RLIMIT_NOFILE)";
  const std::string per_thread = " per thread (" + std::to_string(threads) + (threads == 1 ? " thread)" : " threads)");
  const char* raise = "raise it (ulimit -Hn; systemd: LimitNOFILE=)";
  if (asked) {
    warnings.push_back("--max-connections " + std::to_string(asked) + ", but " + limit + " holds about " +
                       std::to_string(fits) + per_thread +
                       ": past that, connections get 503 (out-of-descriptors); " + raise);
    return asked;
  }
  const std::size_t budget = std::max<std::size_t>(fits, 1);
  if (budget >= quiet_budget) return budget;
  warnings.push_back("at most " + std::to_string(budget) + " connections" + per_thread + " instead of " +
                     std::to_string(default_max_connections) + ": " + limit + " holds no more; " + raise);
  return budget;
}

// Runs io until it is stopped or out of work. With busy_poll > 0 it keeps
// polling (epoll_wait with no timeout, timers, posted work) for that long
// after the last handler ran, and only then sleeps: the next event of a busy
// connection is then found without the wake-up of a sleeping thread and CPU.
void run_loop(asio::io_context& io, std::chrono::microseconds busy_poll) {
  if (busy_poll.count() == 0) {
    io.run();
    return;
  }
  using clock = std::chrono::steady_clock;
  auto last_work = clock::now();
  for (;;) {
    if (io.poll() > 0) {
      last_work = clock::now();
      continue;
    }
    if (io.stopped()) return;
    if (clock::now() - last_work < busy_poll) continue;
    if (io.run_one() == 0) return;  // slept until the next handler; 0: stopped
    last_work = clock::now();
  }
}

}  // namespace

struct Server::Impl {
  ServerConfig config;
  std::shared_ptr<config::PolicyStore> store;
  std::vector<std::unique_ptr<detail::ThreadContext>> threads;
  // acceptors[t]: thread t's acceptors, as (listener index, acceptor).
  std::vector<std::vector<std::pair<std::size_t, std::unique_ptr<Acceptor>>>> acceptors;
  std::vector<std::string> bound;
  std::vector<std::unique_ptr<std::atomic<std::size_t>>> open_tunnels;  // per listener
  std::unique_ptr<detail::ClientCounts> clients = std::make_unique<detail::ClientCounts>();
  std::unique_ptr<netlog::Writer> log;
  std::vector<const netlog::Source*> sources;  // per listener
  std::optional<asio::ip::tcp::acceptor> admin;
  std::string admin_bound;
  detail::AdminHandlers admin_handlers;
  std::atomic<std::uint64_t> reloads_ok{0}, reloads_failed{0};
  std::atomic<bool> stopping{false};
  asio::io_context control;
  // control.run() waits for stop() even with no signal or watch pending.
  asio::executor_work_guard<asio::io_context::executor_type> keep_running = asio::make_work_guard(control);
  std::optional<asio::signal_set> signals;
  std::optional<asio::posix::stream_descriptor> watch;
  std::vector<std::string> warnings;

  void close_acceptors() {
    for (std::size_t t = 0; t < threads.size(); ++t)
      asio::post(threads[t]->io, [this, t] {
        for (auto& [i, a] : acceptors[t]) {
          boost::system::error_code ignored;
          a->close(ignored);
        }
      });
  }
};

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Server::~Server() = default;

boost::system::result<std::unique_ptr<Server>, std::string> Server::start(ServerConfig config,
                                                                         std::shared_ptr<config::PolicyStore> store) {
  // splice(2) has no MSG_NOSIGNAL: a peer that closed mid-write must be an
  // EPIPE for the one connection, not a SIGPIPE for the process.
  ::signal(SIGPIPE, SIG_IGN);
  auto impl = std::make_unique<Impl>();
  std::shared_ptr<const detail::HostsFile> hosts;
  if (!config.hosts_file.empty()) {
    auto h = load_hosts(config.hosts_file);
    if (!h) return h.error();
    hosts = *h;
  }
  if (config.listeners.empty()) return std::string("no --listen address given");
  const unsigned n = config.threads ? config.threads : std::max(1u, std::thread::hardware_concurrency());
  config.limits.max_connections = connection_budget(config.limits.max_connections, n, impl->warnings);
  for (unsigned t = 0; t < n; ++t) {
    auto ctx = std::make_unique<detail::ThreadContext>();
    ctx->policy = store->current();
    ctx->hosts = hosts;
    ctx->limits = config.limits;
    auto dns = detail::Dns::create(ctx->io, config.dns_servers, config.limits.dns_cache);
    if (!dns) return dns.error();
    ctx->dns = std::move(*dns);
    ctx->clients = impl->clients.get();
    impl->threads.push_back(std::move(ctx));
  }
  if (config.log) {
    auto w = netlog::Writer::open(*config.log, n);
    if (!w) return "--log: " + w.error();
    impl->log = std::move(*w);
    for (unsigned t = 0; t < n; ++t) impl->threads[t]->log = &impl->log->producer(t);
  }
  impl->acceptors.resize(n);
  // A listener of another process is not shared (SO_REUSEPORT) or taken
  // over (a unix socket): each connection would go to one of two policies.
  const std::string in_use =
      "something already listens there (another sandgate proxy? two would split the connections between their "
      "policies)";
  for (std::size_t i = 0; i < config.listeners.size(); ++i) {
    const auto& text = config.listeners[i].address;
    auto parsed = parse_listen(text);
    if (!parsed) return parsed.error();
    boost::system::error_code ec;
    if (parsed->fd >= 0) {
      // A socket someone else bound (systemd's socket activation): it must
      // be a listening stream socket; one acceptor serves it, as for unix.
      int accepting = 0, type = 0;
      socklen_t len = sizeof accepting;
      sockaddr_storage addr{};
      socklen_t addr_len = sizeof addr;
      if (::getsockopt(parsed->fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len) != 0 || !accepting ||
          (len = sizeof type, ::getsockopt(parsed->fd, SOL_SOCKET, SO_TYPE, &type, &len)) != 0 ||
          type != SOCK_STREAM || ::getsockname(parsed->fd, reinterpret_cast<sockaddr*>(&addr), &addr_len) != 0)
        return "--listen " + text + ": not an inherited listening stream socket";
      ::fcntl(parsed->fd, F_SETFD, FD_CLOEXEC);
      const Protocol::endpoint ep(&addr, addr_len, addr.ss_family == AF_UNIX ? 0 : IPPROTO_TCP);
      auto a = std::make_unique<Acceptor>(impl->threads[0]->io);
      a->assign(ep.protocol(), parsed->fd, ec);
      if (ec) return "--listen " + text + ": " + ec.message();
      if (addr.ss_family == AF_UNIX) {
        impl->bound.push_back("unix:" + std::string(reinterpret_cast<const sockaddr_un&>(addr).sun_path));
      } else {
        asio::ip::tcp::endpoint tcp;
        std::memcpy(tcp.data(), &addr, std::min<std::size_t>(addr_len, sizeof(sockaddr_in6)));
        impl->bound.push_back(tcp.address().is_v6() ? "[" + tcp.address().to_string() + "]:" + std::to_string(tcp.port())
                                                    : tcp.address().to_string() + ":" + std::to_string(tcp.port()));
      }
      impl->acceptors[0].emplace_back(i, std::move(a));
      continue;
    }
    if (parsed->is_unix) {
      // A stale socket from an earlier run is replaced; a live one (a proxy
      // still running: connecting reaches it) and any other file are not.
      const asio::local::stream_protocol::endpoint lep(parsed->path);
      struct stat st {};
      if (::lstat(parsed->path.c_str(), &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) return "--listen " + text + ": the path exists and is not a socket";
        const int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        const int rc = probe < 0 ? -1
                                 : ::connect(probe, static_cast<const sockaddr*>(lep.data()),
                                             static_cast<socklen_t>(lep.size()));
        const int err = rc == 0 ? 0 : errno;
        if (probe >= 0) ::close(probe);
        if (err == 0 || err == EAGAIN) return "--listen " + text + ": " + in_use;
        if (err != ECONNREFUSED)
          return "--listen " + text + ": cannot tell whether the socket is in use: " + std::strerror(err);
        ::unlink(parsed->path.c_str());
      }
      const Protocol::endpoint ep(lep.data(), lep.size(), 0);
      auto a = std::make_unique<Acceptor>(impl->threads[0]->io);
      a->open(ep.protocol(), ec);
      if (!ec) a->bind(ep, ec);
      if (!ec) a->listen(asio::socket_base::max_listen_connections, ec);
      if (ec) return "--listen " + text + ": " + ec.message();
      impl->bound.push_back(text);
      impl->acceptors[0].emplace_back(i, std::move(a));
      continue;
    }
    // One SO_REUSEPORT acceptor per thread: the kernel spreads connections.
    auto endpoint = parsed->tcp;
    // SO_REUSEPORT would also let this process join another's listener on
    // the same port (any process of the same user), and the kernel would
    // split the connections between two policies. A plain bind first
    // finds such a listener: it fails where one is listening.
    if (endpoint.port() != 0) {
      asio::ip::tcp::acceptor probe(impl->threads[0]->io);
      probe.open(endpoint.protocol(), ec);
      if (!ec) probe.set_option(asio::socket_base::reuse_address(true), ec);  // past TIME_WAIT, not a listener
      if (!ec) probe.bind(endpoint, ec);
      if (ec == asio::error::address_in_use) return "--listen " + text + ": " + in_use;
      if (ec) return "--listen " + text + ": " + ec.message();
    }
    for (unsigned t = 0; t < n; ++t) {
      const Protocol::endpoint ep(endpoint.data(), endpoint.size(), IPPROTO_TCP);
      auto a = std::make_unique<Acceptor>(impl->threads[t]->io);
      a->open(ep.protocol(), ec);
      if (!ec) a->set_option(asio::socket_base::reuse_address(true), ec);
      const int one = 1;
      if (!ec && ::setsockopt(a->native_handle(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0)
        ec.assign(errno, boost::system::system_category());
      if (!ec) a->bind(ep, ec);
      if (!ec) a->listen(asio::socket_base::max_listen_connections, ec);
      if (ec) return "--listen " + text + ": " + ec.message();
      // The client speaks first (a request head), so the kernel hands a
      // connection over only once its first bytes are in: one wakeup per
      // connection, not one for the handshake and one for the head. A
      // client that stays silent is handed over after about a second, and
      // its head timeout starts then. (Refused, it costs only that wakeup.)
      constexpr int defer_accept_s = 1;
      ::setsockopt(a->native_handle(), IPPROTO_TCP, TCP_DEFER_ACCEPT, &defer_accept_s, sizeof defer_accept_s);
      if (t == 0) {
        // Port 0: every thread binds the port the first one was given.
        const auto local = a->local_endpoint();
        std::memcpy(endpoint.data(), local.data(), local.size());
        impl->bound.push_back(endpoint.address().is_v6() ? "[" + endpoint.address().to_string() + "]:" +
                                                                std::to_string(endpoint.port())
                                                          : endpoint.address().to_string() + ":" +
                                                                std::to_string(endpoint.port()));
      }
      impl->acceptors[t].emplace_back(i, std::move(a));
    }
  }
  impl->config = std::move(config);
  impl->store = std::move(store);
  for (std::size_t i = 0; i < impl->config.listeners.size(); ++i) {
    impl->open_tunnels.push_back(std::make_unique<std::atomic<std::size_t>>(0));
    impl->sources.push_back(impl->log ? impl->log->add_source(impl->config.listeners[i].sandbox, impl->bound[i])
                                      : nullptr);
  }
  if (impl->log)
    impl->log->policy_loaded("start", impl->store->current().get(), impl->store->path(), {},
                             hosts ? std::optional(hosts_loaded(impl->config.hosts_file, *hosts)) : std::nullopt);
  for (std::size_t t = 0; t < n; ++t)
    for (auto& [i, a] : impl->acceptors[t])
      asio::co_spawn(impl->threads[t]->io,
                     accept_loop(*a, *impl->threads[t], impl->config.listeners[i], impl->sources[i],
                                 *impl->open_tunnels[i],
                                 a->local_endpoint().protocol().family() != AF_UNIX),
                     asio::detached);
  if (!impl->config.admin.empty()) {
    auto parsed = parse_listen(impl->config.admin);
    if (!parsed || parsed->is_unix) return "--admin " + impl->config.admin + ": write HOST:PORT";
    boost::system::error_code ec;
    impl->admin.emplace(impl->control);
    impl->admin->open(parsed->tcp.protocol(), ec);
    if (!ec) impl->admin->set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) impl->admin->bind(parsed->tcp, ec);
    if (!ec) impl->admin->listen(64, ec);
    if (ec) return "--admin " + impl->config.admin + ": " + ec.message();
    const auto ep = impl->admin->local_endpoint();
    impl->admin_bound = (ep.address().is_v6() ? "[" + ep.address().to_string() + "]" : ep.address().to_string()) +
                        ":" + std::to_string(ep.port());
  }
  // Signals are caught from here on: one that arrives before run() waits for it.
  if (impl->config.handle_signals) {
    impl->signals.emplace(impl->control, SIGHUP, SIGTERM, SIGINT);
    impl->signals->add(SIGUSR1);
  }
  std::unique_ptr<Server> server(new Server(std::move(impl)));
  if (server->impl_->signals) server->wait_signal();
  if (server->impl_->config.watch_policy) server->watch_files();
  if (auto& im = *server->impl_; im.admin) {
    im.admin_handlers.metrics = [s = server.get()] { return s->metrics_text(); };
    im.admin_handlers.healthy = [&im] { return !im.stopping.load(); };
    // Not the liveness check: a restart would not mend the disk, and would
    // lose the records the writer holds.
    im.admin_handlers.unready = [&im]() -> std::string {
      if (im.stopping.load()) return "stopping";
      if (const auto problem = im.log ? im.log->problem() : std::string(); !problem.empty())
        return "the network log is not being written (" + problem + "): new connections wait for it";
      return {};
    };
    asio::co_spawn(im.control,
                   detail::serve_admin(*im.admin, im.admin_handlers, std::make_shared<detail::SpareDescriptor>()),
                   asio::detached);
  }
  // Loading the policy (YAML nodes, rule compilation) freed megabytes that
  // malloc would otherwise keep: hand them back before serving.
  ::malloc_trim(0);
  return server;
}

void Server::reload() {
  auto& im = *impl_;
  // The hosts file first, on its own: a bad policy does not hold back a good
  // hosts file, nor the reverse. Each thread takes it for its next lookup.
  std::optional<netlog::Writer::HostsLoad> hosts_record;  // for the `policy` record
  if (!im.config.hosts_file.empty()) {
    if (auto h = load_hosts(im.config.hosts_file); h) {
      for (auto& t : im.threads) asio::post(t->io, [ctx = t.get(), hosts = *h] { ctx->hosts = hosts; });
      hosts_record = hosts_loaded(im.config.hosts_file, **h);
    } else {
      std::cerr << "sandgate proxy: " << h.error() << "; the last good hosts file stays in force\n";
      hosts_record = hosts_failed(im.config.hosts_file, h.error());
    }
  }
  auto r = im.store->reload();
  if (!r) {
    for (const auto& d : r.error()) std::cerr << d.to_string() << "\n";
    std::cerr << "sandgate proxy: reload failed; the last good policy stays in force\n";
    im.reloads_failed.fetch_add(1, std::memory_order_relaxed);
    if (im.log) im.log->policy_loaded("reload", nullptr, im.store->path(), r.error(), hosts_record);
    return;
  }
  // Each thread takes the new policy for its next request, on any connection,
  // and re-decides its own open tunnels and exchanges; no lock is shared.
  // Posted before the reload is reported: a thread runs its posted work in
  // order, so whatever follows the report finds the new policy.
  for (auto& t : im.threads)
    asio::post(t->io, [ctx = t.get(), set = *r, close_denied = im.config.close_denied_tunnels] {
      ctx->policy = set;
      if (!close_denied) return;
      const std::vector<detail::OpenConnection*> open(ctx->sessions.begin(), ctx->sessions.end());
      for (auto* session : open) session->recheck(*set);
    });
  if (im.log) im.log->policy_loaded("reload", r->get(), im.store->path(), {}, hosts_record);
  ::malloc_trim(0);  // the YAML nodes of the parse (see start)
  // A hosts file that did not load makes the reload an error too: an alert
  // on failed reloads must not miss it.
  (hosts_record && !hosts_record->error.empty() ? im.reloads_failed : im.reloads_ok)
      .fetch_add(1, std::memory_order_relaxed);
  std::cerr << "sandgate proxy: reloaded " << im.store->path() << " (sha256 " << (*r)->sha256.substr(0, 12)
            << ")\n";
}

void Server::wait_signal() {
  impl_->signals->async_wait([this](const boost::system::error_code& ec, int sig) {
    if (ec) return;
    if (sig == SIGHUP) {
      reload();
      wait_signal();
      return;
    }
    if (sig == SIGUSR1) {
      if (impl_->log) impl_->log->reopen();
      wait_signal();
      return;
    }
    stop();
  });
}

void Server::watch_files() {
  auto& im = *impl_;
  // Watch the folders, not the files: editors and config managers replace
  // files by renaming a new one over them. The hosts file too: a reload
  // reads both.
  const int fd = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fd < 0) return;
  struct Watched {
    int wd;
    std::filesystem::path dir;
    std::string file;  // its name in dir
  };
  std::vector<Watched> watched;
  for (const std::string& file : {im.store->path(), im.config.hosts_file}) {
    if (file.empty()) continue;
    const std::filesystem::path path(file);
    const auto dir = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
    const int wd = ::inotify_add_watch(fd, dir.c_str(), IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE);
    if (wd >= 0) watched.push_back({wd, dir, path.filename().string()});
  }
  if (watched.empty()) {
    ::close(fd);
    return;
  }
  // Invariant: the stream_descriptor owns the inotify fd and closes it.
  im.watch.emplace(im.control, fd);
  asio::co_spawn(
      im.control,
      [this, watched = std::move(watched)]() -> asio::awaitable<void> {
        auto& im2 = *impl_;
        alignas(inotify_event) char buf[4096];
        asio::steady_timer settle(im2.control);
        for (;;) {
          auto [ec, n] = co_await im2.watch->async_read_some(asio::buffer(buf), token);
          if (ec) co_return;
          bool ours = false;
          for (std::size_t at = 0; at < n;) {
            const auto* e = reinterpret_cast<const inotify_event*>(buf + at);
            // "..data": Kubernetes swaps this symlink to update a mounted
            // ConfigMap, and the file is a link through it.
            const std::string_view name = e->len > 0 ? e->name : "";
            for (const auto& w : watched) {
              if (w.wd != e->wd || (name != w.file && name != "..data")) continue;
              // A file just created is still being written: its close
              // (IN_CLOSE_WRITE) is the change, or a half-written policy
              // would be loaded. A symlink made there is whole at once, and
              // so is a hard link (link(2) to a file that has another name;
              // a file open(2) creates has one).
              const auto path = w.dir / std::string(name);
              std::error_code ec2;
              ours |= !(e->mask & IN_CREATE) || std::filesystem::is_symlink(path, ec2) ||
                      std::filesystem::hard_link_count(path, ec2) > 1;
            }
            at += sizeof(inotify_event) + e->len;
          }
          if (!ours) continue;
          // Let a burst of writes settle, then reload once: the events that
          // came meanwhile are this burst's.
          settle.expires_after(std::chrono::milliseconds(100));
          co_await settle.async_wait(token);
          while (::read(im2.watch->native_handle(), buf, sizeof buf) > 0) {
          }
          reload();
        }
      },
      asio::detached);
}

void Server::run() {
  auto& im = *impl_;
  std::vector<std::thread> workers;
  for (auto& t : im.threads) workers.emplace_back([&io = t->io, poll = im.config.busy_poll] { run_loop(io, poll); });
  im.control.run();
  for (auto& w : workers) w.join();
  // Every session has written its records: flush, final checkpoint, close.
  im.log.reset();
}

void Server::stop() {
  auto& im = *impl_;
  if (im.stopping.exchange(true)) return;
  im.close_acceptors();
  // Open connections get drain_timeout to finish, then the threads stop.
  asio::co_spawn(
      im.control,
      [this]() -> asio::awaitable<void> {
        auto& im2 = *impl_;
        const auto end = std::chrono::steady_clock::now() + im2.config.limits.drain_timeout;
        asio::steady_timer tick(im2.control);
        auto idle = [&] {
          for (auto& t : im2.threads)
            if (t->open_connections.load(std::memory_order_relaxed) != 0) return false;
          return true;
        };
        while (!idle() && std::chrono::steady_clock::now() < end) {
          tick.expires_after(std::chrono::milliseconds(20));
          co_await tick.async_wait(token);
        }
        // Time is up: close what is still open; each session logs its end.
        for (auto& t : im2.threads)
          asio::post(t->io, [ctx = t.get()] {
            const std::vector<detail::OpenConnection*> open(ctx->sessions.begin(), ctx->sessions.end());
            for (auto* s : open) s->end_for_shutdown();
          });
        const auto grace = std::chrono::steady_clock::now() + std::chrono::seconds(2);
        while (!idle() && std::chrono::steady_clock::now() < grace) {
          tick.expires_after(std::chrono::milliseconds(10));
          co_await tick.async_wait(token);
        }
        for (auto& t : im2.threads) t->io.stop();
        boost::system::error_code ignored;
        if (im2.signals) im2.signals->cancel(ignored);
        if (im2.watch) im2.watch->close(ignored);
        if (im2.admin) im2.admin->close(ignored);
        im2.control.stop();
      },
      asio::detached);
}

std::string Server::bound_address(std::size_t i) const { return impl_->bound.at(i); }
std::string Server::admin_address() const { return impl_->admin_bound; }
const std::vector<std::string>& Server::warnings() const { return impl_->warnings; }

std::string Server::metrics_text() const {
  const auto& im = *impl_;
  std::string out;
  auto metric = [&](std::string_view name, std::string_view type, std::string_view help, auto value) {
    out += "# HELP " + std::string(name) + " " + std::string(help) + "\n# TYPE " + std::string(name) + " " +
           std::string(type) + "\n" + std::string(name) + " " + std::to_string(value) + "\n";
  };
  // A per-thread counter array's element i, summed over the threads.
  auto total = [&](auto member, std::size_t i) {
    std::uint64_t n = 0;
    for (const auto& t : im.threads) n += (t->metrics.*member)[i].load(std::memory_order_relaxed);
    return n;
  };
  std::uint64_t open = 0, up = 0, down = 0;
  std::vector<const detail::Histogram*> decision, connect;
  for (const auto& t : im.threads) {
    open += t->open_connections.load(std::memory_order_relaxed);
    up += t->metrics.bytes_up.load(std::memory_order_relaxed);
    down += t->metrics.bytes_down.load(std::memory_order_relaxed);
    decision.push_back(&t->metrics.decision_seconds);
    connect.push_back(&t->metrics.connect_seconds);
  }
  const auto s = stats();
  metric("sandgate_connections_open", "gauge", "Client connections open now.", open);
  metric("sandgate_connections_total", "counter", "Client connections accepted.", s.connections);
  metric("sandgate_requests_total", "counter", "Requests read (CONNECT and plain HTTP).", s.requests);
  out += "# HELP sandgate_tunnels_total CONNECT tunnels ended, by how their bytes moved.\n"
         "# TYPE sandgate_tunnels_total counter\n"
         "sandgate_tunnels_total{path=\"splice\"} " + std::to_string(s.tunnels_spliced) + "\n"
         "sandgate_tunnels_total{path=\"buffered\"} " + std::to_string(s.tunnels_buffered) + "\n"
         "sandgate_tunnels_total{path=\"http\"} " + std::to_string(s.tunnels_http) + "\n";
  out += "# HELP sandgate_decisions_total Decisions by verdict and reason code.\n"
         "# TYPE sandgate_decisions_total counter\n";
  for (std::size_t v = 0; v < detail::verdicts.size(); ++v)
    for (std::size_t r = 0; r < detail::reason_codes.size(); ++r) {
      const auto n = total(&detail::Metrics::decisions, v * detail::reason_codes.size() + r);
      if (n == 0) continue;  // only what happened: the label set stays small
      out += "sandgate_decisions_total{verdict=\"" + std::string(detail::verdicts[v]) + "\",reason=\"" +
             std::string(detail::reason_codes[r]) + "\"} " + std::to_string(n) + "\n";
    }
  out += "# HELP sandgate_connections_refused_total Connections refused when accepted, before any request "
         "(no decision record).\n# TYPE sandgate_connections_refused_total counter\n";
  for (std::size_t r = 0; r < detail::accept_refusals.size(); ++r)
    out += "sandgate_connections_refused_total{reason=\"" + std::string(detail::accept_refusals[r]) + "\"} " +
           std::to_string(total(&detail::Metrics::refused, r)) + "\n";
  out += "# HELP sandgate_closes_total Allowed connections ended, by the end their close record names.\n"
         "# TYPE sandgate_closes_total counter\n";
  for (std::size_t e = 0; e < detail::end_reason_count; ++e)
    if (const auto n = total(&detail::Metrics::closes, e); n > 0)
      out += "sandgate_closes_total{end=\"" + std::string(netlog::to_string(static_cast<netlog::EndReason>(e))) +
             "\"} " + std::to_string(n) + "\n";
  out += "# HELP sandgate_bytes_total Bytes relayed for allowed connections.\n"
         "# TYPE sandgate_bytes_total counter\n"
         "sandgate_bytes_total{direction=\"up\"} " + std::to_string(up) + "\n"
         "sandgate_bytes_total{direction=\"down\"} " + std::to_string(down) + "\n";
  detail::append_histogram(out, "sandgate_decision_seconds", "Request head read to verdict, DNS included.",
                           decision);
  detail::append_histogram(out, "sandgate_connect_seconds", "Dialing the checked addresses.", connect);
  std::uint64_t questions = 0;
  for (const auto& t : im.threads) questions += t->dns->questions();
  metric("sandgate_dns_questions_total", "counter",
         "Lookups sent to DNS (what the cache, the hosts file and /etc/hosts did not answer).", questions);
  metric("sandgate_log_queue_depth", "gauge", "Records waiting for the log writer.", s.log.queue_depth);
  metric("sandgate_log_records_total", "counter", "Records written to the network log.", s.log.records);
  metric("sandgate_log_dropped_total", "counter", "Records dropped on a full queue (--log-when-full drop).",
         s.log.dropped);
  metric("sandgate_log_waits_total", "counter", "Times a connection waited for room in the log queue.",
         s.log_waits);
  metric("sandgate_log_write_errors_total", "counter", "Failed writes to the log file (retried).",
         s.log.write_errors);
  metric("sandgate_log_failing", "gauge", "Whether the log file cannot be opened or written now (its records held).",
         im.log && !im.log->problem().empty() ? 1 : 0);
  out += "# HELP sandgate_reloads_total Reloads (SIGHUP, a changed file) by result: error when the policy or the "
         "hosts file did not load (the last good one stays).\n# TYPE sandgate_reloads_total counter\n"
         "sandgate_reloads_total{result=\"ok\"} " + std::to_string(im.reloads_ok.load()) + "\n"
         "sandgate_reloads_total{result=\"error\"} " + std::to_string(im.reloads_failed.load()) + "\n";
  const auto set = im.store->current();
  out += "# HELP sandgate_policy_info The policy in force.\n# TYPE sandgate_policy_info gauge\n"
         "sandgate_policy_info{sha256=\"" + set->sha256 + "\"} 1\n";
  return out;
}

Stats Server::stats() const {
  Stats s;
  for (const auto& t : impl_->threads) {
    s.connections += t->counters.connections.load(std::memory_order_relaxed);
    s.requests += t->counters.requests.load(std::memory_order_relaxed);
    s.denied += t->counters.denied.load(std::memory_order_relaxed);
    s.tunnels_spliced += t->counters.spliced.load(std::memory_order_relaxed);
    s.tunnels_buffered += t->counters.buffered.load(std::memory_order_relaxed);
    s.tunnels_http += t->counters.http.load(std::memory_order_relaxed);
    s.log_waits += t->counters.log_waits.load(std::memory_order_relaxed);
  }
  if (impl_->log) s.log = impl_->log->stats();
  return s;
}

}  // namespace sandgate::proxy
