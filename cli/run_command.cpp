// `sandgate run`: a sandbox on a workspace. Boots a QEMU microVM whose only
// network path is the sandbox's own proxy (the guest's connections reach it
// as streams on a virtio-serial port), run with its relay in a process of
// its own (sandbox_proxy.h), runs a command in the guest through its agent,
// and shuts it down.
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <charconv>
#include <csignal>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "commands.h"
#include "images.h"
#include "paths.h"
#include "sandbox_proxy.h"
#include "sandbox_state.h"
#include "sandgate/config/policy_store.h"
#include "sandgate/sync/share.h"
#include "sandgate/vmm/agent_client.h"
#include "sandgate/vmm/control.h"
#include "sandgate/vmm/machine.h"

namespace sandgate::cli {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view run_usage = R"(usage: sandgate run [-d] [options] WORKSPACE [-- CMD...]

Boots a sandbox for WORKSPACE: a QEMU microVM with its own kernel whose only
way out is sandgate's proxy, deciding every connection by the policy. The
workspace is shared into it at the same absolute path (virtio-fs): what the
command writes there is on the host at once, and the reverse. Runs CMD there
and exits with its status (without CMD: an interactive shell, on a
terminal when there is one). With -d it
returns once the guest is ready and the sandbox stays up for 'sandgate exec'
until 'sandgate stop'.
Every decision goes to the sandbox's network log ('sandgate network log NAME').

Options:
  -d, --detach       start the sandbox in the background and print its name
  --name NAME        the sandbox's name (default: the workspace folder's name)
  --policy FILE      policy YAML or Docker proxy-config.json (default:
                     $SANDGATE_HOME/policy.yaml if it exists, else the bundled
                     default policy); the sandbox decides by its own copy
  -e KEY=VALUE       set an environment variable for CMD (repeatable)
  --hosts-file FILE  "ADDRESS NAME..." lines the sandbox's proxy consults
                     before DNS (pin names; the guest itself resolves nothing).
                     Like the policy, the sandbox keeps its own copy
  --dns-server ADDR[,ADDR...]
                     DNS servers the sandbox's proxy asks (IP, IP:PORT,
                     [IPv6]:PORT) instead of those in /etc/resolv.conf
  -w DIR             CMD's working directory in the guest (default: WORKSPACE)
  --allow-unsafe-workspace
                     share WORKSPACE even if it is /, a home folder itself, or
                     holds or lies in a secret store (~/.ssh, ~/.aws, ~/.gnupg,
                     ~/.docker, ~/.config/gcloud, ~/.kube)
  --workspace-readonly
                     share WORKSPACE read-only: the guest can read it but not
                     change, create or delete anything in it
  --exclude PATTERN  hide matching paths from the guest (repeatable): they
                     appear empty and read-only there. Without '/' a pattern
                     matches a name at any depth ('.env', '*.pem'); with '/'
                     a path from the workspace's top ('/secrets', 'config/*.key').
                     Matched when the sandbox starts; files the guest creates
                     later are not hidden from it
  --cpus N           virtual CPUs (default 1)
  --memory MIB       guest RAM (default 512)
  --accel MODE       auto, kvm or tcg (default auto: KVM only where it really
                     runs a guest, else TCG)
  --boot-timeout MS  time for the guest agent to answer (default 60000)
  -h, --help         show this help

Environment: SANDGATE_HOME (default ~/.sandgate), SANDGATE_VIRTIOFSD (another
virtiofsd; without a working one the workspace is shared over virtio-9p).

Examples:
  sandgate run ~/src/app -- uname -a
  sandgate run --policy allow-github.yaml ~/src/app -- sh -c 'wget -O- http://example.com/'
  sandgate run --exclude .env --exclude '*.pem' ~/src/app -- npm test
  sandgate run --workspace-readonly ~/src/app -- git log --stat
  sandgate network log app
)";

std::string sanitize_name(std::string_view s) {
  std::string out;
  for (char c : s) out += std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' ? c : '-';
  while (!out.empty() && out.front() == '-') out.erase(0, 1);
  return out.empty() ? "sandbox" : out.substr(0, 48);
}

volatile std::sig_atomic_t terminate = 0;

// A detached sandbox's life after boot: tell the parent it is ready, then
// relay exec clients to the agent until `sandgate stop`, SIGTERM, or the VM
// ends by itself (a guest poweroff or a QEMU crash).
int supervise(const fs::path& state, vmm::Machine& machine, SandboxProxy& proxy, vmm::AgentClient& agent,
              int ready_fd) {
  auto listen_fd = vmm::listen_control((state / "control.sock").string());
  if (!listen_fd) {
    std::cerr << "sandgate run: " << listen_fd.error() << "\n";
    return 1;
  }
  (void)!::write(ready_fd, ready_marker.data(), ready_marker.size());
  // From here on stderr is the supervisor's log, not the parent's pipe.
  const int log = ::open((state / "supervisor.log").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  ::dup2(log, 2);
  ::close(log);
  ::close(ready_fd);
  struct sigaction sa {};
  sa.sa_handler = [](int) { terminate = 1; };
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGINT, &sa, nullptr);
  ::signal(SIGHUP, SIG_IGN);
  // A sandbox whose proxy has ended has no network: it stops, and says why.
  const auto end = vmm::serve_control(*listen_fd, agent.fd(), [&] {
    return !terminate && machine.wait(std::chrono::milliseconds(0)) < 0 && proxy.running();
  });
  ::close(*listen_fd);
  ::unlink((state / "control.sock").c_str());
  std::cerr << "sandgate: sandbox stopping ("
            << (end == vmm::ControlEnd::stop_requested ? "stop requested"
                : terminate                             ? "SIGTERM"
                : !proxy.running()                      ? "its proxy process exited"
                : end == vmm::ControlEnd::vm_exited     ? "the VM exited"
                                                        : "the agent channel closed")
            << ")\n";
  agent.poweroff();
  machine.shutdown(std::chrono::seconds(5));
  return 0;
}

}  // namespace

int run_command(std::span<const std::string_view> args) {
  std::string name, policy_path, workspace, cwd, hosts_file, dns_servers;
  bool allow_unsafe = false, detach = false, readonly = false;
  std::vector<std::string> env, cmd, excludes;
  vmm::MachineConfig mc;
  std::string accel = "auto";
  std::chrono::milliseconds boot_timeout{60'000};
  for (std::size_t i = 0; i < args.size(); ++i) {
    const auto a = args[i];
    if (a == "-h" || a == "--help") {
      std::fputs(run_usage.data(), stdout);
      return 0;
    }
    if (a == "-d" || a == "--detach") {
      detach = true;
      continue;
    }
    if (a == "--allow-unsafe-workspace") {
      allow_unsafe = true;
      continue;
    }
    if (a == "--workspace-readonly") {
      readonly = true;
      continue;
    }
    if (a == "--") {
      for (++i; i < args.size(); ++i) cmd.emplace_back(args[i]);
      break;
    }
    if (!a.starts_with("-")) {
      if (!workspace.empty()) {
        std::cerr << "sandgate run: one WORKSPACE; put the command after -- (see --help)\n";
        return 2;
      }
      workspace = a;
      continue;
    }
    if (i + 1 >= args.size()) {
      std::cerr << "sandgate run: unknown option or missing value: '" << a << "' (see --help)\n";
      return 2;
    }
    const std::string v(args[++i]);
    auto number = [&](unsigned& out) {
      auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
      return ec == std::errc{} && p == v.data() + v.size() && out > 0;
    };
    bool ok = true;
    if (a == "--name") name = v;
    else if (a == "--policy") policy_path = v;
    else if (a == "-e") {
      ok = v.find('=') != std::string::npos && v.front() != '=';
      env.push_back(v);
    } else if (a == "-w") cwd = v;
    else if (a == "--hosts-file") hosts_file = v;
    else if (a == "--dns-server") {
      dns_servers = v;
      ok = !v.empty();
    } else if (a == "--exclude") {
      if (auto why = sync::exclude_pattern_error(v); !why.empty()) {
        std::cerr << "sandgate run: bad --exclude '" << v << "': " << why << "\n";
        return 2;
      }
      excludes.push_back(v);
    }
    else if (a == "--cpus") ok = number(mc.cpus);
    else if (a == "--memory") ok = number(mc.memory_mib) && mc.memory_mib >= 128;
    else if (a == "--accel") {
      accel = v;
      ok = v == "auto" || v == "kvm" || v == "tcg";
    } else if (a == "--boot-timeout") {
      unsigned ms = 0;
      ok = number(ms);
      boot_timeout = std::chrono::milliseconds(ms);
    } else {
      std::cerr << "sandgate run: unknown option '" << a << "' (see --help)\n";
      return 2;
    }
    if (!ok) {
      std::cerr << "sandgate run: bad value for " << a << ": '" << v << "' (see --help)\n";
      return 2;
    }
  }
  if (workspace.empty()) {
    std::cerr << "sandgate run: a WORKSPACE folder is needed (see --help)\n";
    return 2;
  }
  std::error_code ec;
  const auto ws = fs::canonical(workspace, ec);
  if (ec || !fs::is_directory(ws)) {
    std::cerr << "sandgate run: " << workspace << " is not a folder\n";
    return 2;
  }
  const char* user_home = std::getenv("HOME");
  if (auto why = sync::unsafe_workspace_reason(ws.string(), user_home ? user_home : ""); !why.empty() && !allow_unsafe) {
    std::cerr << "sandgate run: will not share " << ws.string() << " with a sandbox: " << why
              << ". Pick a project folder, or pass --allow-unsafe-workspace if you mean it.\n";
    return 2;
  }
  if (cwd.empty()) cwd = ws.string();
  if (name.empty()) name = sanitize_name(ws.filename().string());
  if (sanitize_name(name) != name) {
    std::cerr << "sandgate run: --name takes letters, digits, '-' and '_' (not '" << name << "')\n";
    return 2;
  }
  // Without CMD: an interactive shell, on a terminal when there is one.
  const bool shell_on_tty = cmd.empty() && ::isatty(0) && ::isatty(1);
  if (cmd.empty()) cmd = {"sh"};
  if (detach && cmd != std::vector<std::string>{"sh"}) {
    std::cerr << "sandgate run: -d takes no command; run it with 'sandgate exec NAME CMD...'\n";
    return 2;
  }

  const auto home = sandgate_home();
  // Detached: the supervisor is a child of its own session; until the guest
  // is ready its stderr is a pipe to this process, which relays what it says.
  int ready_fd = -1;
  if (detach) {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return 1;
    const pid_t pid = ::fork();
    if (pid < 0) return 1;
    if (pid > 0) {
      ::close(p[1]);
      const auto said = read_until_closed(p[0]);
      const auto at = said.find(ready_marker);
      std::cerr << said.substr(0, at);
      if (at == std::string::npos) return 1;
      std::cout << name << "\n";
      return 0;
    }
    // Invariant: the child keeps p[1] as stderr until ready, then swaps in its log.
    ::close(p[0]);
    ::setsid();
    const int null = ::open("/dev/null", O_RDWR);
    ::dup2(null, 0);
    ::dup2(null, 1);
    ::dup2(p[1], 2);
    ::close(null);
    ready_fd = p[1];
  }
  const auto state = fs::path(home) / "sandboxes" / name;
  fs::create_directories(state, ec);
  // The proxy's user looks its files up here (sandbox_proxy.h).
  if (!ec) fs::permissions(state, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                                      fs::perms::others_read | fs::perms::others_exec, ec);
  if (ec) {
    std::cerr << "sandgate run: cannot create " << state << ": " << ec.message() << "\n";
    return 1;
  }
  // One process owns a sandbox: the lock is held for this run's life.
  // Invariant: lock_fd stays open (and locked) until this function returns.
  const int lock_fd = ::open((state / "lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock_fd < 0 || ::flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
    std::cerr << "sandgate run: sandbox '" << name << "' is already running; pick another --name\n";
    return 1;
  }
  struct CloseLock {
    int fd;
    ~CloseLock() { ::close(fd); }
  } close_lock{lock_fd};

  // A fresh sandbox starts with the host's git identity (env set can change it).
  {
    std::ofstream saved(state / "env", std::ios::trunc);
    for (const auto& kv : host_git_identity()) saved << kv << "\n";
  }
  fs::permissions(state / "env", fs::perms::owner_read | fs::perms::owner_write, ec);
  const auto image = find_or_build_image();
  if (image.empty()) {
    std::cerr << "sandgate run: cannot build the guest image (run deploy/guest/build-image.sh to see why)\n";
    return 1;
  }

  // The sandbox's own proxy: its listener is the sandbox's identity. It
  // decides by the sandbox's own copy of the policy, which `sandgate network
  // proxy NAME` edits and the proxy reloads when it changes, and consults its
  // own copy of the hosts file. Both are readable by all: the proxy runs as
  // a user of its own (sandbox_proxy.h), and a policy is no secret from a
  // sandbox that a 403 shows its rules to.
  if (policy_path.empty())
    policy_path = fs::exists(default_policy_path()) ? default_policy_path() : shipped_policy_path();
  const auto own_policy =
      state / (config::format_for_path(policy_path) == config::Format::docker_json ? "policy.json" : "policy.yaml");
  const auto readable_by_all = fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
                               fs::perms::others_read;
  const auto own_copy = [&](const std::string& from, const fs::path& to, std::string_view what) {
    ec.clear();
    if (fs::absolute(from) != to) fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
    if (!ec) fs::permissions(to, readable_by_all, ec);
    if (ec) std::cerr << "sandgate run: cannot copy the " << what << " " << from << ": " << ec.message() << "\n";
    return !ec;
  };
  if (!own_copy(policy_path, own_policy, "policy")) return 2;
  if (!hosts_file.empty() && !own_copy(hosts_file, state / "hosts", "hosts file")) return 2;
  auto store = config::PolicyStore::open(own_policy.string());
  if (!store) {
    for (const auto& d : store.error()) std::cerr << d.to_string() << "\n";
    return 2;
  }
  const auto& sandbox_policy = *(*store)->current()->for_sandbox(name);
  const std::string mode = std::string(policy::to_string(sandbox_policy.mode())) + (sandbox_policy.report() ? " (report)" : "");

  if (accel == "auto") {
    // The probe's verdict holds until the host reboots or the image changes.
    std::string boot_id;
    std::ifstream("/proc/sys/kernel/random/boot_id") >> boot_id;
    const auto cache = fs::path(home) / "accel.cache";
    const auto key = boot_id + " " + image;
    std::string line;
    if (std::ifstream in(cache); in && std::getline(in, line) && line.starts_with(key + " "))
      mc.accel = line.ends_with(" kvm") ? vmm::Accel::kvm : vmm::Accel::tcg;
    else {
      std::string why;
      mc.accel = vmm::probe_accel(mc.qemu, image + "/vmlinuz", image + "/initrd.cpio", std::chrono::seconds(4), why);
      std::ofstream(cache) << key << " " << vmm::to_string(mc.accel) << "\n";
      if (mc.accel == vmm::Accel::tcg)
        std::cerr << "sandgate run: using TCG (software emulation, slower): " << why << "\n";
    }
  } else {
    mc.accel = accel == "kvm" ? vmm::Accel::kvm : vmm::Accel::tcg;
  }
  mc.kernel = image + "/" + (mc.accel == vmm::Accel::kvm ? "vmlinuz" : "vmlinux");
  mc.initrd = image + "/initrd.cpio";
  if (fs::exists(image + "/rootfs.erofs")) mc.root_disk = fs::canonical(image + "/rootfs.erofs").string();
  mc.state_dir = state.string();
  std::string ws_hex;
  for (unsigned char ch : ws.string()) {
    ws_hex += "0123456789abcdef"[ch >> 4];
    ws_hex += "0123456789abcdef"[ch & 15];
  }
  mc.kernel_args = {"sandgate_name=" + name, "sandgate_ws_hex=" + ws_hex};
  if (readonly) mc.kernel_args.push_back("sandgate_ws_ro=1");
  if (ws_hex.size() > 1500) {
    std::cerr << "sandgate run: the workspace path is too long for the guest's command line\n";
    return 2;
  }
  sync::ShareConfig sc;
  sc.workspace = ws.string();
  sc.socket = (state / "fs.sock").string();
  sc.log = (state / "virtiofsd.log").string();
  sc.readonly = readonly;
  sc.hidden = sync::find_excluded(ws.string(), excludes);
  sc.scratch_dir = state.string();
  if (!excludes.empty() && std::getenv("SANDGATE_VERBOSE"))
    std::cerr << "sandgate run: --exclude hides " << sc.hidden.size() << " path(s) from the guest\n";
  if (const char* v = std::getenv("SANDGATE_VIRTIOFSD"); v && *v) sc.virtiofsd = v;
  auto share = sync::Share::start(sc);
  if (share) {
    if (!(*share)->warning().empty()) std::cerr << "sandgate run: warning: " << (*share)->warning() << "\n";
    mc.fs_socket = (*share)->socket();
  } else if (!sc.hidden.empty()) {
    // QEMU's own 9p server has no way to hide paths: refuse rather than show them.
    std::cerr << "sandgate run: sharing the workspace: " << share.error()
              << "; --exclude needs virtiofsd, so the sandbox does not start\n";
    return 1;
  } else {
    std::cerr << "sandgate run: warning: " << share.error()
              << "; sharing the workspace over virtio-9p instead: small-file work is several times slower,"
                 " and host changes may show late in the guest\n";
    mc.fs_9p_dir = ws.string();
    mc.fs_9p_readonly = readonly;
    mc.kernel_args.push_back("sandgate_ws_9p=1");
  }
  // As root, QEMU and the proxy each run as an unprivileged user of their
  // own: a uid no other process has (vmm::MachineConfig::RunAs::own_uid),
  // in the group of sandgate-vm if the host has it (the package makes it),
  // else nogroup. A guest that escaped QEMU, or took over the proxy, would
  // hold that user, not root, and could reach no other sandbox's QEMU or
  // proxy, nor any service's. QEMU's files and sockets are handed to it as
  // descriptors (vmm::Machine::launch), so it needs only to read the kernel
  // and initrd themselves, wherever they are; the proxy's socket is not
  // among them (the network process relays the guest's connections). The
  // 9p fallback keeps QEMU root (QEMU itself then serves the workspace).
  std::optional<vmm::MachineConfig::RunAs> unprivileged;
  std::string qemu_group;
  if (::getuid() == 0) {
    const passwd* pw = ::getpwnam("sandgate-vm");
    if (!pw) pw = ::getpwnam("nobody");
    const group* gr = pw ? ::getgrgid(pw->pw_gid) : nullptr;
    if (!gr) {
      std::cerr << "sandgate run: neither the user sandgate-vm nor nobody has a group; QEMU and the proxy would run"
                   " as root, so the sandbox does not start\n";
      return 1;
    }
    // systemd leaves 0x70000000-0x7ffdffff unallocated (its UIDS-GIDS
    // document); a pid is at most 2^22.
    unprivileged = vmm::MachineConfig::RunAs{0x7000'0000, gr->gr_gid, {}, true};
    qemu_group = gr->gr_name;
  }
  if (unprivileged && mc.fs_9p_dir.empty()) {
    auto ra = *unprivileged;
    if (const group* kvm = ::getgrnam("kvm")) ra.groups.push_back(kvm->gr_gid);
    if (const auto blocked = vmm::unreadable_for(ra, {mc.kernel, mc.initrd}); blocked.empty()) {
      mc.run_as = ra;
    } else {
      std::cerr << "sandgate run: QEMU runs as root: a user of group " << qemu_group << " cannot read " << blocked
                << " (the guest image's kernel and initrd must be readable by all: chmod 644 them)\n";
    }
  }
  const auto started = std::chrono::steady_clock::now();
  auto machine = vmm::Machine::launch(mc);
  if (!machine) {
    std::cerr << "sandgate run: " << machine.error() << "\n";
    return 1;
  }
  // The guest's connections, for as long as this process runs the sandbox
  // (the network process is stopped, and waited for, when run_command returns).
  SandboxProxyConfig npc;
  npc.state = state;
  npc.name = name;
  npc.policy_file = own_policy.filename().string();
  npc.hosts_file = !hosts_file.empty();
  npc.dns_servers = dns_servers;
  npc.net_socket = (*machine)->net_socket();
  npc.run_as = unprivileged;
  npc.detached = detach;
  auto proxy = SandboxProxy::start(npc);
  if (!proxy) {
    std::cerr << "sandgate run: " << proxy.error() << "\n";
    return 1;
  }
  auto agent = vmm::AgentClient::connect((*machine)->agent_socket(), boot_timeout);
  if (!agent) {
    std::cerr << "sandgate run: " << agent.error() << " (" << (*machine)->console_log() << ")\n";
    if (share && !(*share)->running()) std::cerr << "sandgate run: virtiofsd stopped; see " << sc.log << "\n";
    return 1;
  }
  const auto ready_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started).count();
  if (std::getenv("SANDGATE_VERBOSE"))
    std::cerr << "sandgate run: " << name << " ready in " << ready_ms << " ms (" << vmm::to_string(mc.accel) << ")\n";
  (*agent)->set_time();

  SandboxState st;
  st.name = name;
  st.workspace = ws.string();
  st.pid = ::getpid();
  st.qemu_pid = (*machine)->pid();
  st.virtiofsd_pid = share ? (*share)->pid() : 0;
  st.share = share ? "virtiofs" : "9p";
  st.accel = std::string(vmm::to_string(mc.accel));
  st.policy = own_policy.string();
  st.mode = mode;
  st.detached = detach;
  st.ready_ms = ready_ms;
  st.image = image;
  // The user QEMU runs as: its uid when it has one of its own, else the caller's.
  st.qemu_user = mc.run_as ? std::to_string(mc.run_as->uid_for((*machine)->pid())) : std::to_string(::getuid());
  st.qemu_group = mc.run_as ? qemu_group : std::to_string(::getgid());
  st.proxy_pid = (*proxy)->pid();
  st.proxy_user = std::to_string((*proxy)->uid());
  st.workspace_readonly = readonly;
  st.hidden_paths = sc.hidden.size();
  write_state(state, st);
  if (detach) return supervise(state, **machine, **proxy, **agent, ready_fd);

  vmm::ExecRequest req;
  req.argv = cmd;
  req.cwd = cwd;
  req.env = sandbox_env(name);
  req.env.insert(req.env.end(), env.begin(), env.end());
  if (shell_on_tty) {
    req.tty = true;
    req.argv = {"sh", "-c", "command -v bash >/dev/null && exec bash -l || exec sh -l"};
  }
  auto status = (*agent)->exec(req, 0, 1, 2);
  if (share && !(*share)->running())
    std::cerr << "sandgate run: virtiofsd stopped while the sandbox ran, so the workspace was unavailable in the guest;"
                 " see "
              << sc.log << "\n";
  if (!(*proxy)->running())
    std::cerr << "sandgate run: the sandbox's proxy process ended while the sandbox ran: the guest had no network"
                 " from then on\n";
  (*agent)->poweroff();
  (*machine)->shutdown(std::chrono::seconds(5));
  if (!status) {
    std::cerr << "sandgate run: " << status.error() << "\n";
    return 125;
  }
  return *status;
}

}  // namespace sandgate::cli
