#include "sandgate/vmm/machine.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cassert>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "own_root.h"
#include "unix_socket.h"

namespace sandgate::vmm {

std::string_view to_string(Accel a) noexcept { return a == Accel::kvm ? "kvm" : "tcg"; }

namespace {

// Becomes run_as in a forked child whose pid in the host's PID namespace is
// `host_pid`: raw system calls, which change only the calling thread (the
// child's only one) and take no lock.
bool become(const MachineConfig::RunAs& r, pid_t host_pid) {
  const uid_t uid = r.uid_for(host_pid);
  return ::syscall(SYS_setgroups, r.groups.size(), r.groups.data()) == 0 &&
         ::syscall(SYS_setresgid, r.gid, r.gid, r.gid) == 0 && ::syscall(SYS_setresuid, uid, uid, uid) == 0;
}

// Starts QEMU's argv with stdin from /dev/null, stdout and stderr to
// out_fd, and `pass` as descriptors 3, 4, ... in order, in its own process
// group (a Ctrl-C at the terminal reaches sandgate, which then shuts the
// guest down). Returns the pid, or -1.
//
// What a guest that broke out of QEMU would find is kept small:
// - a network namespace of its own, with no device in it: QEMU needs no
//   network (its sockets are handed to it), and an escaped guest gets no
//   way around the proxy. Not root, the caller gets one inside a user
//   namespace that maps it to itself. Where neither can be made (a
//   container without the capability), QEMU says so on its console log and
//   runs in the caller's;
// - a PID namespace of its own, where QEMU is process 1 and the only one:
//   it can name no other process to signal (run by a user, QEMU has that
//   user's uid, and kill(2) compares uids), and its /proc (below) lists
//   itself alone;
// - with `own_root`, a mount namespace whose root holds the system's files
//   only (own_root.h): no home, no workspace, no other sandbox;
// - an empty environment: the caller's may hold secrets (API keys) that
//   QEMU has no use for;
// - with `run_as`, a user no other process has (MachineConfig::RunAs).
constexpr std::size_t max_passed = 8;
pid_t spawn(const std::vector<std::string>& argv, int out_fd, const MachineConfig::RunAs* run_as = nullptr,
            const std::vector<int>& pass = {}, const detail::OwnRoot* own_root = nullptr) {
  // Everything the child needs is built before fork: the caller may have
  // other threads (a library's), so the child may only make async-signal-safe calls.
  std::vector<char*> args;
  for (const auto& s : argv) args.push_back(const_cast<char*>(s.c_str()));
  args.push_back(nullptr);
  if (pass.size() > max_passed) {
    errno = EMFILE;
    return -1;
  }
  const int first_free = 3 + static_cast<int>(pass.size());
  const uid_t uid = ::getuid();
  const std::string uid_map = std::to_string(uid) + " " + std::to_string(uid) + " 1\n";
  const std::string gid_map = std::to_string(::getgid()) + " " + std::to_string(::getgid()) + " 1\n";
  const auto write_file = [](const char* path, const std::string& text) {
    const int f = ::open(path, O_WRONLY | O_CLOEXEC);
    const bool ok = f >= 0 && ::write(f, text.data(), text.size()) == static_cast<ssize_t>(text.size());
    if (f >= 0) ::close(f);
    return ok;
  };
  char* const no_environment[] = {nullptr};
  // The namespaces are made by clone(2), not by unshare(2) in the child: a
  // new PID namespace takes the children of the process that makes it, and
  // QEMU itself is to be its process 1. Where a set cannot be made, a
  // smaller one is tried, then none.
  const int wanted = CLONE_NEWNET | (own_root ? CLONE_NEWNS : 0) | (uid == 0 ? 0 : CLONE_NEWUSER);
  // QEMU's pid in this (the host's) PID namespace, which its own user is
  // derived from, is known to the child only by being told.
  int told[2] = {-1, -1};
  if (run_as && ::pipe2(told, O_CLOEXEC) != 0) return -1;
  int namespaces = 0;
  pid_t pid = -1;
  for (const int flags : {wanted | CLONE_NEWPID, wanted, 0}) {
    namespaces = flags;
    // As fork(2), with namespaces: no stack of its own (the child goes on
    // on a copy of this one). glibc's fork handlers do not run, and the
    // child makes system calls only.
    pid = flags ? static_cast<pid_t>(::syscall(SYS_clone, SIGCHLD | flags, nullptr, nullptr, nullptr, nullptr))
                : ::fork();
    if (pid >= 0) break;
  }
  if (pid != 0) {
    const int saved = errno;
    if (told[1] >= 0) {
      if (pid > 0) (void)!::write(told[1], &pid, sizeof pid);
      ::close(told[0]);
      ::close(told[1]);
    }
    errno = saved;
    return pid;
  }
  pid_t host_pid = ::getpid();
  if (told[0] >= 0) {
    ::close(told[1]);
    if (::read(told[0], &host_pid, sizeof host_pid) != sizeof host_pid) ::_exit(126);
    ::close(told[0]);
  }
  const int in = ::open("/dev/null", O_RDONLY);
  ::dup2(in, 0);
  ::dup2(out_fd, 1);
  ::dup2(out_fd, 2);
  // pass[i] becomes descriptor 3 + i: each is first copied above the
  // targets, so that moving one into place never closes another still to move.
  int moved[max_passed];
  for (std::size_t i = 0; i < pass.size(); ++i) moved[i] = ::fcntl(pass[i], F_DUPFD, first_free);
  for (std::size_t i = 0; i < pass.size(); ++i)
    if (moved[i] < 0 || ::dup2(moved[i], 3 + static_cast<int>(i)) < 0) ::_exit(125);
  ::setpgid(0, 0);
  // QEMU needs no device files; without CAP_MKNOD its 9p server cannot make
  // one in the workspace for the guest either.
  ::prctl(PR_CAPBSET_DROP, CAP_MKNOD, 0, 0, 0);
  const bool own_network = (namespaces & CLONE_NEWNET) != 0;
  if (own_network && uid != 0 &&
      !(write_file("/proc/self/setgroups", "deny\n") && write_file("/proc/self/uid_map", uid_map) &&
        write_file("/proc/self/gid_map", gid_map))) {
    constexpr char msg[] = "sandgate: cannot map QEMU's user into its own namespace\n";
    (void)!::write(2, msg, sizeof msg - 1);
    ::_exit(126);
  }
  if (own_network && !(namespaces & CLONE_NEWPID)) {
    constexpr char msg[] = "sandgate: QEMU sees the host's processes: no PID namespace of its own could be made\n";
    (void)!::write(2, msg, sizeof msg - 1);
  }
  if (!own_network) {
    constexpr char msg[] =
        "sandgate: QEMU runs in the host's network namespace and sees its files: no namespace of its own could be"
        " made\n";
    (void)!::write(2, msg, sizeof msg - 1);
  } else if (own_root) {
    if (const char* failed = detail::enter_own_root(*own_root)) {
      constexpr char msg[] = "sandgate: QEMU sees the host's files: its own root could not be made, at: ";
      (void)!::write(2, msg, sizeof msg - 1);
      (void)!::write(2, failed, std::strlen(failed));
      (void)!::write(2, "\n", 1);
    }
  }
  if (run_as && !become(*run_as, host_pid)) {
    constexpr char msg[] = "sandgate: cannot switch QEMU to its unprivileged user\n";
    (void)!::write(2, msg, sizeof msg - 1);
    ::_exit(126);
  }
  // Nothing else of this process goes with it: the caller's descriptors
  // without O_CLOEXEC (Asio opens sockets without it), which QEMU would
  // otherwise hold open.
  ::close_range(static_cast<unsigned>(first_free), ~0U, 0);
  ::execvpe(args[0], args.data(), no_environment);
  constexpr char msg[] = "sandgate: cannot run the program (is it installed?)\n";
  (void)!::write(2, msg, sizeof msg - 1);
  ::_exit(127);
}

// Descriptors Machine::launch opens and closes on every path out.
struct Descriptors {
  std::vector<int> fds;
  ~Descriptors() {
    for (int fd : fds) ::close(fd);
  }
};

// What QEMU is handed as descriptors rather than paths: it opens no file
// and binds no socket of its own, so an unprivileged QEMU needs no way into
// the sandbox's folder or the image cache (a home under a closed /root, say).
// The kernel and initrd it reopens through /proc/self/fd (its loader takes a
// file name), which needs only their own read permission; the disk goes in
// through an fd set, the sockets as chardev descriptors.
struct Passed {
  int kernel = 3, initrd = 4, agent = 5, net = 6, qmp = 7;
  int disk = -1, fs = -1;  // when configured
  std::size_t count = 5;
  explicit Passed(const MachineConfig& c) {
    if (!c.root_disk.empty()) disk = static_cast<int>(3 + count++);
    if (!c.fs_socket.empty()) fs = static_cast<int>(3 + count++);
  }
};

std::string fd_path(int fd) { return "/proc/self/fd/" + std::to_string(fd); }

}  // namespace

unsigned long host_tsc_khz() {
  if (std::ifstream f("/sys/devices/system/cpu/cpu0/tsc_freq_khz"); f) {
    unsigned long khz = 0;
    if (f >> khz && khz) return khz;
  }
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);)
    if (line.starts_with("cpu MHz")) return static_cast<unsigned long>(std::stod(line.substr(line.find(':') + 1)) * 1000);
  return 0;
}

