#include "sandbox_proxy.h"

#include <fcntl.h>
#include <grp.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstring>
#include <iostream>
#include <thread>

#include "paths.h"
#include "sandbox_state.h"
#include "sandgate/config/policy_store.h"
#include "sandgate/proxy/harden.h"
#include "sandgate/proxy/server.h"
#include "sandgate/vmm/stream_mux.h"

namespace sandgate::cli {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view ready = "ready";
// The names the network process finds its files by, in the sandbox's folder.
constexpr const char* proxy_socket = "proxy.sock";
constexpr const char* log_folder = "log";

void say(int fd, std::string_view text) { (void)!::write(fd, text.data(), text.size()); }

// The network process, from fork to exit: it never returns into the
// caller's frames (their destructors would stop the caller's machine).
// What stops it from serving goes to `report`, as does "ready" once it serves.
[[noreturn]] void serve(const SandboxProxyConfig& c, int report, pid_t parent) {
  const auto fail = [&](const std::string& why) {
    say(report, why);
    ::_exit(1);
  };
  ::prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (::getppid() != parent) ::_exit(1);
  ::prctl(PR_SET_NAME, "sandgate-proxy");
  ::setpgid(0, 0);
  // Only the standard streams and the report pipe stay open.
  if (::dup2(report, 3) != 3) fail(std::string("cannot move the report pipe: ") + std::strerror(errno));
  report = 3;
  ::close_range(4, ~0u, 0);
  if (::chdir(c.state.c_str()) != 0) fail("cannot enter " + c.state.string() + ": " + std::strerror(errno));
  const int port = vmm::connect_guest_network(c.net_socket);
  if (port < 0) fail("cannot connect to the guest's network port " + c.net_socket + ": " + std::strerror(errno));

  auto store = config::PolicyStore::open(c.policy_file);
  if (!store) {
    std::string why;
    for (const auto& d : store.error()) why += d.to_string() + "\n";
    fail(why);
  }
  proxy::ServerConfig pc;
  pc.listeners.push_back({std::string("unix:") + proxy_socket, c.name, 0});
  pc.threads = 1;
  pc.hosts_file = c.hosts_file ? "hosts" : "";
  pc.dns_servers = c.dns_servers;
  netlog::WriterConfig log;
  log.path = std::string(log_folder) + "/network.jsonl";
  log.key_file = default_key_path();
  pc.log = log;
  auto server = proxy::Server::start(pc, std::shared_ptr<config::PolicyStore>(std::move(*store)));
  if (!server) fail("proxy: " + server.error());
  for (const auto& w : (*server)->warnings()) std::cerr << "sandgate run: proxy: warning: " << w << "\n";

  // Detached, its stderr must stop being the caller's pipe: the caller waits for it to close.
  const int log_fd = c.detached ? ::open("supervisor.log", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600) : -1;
  if (c.detached && log_fd < 0) fail(std::string("cannot open supervisor.log: ") + std::strerror(errno));
  if (c.run_as) {
    // What it writes from here on is its own: the socket the relay dials
    // (connect(2) needs write permission) and the log folder (rotation
    // makes files there). Its key is read already.
    const uid_t uid = c.run_as->uid_for(::getpid());
    const gid_t gid = c.run_as->gid;
    if (::chown(proxy_socket, uid, gid) != 0 || ::chown(log_folder, uid, gid) != 0)
      fail(std::string("cannot hand the proxy's socket and log folder to its user: ") + std::strerror(errno));
    // glibc's wrappers change every thread's (the log's run already).
    if (::setgroups(0, nullptr) != 0 || ::setresgid(gid, gid, gid) != 0 || ::setresuid(uid, uid, uid) != 0)
      fail(std::string("cannot become the proxy's own user: ") + std::strerror(errno));
    // A change of user clears the parent-death signal.
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(1);
  }
  // Said now rather than found out later as a reload that fails, a
  // rotation that cannot happen or a guest whose connections go nowhere.
  for (const auto& [file, mode] : {std::pair{c.policy_file.c_str(), R_OK}, std::pair{proxy_socket, W_OK},
                                   std::pair{log_folder, W_OK | X_OK}})
    if (::access(file, mode) != 0)
      fail("the proxy's user cannot " + std::string(mode == R_OK ? "read " : "write ") + (c.state / file).string() +
           ": " + std::strerror(errno));
  if (auto why = proxy::restrict_process(); !why.empty()) fail("cannot restrict the proxy's process: " + why);
  if (log_fd >= 0) {
    ::dup2(log_fd, 2);
    ::close(log_fd);
  }
  say(report, ready);
  ::close(report);

  std::jthread relay([port](std::stop_token stop) { vmm::relay_guest_network(port, proxy_socket, stop); });
  (*server)->run();
  relay.request_stop();
  relay.join();
  ::_exit(0);
}

}  // namespace

boost::system::result<std::unique_ptr<SandboxProxy>, std::string> SandboxProxy::start(const SandboxProxyConfig& config) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return std::string("pipe: ") + std::strerror(errno);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(p[0]);
    ::close(p[1]);
    return std::string("fork: ") + std::strerror(errno);
  }
  if (pid == 0) {
    ::close(p[0]);
    try {
      serve(config, p[1], parent);
    } catch (const std::exception& e) {
      say(p[1], std::string("the network process failed: ") + e.what());
    }
    ::_exit(1);
  }
  ::close(p[1]);
  auto said = read_until_closed(p[0]);
  const uid_t uid = config.run_as ? config.run_as->uid_for(pid) : ::getuid();
  std::unique_ptr<SandboxProxy> proxy(new SandboxProxy(pid, uid, config.state));
  if (said != ready) {
    if (said.empty()) said = "the network process ended before it served";
    while (said.ends_with('\n')) said.pop_back();
    return said;  // the destructor reaps it
  }
  return proxy;
}

bool SandboxProxy::running() {
  if (!exited_ && ::waitpid(pid_, nullptr, WNOHANG) == pid_) exited_ = true;
  return !exited_;
}

SandboxProxy::~SandboxProxy() {
  if (running()) {
    ::kill(pid_, SIGTERM);
    // Its drain time (proxy::Limits::drain_timeout), and a little more.
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(12);
    while (running() && std::chrono::steady_clock::now() < end) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (running()) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  if (uid_ == ::getuid()) return;
  // Its user dies with it; its log stays this user's.
  std::error_code ec;
  const auto folder = state_ / log_folder;
  (void)!::lchown(folder.c_str(), ::getuid(), ::getgid());
  for (const auto& e : fs::directory_iterator(folder, ec)) (void)!::lchown(e.path().c_str(), ::getuid(), ::getgid());
}

}  // namespace sandgate::cli
