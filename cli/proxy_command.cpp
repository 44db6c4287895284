// `sandgate proxy`: run the forward proxy on one or more listeners.
#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <iostream>
#include <optional>
#include <string>

#include "commands.h"
#include "paths.h"
#include "sandgate/proxy/harden.h"
#include "sandgate/proxy/server.h"

namespace sandgate::cli {
namespace {

constexpr std::string_view proxy_usage = R"(usage: sandgate proxy --config POLICY --listen ADDR [--listen ADDR]... [options]

Runs the egress proxy: CONNECT tunnels and absolute-form HTTP/1.1 requests,
each decided by POLICY (YAML, or Docker's proxy-config.json by its .json
extension). Blocked requests get a 403 that names the rule and how to allow
it; malformed ones a 400. A tunnel carries only the host it was opened
for: a TLS ClientHello whose SNI, or a plain HTTP request whose Host, names
another host ends it (that request gets a 403, host-mismatch), and so does
plain HTTP turning into HTTP/2 in cleartext (h2c) or TLS, which would hide
the hosts of its requests.

SIGHUP reloads POLICY and the --hosts-file (a bad file keeps the last good
one), and so does any change to either unless --no-watch; after a reload,
open tunnels and plain-HTTP exchanges the new policy denies are closed
unless --keep-denied-tunnels. SIGTERM stops accepting and lets open
connections finish.

Every decision and every connection's end is written to the network log
(JSON Lines, hash-chained; read it with 'sandgate network log'). SIGUSR1
reopens the log file (for logrotate).

Listeners:
  --listen ADDR            HOST:PORT, [IPv6]:PORT or unix:PATH (repeatable)
  --listen ADDR=SANDBOX    the same, deciding with the sandbox's named policy
  --listen fd:N            a listening socket inherited as descriptor N
  --listen systemd         the sockets systemd's socket activation passed
                           (sandgate-proxy.socket)

Options:
  --config POLICY          the policy file (required)
  --hosts-file FILE        "ADDRESS NAME..." lines consulted before /etc/hosts
                           and DNS
  --dns-server ADDR[,...]  ask these DNS servers (IP, IP:PORT, [IPv6]:PORT)
                           instead of those in /etc/resolv.conf
  --admin HOST:PORT        serve GET /metrics (Prometheus), /healthz and /readyz
                           there
  --threads N              event loops (default: one per core)
  --busy-poll US           after work, an event loop polls this many
                           microseconds before it sleeps (default 0: sleeps
                           at once). In a VM, where a sleeping CPU wakes
                           slowly, 20-50 cuts a connection's latency by a
                           third, for CPU time spent polling while traffic
                           flows; idle, it costs nothing
  --forbid-report          refuse policies with 'report: true'
  --no-watch               reload on SIGHUP only, not when a file changes
  --no-seccomp             skip the process's own restrictions (by default, once
                           bound: no new privileges, and a seccomp filter that
                           refuses exec, fork, ptrace, mount, module loading and
                           identity changes with EPERM)
  --keep-denied-tunnels    leave open tunnels and exchanges alone when a reload
                           denies them
  --head-bytes N           request head limit (default 16384)
  --max-headers N          header field limit (default 100)
  --head-timeout MS        whole head within (default 10000)
  --resolve-timeout MS     DNS lookup (default 5000)
  --dns-cache MS           reuse a resolved answer at most this long, per thread
                           (default 5000; 0 = off): a DNS answer for its TTL
                           when shorter, an /etc/hosts answer and "no such
                           name" for all of it; cached addresses are still
                           checked
  --connect-timeout MS     per address dialed (default 10000)
  --idle-timeout MS        keep-alive and body idle (default 60000)
  --continue-timeout MS    an upload with Expect: 100-continue waits this long
                           for the origin's 100 or refusal before its body is
                           sent anyway (default 1000)
  --tunnel-idle-timeout MS CONNECT tunnel idle (default 300000)
  --drain-timeout MS       on SIGTERM (default 10000)
  --max-connections N      per thread (default 10000, or fewer where the
                           open-files limit cannot hold them: 3 each); more
                           get 503
  --max-client-connections N
                           per client address, all threads (default: no limit);
                           more get 429
  --max-tunnels N          open CONNECT tunnels per listener, i.e. per sandbox
                           (default: no limit); more get 429

Network log:
  --log FILE               the log (default $SANDGATE_HOME/log/network.jsonl,
                           $SANDGATE_HOME defaulting to ~/.sandgate)
  --log-key FILE           HMAC key for checkpoints, created if missing; must be
                           outside the log's folder (default
                           $SANDGATE_HOME/keys/log.key)
  --no-log                 write no log (not for production)
  --log-flush MS           write queued records at least this often; a kill -9
                           loses at most this much (default 200)
  --log-fsync MS           fsync at least this often (default 1000; 0 = every write)
  --log-max-bytes N        rotate to FILE.1, FILE.2, ... past N bytes
                           (default 268435456; 0 = only on SIGUSR1)
  --log-queue N            queued records per thread (default 1024, ~0.9 KiB each)
  --log-when-full MODE     block: new connections wait for room (default);
                           drop: count and log the loss, never wait
  --checkpoint-records N   an HMAC checkpoint at least every N records (default 10000)

  -h, --help               show this help