std::vector<std::string> qemu_argv(const MachineConfig& c) {
  const Passed fd(c);
  const auto mem = std::to_string(c.memory_mib);
  // Two kernel arguments that buy TCG boot time and protect nothing here:
  // - cryptomgr.notests: the crypto self-tests take 0.2-0.3 s; nothing in the
  //   guest kernel needs them (TLS is OpenSSL's, in user space).
  // - rodata=off: making kernel text read-only, and the W+X scan of every
  //   page table that follows, take 0.17 s. It guards the guest kernel from
  //   its own user space, where commands already run as root; the boundary
  //   that matters is the VM and the proxy.
  // - initcall_blacklist: the slowest start-up calls (initcall_debug) that
  //   serve no sandbox: kprobe, block and printk tracing; BPF kfunc sets,
  //   whose first registration parses the kernel's 4 MB of BTF, and module
  //   BTF; the TCP cubic module (the guest's one TCP peer is QEMU's user
  //   network; reno stands in); the KDF self-test. 60 ms under TCG. A name a
  //   kernel does not have is ignored.
  std::string append =
      "console=ttyS0 quiet reboot=t panic=-1 pci=off cryptomgr.notests rodata=off"
      " initcall_blacklist=init_kprobe_trace,init_blk_tracer,init_trace_printk_function_export,"
      "cubictcp_register,bpf_rstat_kfunc_init,bpf_key_sig_kfuncs_init,kfunc_init,bpf_prog_test_run_init,"
      "bpf_tcp_ca_kfunc_init,btf_module_init,crypto_kdf108_init";
  if (c.accel == Accel::tcg) {
    // Under TCG the early TSC calibration hangs about one boot in four; give it the answer.
    if (const auto khz = host_tsc_khz()) append += " tsc_early_khz=" + std::to_string(khz) + " tsc=reliable";
  }
  for (const auto& a : c.kernel_args) append += " " + a;
  std::vector<std::string> a = {c.qemu,
                                "-M", "microvm,memory-backend=mem",
                                "-object", "memory-backend-memfd,id=mem,size=" + mem + "M,share=on",
                                "-m", mem + "M",
                                "-smp", std::to_string(c.cpus),
                                "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
                                // virtio-fs (vhost-user) refuses legacy virtio-mmio; the rest works either way.
                                "-global", "virtio-mmio.force-legacy=false",
                                "-kernel", fd_path(fd.kernel),
                                "-initrd", fd_path(fd.initrd),
                                "-append", append,
                                "-serial", "stdio",
                                // No network device (-nodefaults, and none added): the guest's only
                                // way out is the port net0, whose streams the supervisor hands to
                                // the proxy. QEMU itself has no network backend to reach anything.
                                "-nic", "none",
                                "-device", "virtio-serial-device",
                                "-chardev", "socket,id=agent,fd=" + std::to_string(fd.agent) + ",server=on,wait=off",
                                "-device", "virtserialport,chardev=agent,name=agent0",
                                "-chardev", "socket,id=net,fd=" + std::to_string(fd.net) + ",server=on,wait=off",
                                "-device", "virtserialport,chardev=net,name=net0",
                                "-chardev", "socket,id=qmp,fd=" + std::to_string(fd.qmp) + ",server=on,wait=off",
                                "-mon", "chardev=qmp,mode=control",
                                // QEMU's own seccomp filter: no obsolete calls, no new processes, no
                                // privilege, scheduling or resource changes. (Started by root, QEMU is
                                // already the user it should be: Machine::launch switched before exec.)
                                "-sandbox", "on,obsolete=deny,spawn=deny,elevateprivileges=deny,resourcecontrol=deny"};
  if (!c.root_disk.empty())
    a.insert(a.end(), {"-add-fd", "fd=" + std::to_string(fd.disk) + ",set=1", "-drive",
                       "file=/dev/fdset/1,if=none,format=raw,readonly=on,id=root", "-device", "virtio-blk-device,drive=root"});
  if (!c.fs_socket.empty())
    a.insert(a.end(), {"-chardev", "socket,id=vfs,fd=" + std::to_string(fd.fs), "-device",
                       "vhost-user-fs-device,chardev=vfs,tag=ws"});
  if (!c.fs_9p_dir.empty()) {
    std::string dir;
    for (char ch : c.fs_9p_dir) dir += ch == ',' ? std::string(",,") : std::string(1, ch);
    a.insert(a.end(), {"-fsdev",
                       "local,id=ws9p,path=" + dir + ",security_model=none" + (c.fs_9p_readonly ? ",readonly=on" : ""),
                       "-device", "virtio-9p-device,fsdev=ws9p,mount_tag=ws"});
  }
  if (c.accel == Accel::kvm) {
    a.insert(a.end(), {"-accel", "kvm", "-cpu", "host"});
  } else {
    // The translation cache is most of QEMU's own memory under TCG; bound it
    // (MachineConfig::tb_size_mib) rather than leave it to QEMU's default.
    // erms=off: with "enhanced REP MOVSB/STOSB" the guest kernel (and glibc)
    // copy and clear memory a byte per REP iteration, which TCG emulates one
    // iteration at a time; without it they move 8 bytes a step. The agent is
    // ready 0.18 s sooner (1.78 -> 1.60 s to "guest ready", median of 5).
    a.insert(a.end(), {"-accel", "tcg,tb-size=" + std::to_string(c.tb_size_mib), "-cpu", "max,erms=off"});
  }
  return a;
}

