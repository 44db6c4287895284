// A root filesystem of QEMU's own, so that a guest that broke out of QEMU
// finds none of the host's files but the system's programs: a tmpfs holding
// /usr (read-only), the top-level links or folders of a merged-/usr system
// (/bin, /lib, /lib64, ...), /etc/ld.so.cache, /proc (a procfs of its own
// that shows QEMU alone, in its own PID namespace, where one may be mounted;
// else the host's), /sys (read-only), the
// device nodes QEMU uses (/dev/null, /dev/zero, /dev/urandom, /dev/random,
// /dev/kvm) and an empty /tmp. No home, no workspace, no other sandbox, no
// image cache: everything else QEMU uses is handed to it as a descriptor.
//
// plan_own_root() is called before fork (it allocates and reads the host's
// layout); enter_own_root() runs in the child, in a mount namespace of its
// own, and makes system calls only (async-signal-safe).
#pragma once

#include <string>
#include <vector>

namespace sandgate::vmm::detail {

struct OwnRoot {
  struct Step {
    enum class Kind { folder, bind_ro, bind_file, link, proc };  // proc: a procfs of its own, else the host's bound
    Kind kind;
    std::string at;      // the path in the new root, as seen before pivot_root (mount_point + "/usr")
    std::string source;  // what is bound there, or the link's target
    unsigned mode = 0755;            // a folder's
    unsigned long remount_flags = 0;  // bind_ro: the source's own flags, kept (a user namespace must)
  };
  std::string mount_point;  // an existing folder the tmpfs goes on, then becomes "/"
  std::vector<Step> steps;
};

// The plan for a root on `mount_point` (a folder of the caller's), or an
// empty plan with `why` set when the host's layout does not allow one (QEMU
// at `qemu` is not under /usr, say).
OwnRoot plan_own_root(const std::string& mount_point, const std::string& qemu, std::string& why);

// In the child, in a mount namespace of its own: builds the root and
// pivots into it. nullptr on success, else the step that failed.
const char* enter_own_root(const OwnRoot& root) noexcept;

}  // namespace sandgate::vmm::detail
