#include "sandgate/proxy/harden.h"

#include <sched.h>
#include <seccomp.h>
#include <sys/prctl.h>

#include <cerrno>
#include <cstring>

namespace sandgate::proxy {

std::string restrict_process() {
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return std::string("no_new_privs: ") + std::strerror(errno);
  // A deny list, not an allow list: what a proxy never needs fails with
  // EPERM, and a system call a library adds later still works.
  scmp_filter_ctx ctx = ::seccomp_init(SCMP_ACT_ALLOW);
  if (!ctx) return "seccomp_init failed";
  struct Guard {
    scmp_filter_ctx c;
    ~Guard() { ::seccomp_release(c); }
  } guard{ctx};
  const int denied[] = {
      SCMP_SYS(execve), SCMP_SYS(execveat), SCMP_SYS(fork), SCMP_SYS(vfork),
      SCMP_SYS(mount), SCMP_SYS(umount2), SCMP_SYS(pivot_root), SCMP_SYS(chroot), SCMP_SYS(unshare),
      SCMP_SYS(setns), SCMP_SYS(open_tree), SCMP_SYS(move_mount), SCMP_SYS(fsopen), SCMP_SYS(fsmount),
      SCMP_SYS(init_module), SCMP_SYS(finit_module), SCMP_SYS(delete_module), SCMP_SYS(kexec_load),
      SCMP_SYS(kexec_file_load), SCMP_SYS(reboot), SCMP_SYS(swapon), SCMP_SYS(swapoff), SCMP_SYS(acct),
      SCMP_SYS(bpf), SCMP_SYS(perf_event_open), SCMP_SYS(userfaultfd), SCMP_SYS(keyctl), SCMP_SYS(add_key),
      SCMP_SYS(request_key), SCMP_SYS(setuid), SCMP_SYS(setgid), SCMP_SYS(setreuid), SCMP_SYS(setregid),
      SCMP_SYS(setresuid), SCMP_SYS(setresgid), SCMP_SYS(setgroups), SCMP_SYS(setfsuid), SCMP_SYS(setfsgid),
      SCMP_SYS(capset), SCMP_SYS(personality), SCMP_SYS(mknod), SCMP_SYS(mknodat), SCMP_SYS(chown),
      SCMP_SYS(fchown), SCMP_SYS(lchown), SCMP_SYS(fchownat), SCMP_SYS(settimeofday), SCMP_SYS(clock_settime),
      SCMP_SYS(clock_adjtime), SCMP_SYS(adjtimex), SCMP_SYS(syslog), SCMP_SYS(sethostname),
      SCMP_SYS(setdomainname), SCMP_SYS(iopl), SCMP_SYS(ioperm), SCMP_SYS(quotactl), SCMP_SYS(vhangup),
      SCMP_SYS(name_to_handle_at), SCMP_SYS(open_by_handle_at), SCMP_SYS(process_vm_writev),
      SCMP_SYS(io_uring_setup),
#if !defined(__SANITIZE_ADDRESS__)
      // LeakSanitizer stops the world with ptrace and process_vm_readv at exit.
      SCMP_SYS(ptrace), SCMP_SYS(process_vm_readv),
#endif
  };
  // Every thread, not only this one: the log's threads run already, and a
  // filter loaded without TSYNC binds the caller and its later threads only.
  // TSYNC carries no_new_privs to them too.
  if (::seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1) != 0) return "seccomp: cannot filter every thread (TSYNC)";
  for (const int call : denied)
    if (::seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), call, 0) != 0)
      return "seccomp: cannot add a rule for system call " + std::to_string(call);
#if !defined(__SANITIZE_ADDRESS__)
  // New threads, yes (CLONE_THREAD); new processes, no. clone3 passes its
  // flags in memory a filter cannot read: ENOSYS makes glibc use clone.
  if (::seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                         SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, 0)) != 0 ||
      ::seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0) != 0)
    return "seccomp: cannot add the clone rules";
#endif
  if (const int rc = ::seccomp_load(ctx); rc != 0) return std::string("seccomp_load: ") + std::strerror(-rc);
  return {};
}

}  // namespace sandgate::proxy
