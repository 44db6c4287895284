#include "sandgate/sync/share.h"

#include <fcntl.h>
#include <fnmatch.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
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

std::string exclude_pattern_error(std::string_view pattern) {
  if (pattern.empty() || pattern == "/") return "an empty pattern would hide nothing";
  const fs::path p(std::string(pattern.starts_with('/') ? pattern.substr(1) : pattern));
  for (const auto& part : p)
    if (part == "..") return "'..' is not allowed: patterns are paths inside the workspace";
  if (pattern.find('\0') != std::string_view::npos) return "a NUL byte is not allowed";
  return {};
}

std::vector<std::string> find_excluded(const std::string& workspace, const std::vector<std::string>& patterns) {
  std::vector<std::string> names, paths;  // patterns without '/' and with
  for (const auto& p : patterns) {
    if (p.find('/') == std::string::npos) names.push_back(p);
    else paths.push_back(p.front() == '/' ? p.substr(1) : p);
  }
  std::vector<std::string> found;
  std::error_code ec;
  fs::recursive_directory_iterator it(workspace, fs::directory_options::skip_permission_denied, ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    const auto& entry = *it;
    const auto name = entry.path().filename().string();
    const auto rel = entry.path().lexically_relative(workspace).string();
    bool hide = false;
    for (const auto& n : names) hide |= ::fnmatch(n.c_str(), name.c_str(), FNM_PERIOD) == 0;
    for (const auto& p : paths) hide |= ::fnmatch(p.c_str(), rel.c_str(), FNM_PATHNAME | FNM_PERIOD) == 0;
    // A symlink is only text to the guest, which resolves it in its own
    // file system; mounting over it would follow it out of the workspace.
    if (!hide || entry.is_symlink(ec)) continue;
    const bool dir = entry.is_directory(ec);
    if (!dir && !entry.is_regular_file(ec)) continue;
    found.push_back(entry.path().string());
    if (dir) it.disable_recursion_pending();
  }
  return found;
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
  // Everything the child needs is built before fork: the caller may have
  // other threads (a library's), so the child may only make async-signal-safe calls.
  const std::string uid_map = "0 " + std::to_string(uid) + " 1";
  const std::string gid_map = "0 " + std::to_string(::getgid()) + " 1";
  const std::string source = "source=" + c.workspace;
  // virtiofsd holds a descriptor for every inode the guest knows: a
  // checkout with node_modules needs far more than a shell's limit. As root
  // it may raise its own; otherwise it gets the hard limit it inherits.
  rlimit nofile{};
  ::getrlimit(RLIMIT_NOFILE, &nofile);
  if (nofile.rlim_max < 1'000'000) {
    // Needs CAP_SYS_RESOURCE; a container's root may lack it.
    const rlimit more{1'000'000, 1'000'000};
    if (::setrlimit(RLIMIT_NOFILE, &more) == 0) nofile = more;
  }
  const auto max_files = nofile.rlim_max;
  std::string warning;
  if (max_files < 65536)
    warning = "virtiofsd can hold at most " + std::to_string(max_files) +
              " files open (this process's hard limit), one for every file the guest has looked at: past that the"
              " guest sees 'Bad file descriptor'. Raise the limit (ulimit -Hn, systemd's LimitNOFILE=)";
  const std::string rlimit_arg = "--rlimit-nofile=" + std::to_string(max_files);
  const std::vector<const char*> argv = {c.virtiofsd.c_str(), "--fd=3", rlimit_arg.c_str(), "-o", source.c_str(),
                                         "-o", "cache=auto", "-o", "sandbox=namespace", "-o", "xattr",
                                         "-o", "modcaps=-mknod", nullptr};
  // Empty stand-ins mounted over hidden paths, read-only.
  const std::string empty_file = c.scratch_dir + "/hidden-file", empty_dir = c.scratch_dir + "/hidden-dir";
  struct Cover {
    const char* stand_in;
    const char* path;
  };
  std::vector<Cover> covers;
  if (!c.hidden.empty()) {
    std::error_code ec;
    fs::create_directories(empty_dir, ec);
    fs::permissions(empty_dir, fs::perms::owner_read | fs::perms::owner_exec, ec);
    ::unlink(empty_file.c_str());  // a read-only one from an earlier run
    const int f = ::open(empty_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0400);
    if (f < 0 || ec) {
      if (f >= 0) ::close(f);
      ::close(sock);
      return "cannot create the stand-ins for hidden paths in " + c.scratch_dir;
    }
    ::close(f);
    for (const auto& h : c.hidden) covers.push_back({fs::is_directory(h) ? empty_dir.c_str() : empty_file.c_str(), h.c_str()});
  }
  const bool own_mounts = c.readonly || !covers.empty();
  const char* ws = c.workspace.c_str();
  const bool c_readonly = c.readonly;
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
    if (own_mounts) {
      // A mount namespace of virtiofsd's own: the workspace bound onto
      // itself, hidden paths covered, then made read-only if asked.
      constexpr unsigned long ro = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV;
      bool ok = ::unshare(CLONE_NEWNS) == 0 && ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0 &&
                ::mount(ws, ws, nullptr, MS_BIND | MS_REC, nullptr) == 0;
      for (const auto& cover : covers)
        ok = ok && ::mount(cover.stand_in, cover.path, nullptr, MS_BIND, nullptr) == 0 &&
             ::mount(nullptr, cover.path, nullptr, ro, nullptr) == 0;
      if (ok && c_readonly) ok = ::mount(nullptr, ws, nullptr, ro, nullptr) == 0;
      if (!ok) {
        constexpr char msg[] = "sandgate: cannot prepare the workspace's mounts for virtiofsd\n";
        (void)!::write(2, msg, sizeof msg - 1);
        ::_exit(126);
      }
    }
    ::close_range(4, ~0U, 0);  // its socket is 3; nothing else of this process goes with it (see machine.cpp)
    ::execv(argv[0], const_cast<char* const*>(argv.data()));
    constexpr char msg[] = "sandgate: cannot run virtiofsd\n";
    (void)!::write(2, msg, sizeof msg - 1);
    ::_exit(127);
  }
  ::close(sock);
  if (log >= 0) ::close(log);
  if (pid < 0) return std::string("fork: ") + std::strerror(errno);
  // Ready when it says it waits for QEMU; a virtiofsd that cannot set up its
  // sandbox (no namespaces in a container, say) exits before that.
  std::unique_ptr<Share> share(new Share(pid, c.socket));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);  // a loaded host
  for (;;) {
    std::ifstream in(c.log);
    const std::string said((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (said.find("Waiting for vhost-user socket connection") != std::string::npos) break;
    if (!share->running() || std::chrono::steady_clock::now() > deadline) {
      auto last = said.substr(0, said.find_last_not_of('\n') + 1);
      last = last.substr(last.find_last_of('\n') + 1);
      return "virtiofsd did not start" + (last.empty() ? std::string() : ": " + last) + " (see " + c.log + ")";
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  share->warning_ = std::move(warning);
  return share;
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
