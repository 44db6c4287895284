// A QEMU microVM (-M microvm, virtio-mmio devices) with no network device:
// its only network path is a virtio-serial port whose streams the host
// relays to the sandbox's proxy (stream_mux.h). Its agent has a port of its
// own, and QMP drives its lifecycle. vmm knows nothing of HTTP.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <boost/system/result.hpp>

namespace sandgate::vmm {

enum class Accel { kvm, tcg };
std::string_view to_string(Accel a) noexcept;

struct MachineConfig {
  std::string qemu = "qemu-system-x86_64";
  std::string kernel;  // an uncompressed vmlinux (PVH entry) or a bzImage
  std::string initrd;
  unsigned cpus = 1;
  unsigned memory_mib = 512;
  Accel accel = Accel::tcg;
  unsigned tb_size_mib = 64;  // TCG's translation cache (32 saves ~15 MiB, boots slower)
  std::string state_dir;  // the machine's sockets (STATE_DIR/vm) and console log live here
  std::vector<std::string> kernel_args;  // extra key=value for the guest's init
  // A vhost-user-fs backend socket (virtiofsd), attached with tag "ws"; "" for none.
  std::string fs_socket;
  // Or a folder QEMU serves itself over virtio-9p with tag "ws" (the fallback
  // when virtiofsd cannot run), read-only if asked; "" for none.
  std::string fs_9p_dir;
  bool fs_9p_readonly = false;
  // The root filesystem disk image, attached read-only as /dev/vda; "" for none.
  std::string root_disk;
  // Run QEMU as this user rather than as the caller (root). QEMU opens no
  // path of its own: its kernel, initrd, disk, sockets and virtiofsd's
  // connection are handed to it as descriptors, so the user needs no way
  // into the sandbox's folder or the image cache; it reopens the kernel and
  // initrd through /proc/self/fd, which needs their own read permission.
  struct RunAs {
    uid_t uid = 0;
    gid_t gid = 0;
    std::vector<gid_t> groups;  // supplementary (kvm for /dev/kvm)
    // A user of its own for each QEMU: uid is then the first of a range,
    // and QEMU runs as uid + its pid (pids are unique among live
    // processes). No other process has that user, so none (another
    // sandbox's QEMU, another service run as the same user) may ptrace
    // QEMU, read its memory or environment, or signal it, and QEMU none of
    // theirs. It needs no passwd entry: QEMU opens no file by name but the
    // kernel and initrd, readable by all.
    bool own_uid = false;
    uid_t uid_for(pid_t pid) const noexcept { return own_uid ? uid + static_cast<uid_t>(pid) : uid; }
  };
  std::optional<RunAs> run_as;
};

// Whether `run_as` can read each of `files` through a descriptor this
// process opened, as QEMU reads its kernel and initrd (tried in a child that
// becomes that user). "" when it can, else the first file it cannot read.
std::string unreadable_for(const MachineConfig::RunAs& run_as, const std::vector<std::string>& files);

// The full QEMU command line for `config`, for the descriptors launch()
// hands QEMU (kernel, initrd, sockets and disk as /proc/self/fd, fd= and
// fd sets).
std::vector<std::string> qemu_argv(const MachineConfig& config);

class Machine {
 public:
  // Starts QEMU (stdin /dev/null, output to state_dir/console.log, the
  // files and sockets it uses as descriptors). Fails with the step, path
  // and errno.
  static boost::system::result<std::unique_ptr<Machine>, std::string> launch(const MachineConfig& config);
  ~Machine();  // kills QEMU if it still runs

  pid_t pid() const noexcept { return pid_; }
  // QEMU's sockets, made by launch() in STATE_DIR/vm (0700) and handed to it.
  std::string agent_socket() const { return state_dir_ + "/vm/agent.sock"; }
  // The guest's network port (stream_mux.h: relay_guest_network).
  std::string net_socket() const { return state_dir_ + "/vm/net.sock"; }
  std::string qmp_socket() const { return state_dir_ + "/vm/qmp.sock"; }
  std::string console_log() const { return state_dir_ + "/console.log"; }

  // Waits for QEMU to exit; its exit status, or -1 on timeout.
  int wait(std::chrono::milliseconds timeout);
  // Asks the guest to power off (QMP system_powerdown), then quits QEMU after
  // `grace`; returns QEMU's exit status.
  int shutdown(std::chrono::milliseconds grace);
  // SIGKILL.
  void kill() noexcept;

 private:
  Machine(pid_t pid, std::string state_dir) : pid_(pid), state_dir_(std::move(state_dir)) {}
  bool qmp(const std::string& command);
  pid_t pid_;
  std::string state_dir_;
  bool exited_ = false;
  int status_ = -1;
};

// The host's TSC frequency in kHz (for the TCG guest's early calibration), or 0.
unsigned long host_tsc_khz();

// Whether KVM really runs this guest. /dev/kvm may exist and still not run a
// stock Debian kernel (a nested PVM host, say), so after the cheap checks
// (/dev/kvm read-write, kvm_intel or kvm_amd loaded) a probe boot of
// kernel + initrd under KVM must print the init's probe line within
// `timeout`. `why` says what decided. Cost: up to `timeout` when KVM is there.
Accel probe_accel(const std::string& qemu, const std::string& kernel, const std::string& initrd,
                  std::chrono::milliseconds timeout, std::string& why);

}  // namespace sandgate::vmm
