// The workspace shared into a sandbox at the same absolute path: one
// virtiofsd per sandbox (Debian's, from qemu-system-common), with its
// namespace sandbox on, serving a vhost-user socket QEMU attaches as
// vhost-user-fs-device. sync knows nothing of HTTP or of the guest.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <boost/system/result.hpp>

namespace sandgate::sync {

// Why a folder must not be shared, or "" when it may be: "/", a home folder
// itself, or a folder that holds or lies inside a known secret store
// (~/.ssh, ~/.aws, ~/.gnupg, ~/.docker, ~/.config/gcloud, ~/.kube). `home`
// is the invoking user's home folder.
std::string unsafe_workspace_reason(const std::string& workspace, const std::string& home);

// Checks an --exclude pattern: "" when usable, else why not.
std::string exclude_pattern_error(std::string_view pattern);

// The paths under `workspace` that `patterns` hide, as absolute paths, found
// by walking the workspace once (symlinks are not followed, and a hidden
// folder is not entered). A pattern without '/' matches a name at any depth
// (".env", "*.pem"); one with '/' matches the path from the workspace's top
// ("config/secrets.yaml", "/build/*.key"). Shell wildcards, as fnmatch(3).
std::vector<std::string> find_excluded(const std::string& workspace, const std::vector<std::string>& patterns);

struct ShareConfig {
  std::string workspace;   // absolute, canonical
  std::string socket;      // the vhost-user socket to create
  std::string log;         // virtiofsd's own output
  std::string virtiofsd = "/usr/lib/qemu/virtiofsd";
  bool readonly = false;   // the guest cannot change anything in the workspace
  // Paths (from find_excluded) the guest sees as empty and read-only.
  std::vector<std::string> hidden;
  std::string scratch_dir;  // where the empty stand-ins for hidden paths live
};

class Share {
 public:
  // Starts virtiofsd on a socket bound beforehand and passed as --fd. As root
  // it runs with sandbox=namespace directly; otherwise inside a new user
  // namespace that maps the invoking user to root (files the guest creates
  // belong to the invoking user). Read-only sharing and hidden paths are
  // mounts in a mount namespace of virtiofsd's own, made before it starts:
  // the guest cannot undo them, and the host's view is untouched. virtiofsd
  // runs without CAP_MKNOD, so the guest cannot create device files.
  static boost::system::result<std::unique_ptr<Share>, std::string> start(const ShareConfig& config);
  ~Share();  // stops virtiofsd if it still runs

  const std::string& socket() const noexcept { return socket_; }
  pid_t pid() const noexcept { return pid_; }
  bool running();  // false once virtiofsd has exited
  // What the caller should tell the user about this share ("" when nothing).
  const std::string& warning() const noexcept { return warning_; }

 private:
  Share(pid_t pid, std::string socket) : pid_(pid), socket_(std::move(socket)) {}
  pid_t pid_;
  std::string socket_;
  bool exited_ = false;
  std::string warning_;
};

}  // namespace sandgate::sync