std::string unreadable_for(const MachineConfig::RunAs& run_as, const std::vector<std::string>& files) {
  // Opened here, as QEMU's are; the child then reopens each through
  // /proc/self/fd as QEMU's loader will.
  Descriptors opened;
  std::vector<std::string> reopen;
  for (const auto& f : files) {
    const int fd = ::open(f.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return f;
    opened.fds.push_back(fd);
    reopen.push_back(fd_path(fd));
  }
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (!become(run_as, ::getpid())) ::_exit(255);
    for (std::size_t i = 0; i < reopen.size(); ++i)
      if (::open(reopen[i].c_str(), O_RDONLY) < 0) ::_exit(static_cast<int>(i));
    ::_exit(254);
  }
  int st = 0;
  if (pid < 0 || ::waitpid(pid, &st, 0) != pid || !WIFEXITED(st)) return "(the check could not run)";
  const int code = WEXITSTATUS(st);
  if (code == 254) return {};
  if (code == 255 || code >= static_cast<int>(files.size())) return "(the user could not be switched to)";
  return files[static_cast<std::size_t>(code)];
}

boost::system::result<std::unique_ptr<Machine>, std::string> Machine::launch(const MachineConfig& c) {
  const auto argv = qemu_argv(c);
  const Passed layout(c);
  // Everything QEMU is handed, in the order of its descriptors (Passed).
  // Invariant: each is opened here, copied into the child, and closed here.
  Descriptors pass;
  const auto open_file = [&](const std::string& path, const char* what) -> std::string {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return std::string("cannot open the ") + what + " " + path + ": " + std::strerror(errno);
    pass.fds.push_back(fd);
    return {};
  };
  if (auto e = open_file(c.kernel, "kernel"); !e.empty()) return e;
  if (auto e = open_file(c.initrd, "initrd"); !e.empty()) return e;
  // The sockets QEMU serves, made here in a fresh folder of this user's
  // (0700): only this user can connect to them.
  const auto vm_dir = c.state_dir + "/vm";
  std::error_code ec;
  std::filesystem::remove_all(vm_dir, ec);
  if (::mkdir(vm_dir.c_str(), 0700) != 0) return "cannot create " + vm_dir + ": " + std::strerror(errno);
  for (const char* name : {"agent.sock", "net.sock", "qmp.sock"}) {
    const auto path = vm_dir + "/" + name;
    const int fd = detail::listen_unix(path);
    if (fd < 0) return "cannot listen on " + path + ": " + std::strerror(errno);
    pass.fds.push_back(fd);
  }
  if (!c.root_disk.empty())
    if (auto e = open_file(c.root_disk, "root disk"); !e.empty()) return e;
  // virtiofsd's socket, connected here: nobody else may use the socket
  // (it serves the workspace), and QEMU's user need not reach it.
  if (!c.fs_socket.empty()) {
    const int fd = detail::connect_unix(c.fs_socket);
    if (fd < 0) return "cannot connect to virtiofsd at " + c.fs_socket + ": " + std::strerror(errno);
    pass.fds.push_back(fd);
  }
  assert(pass.fds.size() == layout.count);
  const auto log = c.state_dir + "/console.log";
  // Invariant: the log fd is opened here, dup'd into the child, and closed in the parent.
  const int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  if (out < 0) return "cannot create " + log + ": " + std::strerror(errno);
  // A root of QEMU's own, built on vm/ (in its mount namespace only). Not
  // with 9p, where QEMU serves the workspace by its path.
  std::string why_not;
  const auto own_root = c.fs_9p_dir.empty() ? detail::plan_own_root(vm_dir, c.qemu, why_not) : detail::OwnRoot{};
  if (!why_not.empty()) {
    const auto line = "sandgate: QEMU sees the host's files: " + why_not + "\n";
    (void)!::write(out, line.data(), line.size());
  }
  const pid_t pid = spawn(argv, out, c.run_as ? &*c.run_as : nullptr, pass.fds,
                          own_root.steps.empty() ? nullptr : &own_root);
  const int saved = errno;
  ::close(out);
  if (pid < 0) return std::string("fork: ") + std::strerror(saved);
  return std::unique_ptr<Machine>(new Machine(pid, c.state_dir));
}

