// A sandbox's network process: its proxy, and the relay of the guest's
// network port to it. Everything the guest sends off the VM, and every
// answer an origin sends back, is parsed here, so this is the code a
// hostile guest or origin attacks. It runs apart from `sandgate run` (which
// holds the machine, the workspace share and, run by root, every privilege):
// - as a user of its own when started by root (0x70000000 + its pid, as
//   QEMU's is: vmm::MachineConfig::RunAs), with no capability and no way to
//   gain one, so a proxy that was taken over holds no root and no other
//   process's user;
// - with the proxy's seccomp filter (proxy::restrict_process: no exec, no
//   fork, no mount, no change of identity);
// - holding only its own descriptors: not the sandbox's lock, the agent's
//   socket, QEMU's or virtiofsd's;
// - finding its files by names relative to the sandbox's folder, its working
//   directory: the folder may lie in a home closed to its user (/root). It
//   reads its policy and hosts file (the sandbox's own copies), writes its
//   log folder (handed to its user while it runs, and back after) and
//   serves the unix socket the relay dials;
// - in a process group of its own: a Ctrl-C at the terminal is for the
//   command in the guest, not the proxy. SIGTERM drains it, SIGHUP reloads
//   its policy, SIGUSR1 reopens its log; it gets SIGTERM when its parent dies.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include <boost/system/result.hpp>

#include "sandgate/vmm/machine.h"

namespace sandgate::cli {

struct SandboxProxyConfig {
  std::filesystem::path state;  // the sandbox's folder
  std::string name;             // the sandbox: its listener's name, for its policy and log
  std::string policy_file;      // in `state`: "policy.yaml" or "policy.json"
  bool hosts_file = false;      // `state`/hosts, consulted before DNS
  std::string dns_servers;      // proxy::ServerConfig::dns_servers
  std::string net_socket;       // QEMU's socket for the guest's network port (vmm::Machine::net_socket)
  // The user to run as (its own: uid_for(pid)), when started by root.
  std::optional<vmm::MachineConfig::RunAs> run_as;
  // Once started, its stderr goes to `state`/supervisor.log rather than the
  // caller's (a detached sandbox's caller waits for its stderr to close).
  bool detached = false;
};

class SandboxProxy {
 public:
  // Forks the network process and waits until it serves; fails with what
  // stopped it (the policy's diagnostics, a listener, the log).
  static boost::system::result<std::unique_ptr<SandboxProxy>, std::string> start(const SandboxProxyConfig& config);
  // SIGTERM, so it drains and closes its log (SIGKILL if that takes past
  // the drain time), then hands the log folder back to this process's user.
  ~SandboxProxy();

  pid_t pid() const noexcept { return pid_; }
  uid_t uid() const noexcept { return uid_; }
  // False once it has exited (reaped here).
  bool running();

 private:
  SandboxProxy(pid_t pid, uid_t uid, std::filesystem::path state) : pid_(pid), uid_(uid), state_(std::move(state)) {}
  pid_t pid_;
  uid_t uid_;
  std::filesystem::path state_;
  bool exited_ = false;
};

}  // namespace sandgate::cli
