// deny_pid_namespace COMMAND [ARG]...: runs COMMAND where no PID namespace
// can be made with clone(2), as in a container whose seccomp profile
// forbids it, to test what sandgate does without one.
#include <sched.h>
#include <seccomp.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: deny_pid_namespace COMMAND [ARG]...\n");
    return 2;
  }
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
  // clone3 passes its flags in memory a filter cannot read: it is refused
  // as unknown, and glibc falls back to clone.
  const bool ok = ctx && seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                                          SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_NEWPID, CLONE_NEWPID)) == 0 &&
                  seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0) == 0 && seccomp_load(ctx) == 0;
  if (!ok) {
    std::fprintf(stderr, "deny_pid_namespace: cannot load the filter\n");
    return 125;
  }
  seccomp_release(ctx);
  ::execvp(argv[1], argv + 1);
  std::perror(argv[1]);
  return 127;
}