Machine::~Machine() {
  if (!exited_) {
    kill();
    wait(std::chrono::seconds(5));
  }
}

int Machine::wait(std::chrono::milliseconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (!exited_) {
    int st = 0;
    const pid_t r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
      exited_ = true;
      status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      break;
    }
    if (std::chrono::steady_clock::now() >= end) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return status_;
}

void Machine::kill() noexcept {
  if (!exited_) ::kill(pid_, SIGKILL);
}

bool Machine::qmp(const std::string& command) {
  // Invariant: fd is closed before return.
  const int fd = detail::connect_unix(qmp_socket());
  bool ok = fd >= 0;
  if (ok) {
    const std::string msg = R"({"execute":"qmp_capabilities"})" "\n" R"({"execute":")" + command + "\"}\n";
    ok = ::write(fd, msg.data(), msg.size()) == static_cast<ssize_t>(msg.size());
    // Read the greeting and answers so QEMU acts before the socket closes.
    char buf[4096];
    for (int answers = 0; ok && answers < 3;) {
      const ssize_t n = ::read(fd, buf, sizeof buf);
      if (n <= 0) break;
      for (ssize_t i = 0; i < n; ++i) answers += buf[i] == '\n';
    }
  }
  if (fd >= 0) ::close(fd);
  return ok;
}

