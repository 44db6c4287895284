#include "sandgate/sync/share.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

namespace sandgate::sync {
namespace {

namespace fs = std::filesystem;

bool inside(const fs::path& child, const fs::path& parent) {
  const auto rel = child.lexically_relative(parent);
  return !rel.empty() && *rel.begin() != "..";
}

}  // namespace

std::string unsafe_workspace_reason(const std::string& workspace, const std::string& home) {
  const fs::path ws = fs::path(workspace).lexically_normal();
  if (ws == "/" || ws.empty()) return "it is the root folder";
  if (!home.empty() && ws == fs::path(home).lexically_normal()) return "it is your home folder itself";
  static const char* secrets[] = {".ssh", ".aws", ".gnupg", ".docker", ".config/gcloud", ".kube"};
  for (const auto* s : secrets) {
    if (home.empty()) break;
    const auto store = (fs::path(home) / s).lexically_normal();
    if (ws == store || inside(ws, store)) return "it lies inside " + store.string() + ", a secret store";
    if (inside(store, ws) && fs::exists(store)) return "it contains " + store.string() + ", a secret store";
  }
  return {};
}

boost::system::result<std::unique_ptr<Share>, std::string> Share::start(const ShareConfig& c) {
  if (::access(c.virtiofsd.c_str(), X_OK) != 0)
    return c.virtiofsd + " is missing (apt-get install qemu-system-common)";
  ::unlink(c.socket.c_str());
  // Bind the socket here and hand it over as fd 3: virtiofsd then needs no
  // pid-lock folder, which an unprivileged user cannot create.
  // Invariant: sock is closed in the parent after the fork; the child keeps it as fd 3.
  const int sock = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (c.socket.size() >= sizeof addr.sun_path) return "the socket path " + c.socket + " is too long";
  std::strncpy(addr.sun_path, c.socket.c_str(), sizeof addr.sun_path - 1);
  if (sock < 0 || ::bind(sock, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(sock, 1) != 0) {
    const std::string why = std::strerror(errno);
    if (sock >= 0) ::close(sock);
    return "cannot listen on " + c.socket + ": " + why;
  }
  const int log = ::open(c.log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  const uid_t uid = ::getuid();
  // Everything the child needs is built before fork: the caller has other
  // threads (the proxy's), so the child may only make async-signal-safe calls.
  const std::string uid_map = "0 " + std::to_string(uid) + " 1";
  const std::string gid_map = "0 " + std::to_string(::getgid()) + " 1";
  const std::string source = "source=" + c.workspace;
  const std::vector<const char*> argv = {c.virtiofsd.c_str(), "--fd=3", "-o", source.c_str(), "-o", "cache=auto",
                                         "-o", "sandbox=namespace", "-o", "xattr", nullptr};
  auto write_file = [](const char* path, std::string_view text) {
    const int f = ::open(path, O_WRONLY);
    const bool ok = f >= 0 && ::write(f, text.data(), text.size()) == static_cast<ssize_t>(text.size());
    if (f >= 0) ::close(f);
    return ok;
  };
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (log >= 0) {
      ::dup2(log, 1);
      ::dup2(log, 2);
    }
    ::dup2(sock, 3);
    if (uid != 0) {
      // Map the invoking user to root in a new user namespace: virtiofsd gets
      // the capabilities its sandbox needs, and the files it creates on the
      // host belong to the invoking user.
      if (::unshare(CLONE_NEWUSER) != 0 || !write_file("/proc/self/setgroups", "deny") ||
          !write_file("/proc/self/uid_map", uid_map) || !write_file("/proc/self/gid_map", gid_map)) {
        constexpr char msg[] = "sandgate: cannot enter a user namespace for virtiofsd\n";
        (void)!::write(2, msg, sizeof msg - 1);
        ::_exit(126);
      }
    }
    ::execv(argv[0], const_cast<char* const*>(argv.data()));
    constexpr char msg[] = "sandgate: cannot run virtiofsd\n";
    (void)!::write(2, msg, sizeof msg - 1);
    ::_exit(127);
  }
  ::close(sock);
  if (log >= 0) ::close(log);
  if (pid < 0) return std::string("fork: ") + std::strerror(errno);
  // The socket already listens, so QEMU may connect at once; if virtiofsd
  // fails its start-up, QEMU reports the vhost-user backend gone.
  return std::unique_ptr<Share>(new Share(pid, c.socket));
}

bool Share::running() {
  if (exited_) return false;
  int st = 0;
  if (::waitpid(pid_, &st, WNOHANG) == pid_) exited_ = true;
  return !exited_;
}

Share::~Share() {
  if (running()) {
    // virtiofsd exits by itself when QEMU goes; this is for the error paths.
    ::kill(pid_, SIGTERM);
    for (int i = 0; i < 100 && running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (running()) ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  ::unlink(socket_.c_str());
}

}  // namespace sandgate::sync