Examples:
  sandgate proxy --config /etc/sandgate/policy.yaml --listen 127.0.0.1:3128
  sandgate proxy --config policy.yaml --listen unix:/run/sandgate/agent1.sock=agent1 \
                 --listen 127.0.0.1:3129=agent2
  curl -x http://127.0.0.1:3128 https://api.anthropic.com/
)";

std::optional<std::uint64_t> number(std::string_view s) {
  std::uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || p != s.data() + s.size()) return std::nullopt;
  return v;
}

}  // namespace

int proxy_command(std::span<const std::string_view> args) {
  proxy::ServerConfig cfg;
  std::string policy_path;
  config::LoadOptions load;
  std::size_t max_tunnels = 0;
  netlog::WriterConfig log;
  log.path = default_log_path();
  log.key_file = default_key_path();
  bool no_log = false, no_seccomp = false;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const auto a = args[i];
    if (a == "-h" || a == "--help") {
      std::fputs(proxy_usage.data(), stdout);
      return 0;
    }
    if (a == "--forbid-report") {
      load.forbid_report = true;
      continue;
    }
    if (a == "--no-seccomp") {
      no_seccomp = true;
      continue;
    }
    if (a == "--no-watch") {
      cfg.watch_policy = false;
      continue;
    }
    if (a == "--no-log") {
      no_log = true;
      continue;
    }
    if (a == "--keep-denied-tunnels") {
      cfg.close_denied_tunnels = false;
      continue;
    }
    if (i + 1 >= args.size()) {
      std::cerr << "sandgate proxy: unknown option or missing value: '" << a << "' (see --help)\n";
      return 2;
    }
    const std::string_view v = args[++i];
    auto ms = [&](std::chrono::milliseconds& out) {
      auto n = number(v);
      if (!n) return false;
      out = std::chrono::milliseconds(*n);
      return true;
    };
    auto count = [&](std::size_t& out) {
      auto n = number(v);
      if (!n || *n == 0) return false;
      out = *n;
      return true;
    };
    bool ok = true;
    if (a == "--config") policy_path = v;
    else if (a == "--listen") {
      const auto eq = v.find('=');
      const std::string address(v.substr(0, eq)), sandbox(eq == std::string_view::npos ? "" : v.substr(eq + 1));
      if (address == "systemd") {
        // Socket activation: the sockets systemd passed, from fd 3 on.
        const char* pid = std::getenv("LISTEN_PID");
        const char* fds = std::getenv("LISTEN_FDS");
        const int n = fds ? std::atoi(fds) : 0;
        if (!pid || std::atol(pid) != static_cast<long>(::getpid()) || n <= 0) {
          std::cerr << "sandgate proxy: --listen systemd, but systemd passed no sockets (LISTEN_FDS); start it"
                       " through its .socket unit\n";
          return 2;
        }
        for (int fd = 3; fd < 3 + n; ++fd) cfg.listeners.push_back({"fd:" + std::to_string(fd), sandbox});
        ::unsetenv("LISTEN_PID");
        ::unsetenv("LISTEN_FDS");
        ::unsetenv("LISTEN_FDNAMES");
      } else {
        for (const auto& l : cfg.listeners)
          if (l.address == address && !address.ends_with(":0")) {  // port 0: each gets its own
            std::cerr << "sandgate proxy: --listen " << address << " is given twice; one listener has one policy\n";
            return 2;
          }
        cfg.listeners.push_back({address, sandbox});
      }
    } else if (a == "--hosts-file") cfg.hosts_file = v;
    else if (a == "--dns-server") {
      if (v.empty()) {
        std::cerr << "sandgate proxy: --dns-server needs IP, IP:PORT or [IPv6]:PORT, comma-separated\n";
        return 2;
      }
      cfg.dns_servers = v;
    }
    else if (a == "--admin") cfg.admin = v;
    else if (a == "--threads") {
      std::size_t n = 0;
      ok = count(n);
      cfg.threads = static_cast<unsigned>(n);
    } else if (a == "--busy-poll") {
      auto n = number(v);
      if (!n || *n > 10'000) {
        std::cerr << "sandgate proxy: --busy-poll takes microseconds from 0 to 10000, not '" << v << "'\n";
        return 2;
      }
      cfg.busy_poll = std::chrono::microseconds(*n);
    } else if (a == "--head-bytes") ok = count(cfg.limits.head_bytes);
    else if (a == "--max-headers") ok = count(cfg.limits.header_count);
    else if (a == "--max-connections") ok = count(cfg.limits.max_connections);
    else if (a == "--max-tunnels") ok = count(max_tunnels);
    else if (a == "--max-client-connections") ok = count(cfg.limits.max_client_connections);
    else if (a == "--head-timeout") ok = ms(cfg.limits.head_timeout);
    else if (a == "--connect-timeout") ok = ms(cfg.limits.connect_timeout);
    else if (a == "--resolve-timeout") ok = ms(cfg.limits.resolve_timeout);
    else if (a == "--dns-cache") {
      auto n = number(v);
      ok = n.has_value();
      if (ok) cfg.limits.dns_cache = std::chrono::milliseconds(*n);
    }
    else if (a == "--idle-timeout") ok = ms(cfg.limits.idle_timeout);
    else if (a == "--continue-timeout") ok = ms(cfg.limits.continue_timeout);
    else if (a == "--tunnel-idle-timeout") ok = ms(cfg.limits.tunnel_idle_timeout);
    else if (a == "--drain-timeout") ok = ms(cfg.limits.drain_timeout);
    else if (a == "--log") log.path = v;
    else if (a == "--log-key") log.key_file = v;
    else if (a == "--log-flush") ok = ms(log.flush_interval) && log.flush_interval.count() > 0;
    else if (a == "--log-fsync") ok = ms(log.fsync_interval);
    else if (a == "--log-max-bytes") {
      auto n = number(v);
      ok = n.has_value();
      if (ok) log.max_file_bytes = *n;
    } else if (a == "--log-queue") ok = count(log.queue_slots);
    else if (a == "--checkpoint-records") {
      std::size_t n = 0;
      ok = count(n);
      log.checkpoint_records = n;
    } else if (a == "--log-when-full") {
      if (v != "block" && v != "drop") {
        std::cerr << "sandgate proxy: --log-when-full takes block or drop, not '" << v << "'\n";
        return 2;
      }
      log.drop_when_full = v == "drop";
    }
    else {
      std::cerr << "sandgate proxy: unknown option '" << a << "' (see --help)\n";
      return 2;
    }
    if (!ok) {
      std::cerr << "sandgate proxy: " << a << " needs a positive number, not '" << v << "'\n";
      return 2;
    }
  }
  for (auto& l : cfg.listeners) l.max_tunnels = max_tunnels;
  if (policy_path.empty() || cfg.listeners.empty()) {
    std::cerr << "sandgate proxy: --config and at least one --listen are required (see --help)\n";
    return 2;
  }
  auto store = config::PolicyStore::open(policy_path, load);
  if (!store) {
    for (const auto& d : store.error()) std::cerr << d.to_string() << "\n";
    return 2;
  }
  std::shared_ptr<config::PolicyStore> shared(std::move(*store));
  for (const auto& w : shared->current()->warnings) std::cerr << w.to_string() << "\n";
  for (const auto& l : cfg.listeners)
    if (!l.sandbox.empty() && !shared->current()->named.contains(l.sandbox))
      std::cerr << "sandgate proxy: warning: " << policy_path << " has no policy for sandbox '" << l.sandbox
                << "'; its default policy applies\n";
  if (!no_log) cfg.log = log;
  auto server = proxy::Server::start(cfg, shared);
  if (!server) {
    std::cerr << "sandgate proxy: " << server.error() << "\n";
    return 1;
  }
  for (const auto& w : (*server)->warnings()) std::cerr << "sandgate proxy: warning: " << w << "\n";
  for (std::size_t i = 0; i < cfg.listeners.size(); ++i)
    std::cout << "sandgate proxy: listening on " << (*server)->bound_address(i)
              << (cfg.listeners[i].sandbox.empty() ? "" : " for sandbox " + cfg.listeners[i].sandbox) << "\n";
  if (cfg.log) std::cout << "sandgate proxy: logging to " << cfg.log->path << "\n";
  if (!cfg.admin.empty()) std::cout << "sandgate proxy: admin on " << (*server)->admin_address() << "\n";
  // Bound and open: from here on the process needs no new privileges and
  // none of the system calls the filter refuses.
  if (!no_seccomp) {
    if (auto why = proxy::restrict_process(); !why.empty()) {
      std::cerr << "sandgate proxy: cannot restrict the process (" << why << "); pass --no-seccomp to run anyway\n";
      return 1;
    }
  }
  std::cout.flush();
  (*server)->run();
  const auto s = (*server)->stats();
  std::cerr << "sandgate proxy: stopped after " << s.connections << " connections, " << s.requests << " requests, "
            << s.denied << " denied\n";
  if (s.log.dropped > 0)
    std::cerr << "sandgate proxy: " << s.log.dropped << " log records were dropped (--log-when-full drop)\n";
  return 0;
}

}  // namespace sandgate::cli
