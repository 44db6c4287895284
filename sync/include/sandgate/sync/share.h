// The workspace shared into a sandbox at the same absolute path: one
// virtiofsd per sandbox (Debian's, from qemu-system-common), with its
// namespace sandbox on, serving a vhost-user socket QEMU attaches as
// vhost-user-fs-device. sync knows nothing of HTTP or of the guest.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>

#include <boost/system/result.hpp>

namespace sandgate::sync {

// Why a folder must not be shared, or "" when it may be: "/", a home folder
// itself, or a folder that holds or lies inside a known secret store
// (~/.ssh, ~/.aws, ~/.gnupg, ~/.docker, ~/.config/gcloud, ~/.kube). `home`
// is the invoking user's home folder.
std::string unsafe_workspace_reason(const std::string& workspace, const std::string& home);

struct ShareConfig {
  std::string workspace;   // absolute, canonical
  std::string socket;      // the vhost-user socket to create
  std::string log;         // virtiofsd's own output
  std::string virtiofsd = "/usr/lib/qemu/virtiofsd";
};

class Share {
 public:
  // Starts virtiofsd and waits (bounded) for its socket. As root it runs with
  // sandbox=namespace directly; otherwise inside a new user namespace that
  // maps the invoking user to root, with the socket bound beforehand and
  // passed as --fd (files the guest creates belong to the invoking user).
  static boost::system::result<std::unique_ptr<Share>, std::string> start(const ShareConfig& config);
  ~Share();  // stops virtiofsd if it still runs

  const std::string& socket() const noexcept { return socket_; }
  pid_t pid() const noexcept { return pid_; }
  bool running();  // false once virtiofsd has exited

 private:
  Share(pid_t pid, std::string socket) : pid_(pid), socket_(std::move(socket)) {}
  pid_t pid_;
  std::string socket_;
  bool exited_ = false;
};

}  // namespace sandgate::sync