int Machine::shutdown(std::chrono::milliseconds grace) {
  if (exited_) return status_;
  qmp("system_powerdown");
  if (const int st = wait(grace); st >= 0) return st;
  qmp("quit");
  if (const int st = wait(std::chrono::seconds(2)); st >= 0) return st;
  kill();
  return wait(std::chrono::seconds(5));
}

Accel probe_accel(const std::string& qemu, const std::string& kernel, const std::string& initrd,
                  std::chrono::milliseconds timeout, std::string& why) {
  if (::access("/dev/kvm", R_OK | W_OK) != 0) {
    why = "/dev/kvm is missing or not read-write for this user";
    return Accel::tcg;
  }
  if (::access("/sys/module/kvm_intel", F_OK) != 0 && ::access("/sys/module/kvm_amd", F_OK) != 0) {
    why = "/dev/kvm is not hardware KVM (no kvm_intel or kvm_amd module; a nested or PVM host)";
    return Accel::tcg;
  }
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) {
    why = "pipe failed";
    return Accel::tcg;
  }
  const std::vector<std::string> argv = {qemu, "-M", "microvm", "-accel", "kvm", "-cpu", "host", "-m", "128M",
                                         "-smp", "1", "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
                                         "-serial", "stdio", "-kernel", kernel, "-initrd", initrd, "-append",
                                         "console=ttyS0 reboot=t panic=-1 pci=off sandgate_probe=1"};
  const pid_t pid = spawn(argv, out[1]);
  ::close(out[1]);
  // Invariant: out[0] is closed and the probe QEMU killed and reaped before return.
  std::string seen;
  bool ok = false;
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (!ok && pid > 0) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
    pollfd p{out[0], POLLIN, 0};
    if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
    char buf[4096];
    const ssize_t n = ::read(out[0], buf, sizeof buf);
    if (n <= 0) break;
    seen.append(buf, static_cast<std::size_t>(n));
    ok = seen.find("sandgate: probe ok") != std::string::npos;
  }
  ::close(out[0]);
  if (pid > 0) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
  }
  why = ok ? "a KVM probe boot reached the guest's init" : "a KVM probe boot did not reach the guest's init";
  return ok ? Accel::kvm : Accel::tcg;
}

}  // namespace sandgate::vmm
