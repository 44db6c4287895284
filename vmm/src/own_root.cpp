#include "own_root.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <string_view>

namespace sandgate::vmm::detail {
namespace {

// The flags a read-only bind of `path` is remounted with: read-only, plus
// the source mount's own (in a user namespace they are locked, and a
// remount that dropped one would fail).
unsigned long read_only_flags(const std::string& path) {
  unsigned long flags = MS_REMOUNT | MS_BIND | MS_RDONLY;
  struct statvfs st {};
  if (::statvfs(path.c_str(), &st) != 0) return flags;
  if (st.f_flag & ST_NOSUID) flags |= MS_NOSUID;
  if (st.f_flag & ST_NODEV) flags |= MS_NODEV;
  if (st.f_flag & ST_NOEXEC) flags |= MS_NOEXEC;
  if (st.f_flag & ST_NOATIME) flags |= MS_NOATIME;
  if (st.f_flag & ST_NODIRATIME) flags |= MS_NODIRATIME;
  if (st.f_flag & ST_RELATIME) flags |= MS_RELATIME;
  return flags;
}

// Where PATH (or `program` itself, when it names a path) finds `program`,
// symbolic links resolved; "" when nowhere.
std::string find_program(const std::string& program) {
  std::string found;
  if (program.find('/') != std::string::npos) {
    found = program;
  } else {
    const char* path = std::getenv("PATH");
    for (std::string_view dirs = path ? path : "/usr/bin:/bin"; found.empty();) {
      const auto colon = dirs.find(':');
      const std::string candidate = std::string(dirs.substr(0, colon)) + "/" + program;
      if (::access(candidate.c_str(), X_OK) == 0) found = candidate;
      if (colon == std::string_view::npos) break;
      dirs.remove_prefix(colon + 1);
    }
  }
  char real[PATH_MAX];
  return !found.empty() && ::realpath(found.c_str(), real) ? std::string(real) : std::string();
}

}  // namespace

OwnRoot plan_own_root(const std::string& mount_point, const std::string& qemu, std::string& why) {
  using Kind = OwnRoot::Step::Kind;
  if (const auto program = find_program(qemu); !program.starts_with("/usr/")) {
    why = program.empty() ? qemu + " is not on PATH" : "QEMU (" + program + ") is not under /usr";
    return {};
  }
  OwnRoot root{mount_point, {}};
  const auto add = [&](Kind kind, const std::string& at, std::string source = {}) -> OwnRoot::Step& {
    return root.steps.emplace_back(OwnRoot::Step{kind, mount_point + at, std::move(source)});
  };
  for (const char* folder : {"/usr", "/etc", "/proc", "/sys", "/dev"}) add(Kind::folder, folder);
  add(Kind::folder, "/tmp").mode = 01777;
  add(Kind::bind_ro, "/usr", "/usr").remount_flags = read_only_flags("/usr");
  // A merged-/usr system's top-level links (/lib -> usr/lib), or the
  // folders of one that is not.
  for (const std::string top : {"/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"}) {
    struct stat st {};
    if (::lstat(top.c_str(), &st) != 0) continue;
    if (S_ISLNK(st.st_mode)) {
      char target[PATH_MAX];
      const auto n = ::readlink(top.c_str(), target, sizeof target - 1);
      if (n > 0) add(Kind::link, top, std::string(target, static_cast<std::size_t>(n)));
    } else if (S_ISDIR(st.st_mode)) {
      add(Kind::folder, top);
      add(Kind::bind_ro, top, top).remount_flags = read_only_flags(top);
    }
  }
  if (::access("/etc/ld.so.cache", R_OK) == 0) add(Kind::bind_file, "/etc/ld.so.cache", "/etc/ld.so.cache");
  // QEMU reopens its kernel and initrd through /proc/self/fd.
  add(Kind::proc, "/proc", "/proc");
  add(Kind::bind_ro, "/sys", "/sys").remount_flags = read_only_flags("/sys");
  for (const std::string device : {"/dev/null", "/dev/zero", "/dev/random", "/dev/urandom", "/dev/kvm"})
    if (::access(device.c_str(), F_OK) == 0) add(Kind::bind_file, device, device);
  return root;
}

const char* enter_own_root(const OwnRoot& root) noexcept {
  using Kind = OwnRoot::Step::Kind;
  const char* at = root.mount_point.c_str();
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return "making the mounts private";
  if (::mount("tmpfs", at, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m") != 0) return "mounting its tmpfs";
  for (const auto& step : root.steps) {
    const char* path = step.at.c_str();
    const char* source = step.source.c_str();
    switch (step.kind) {
      case Kind::folder:
        if (::mkdir(path, 0700) != 0 || ::chmod(path, step.mode) != 0) return "making a folder";
        break;
      case Kind::link:
        if (::symlink(source, path) != 0) return "making a link";
        break;
      case Kind::bind_file: {
        const int f = ::open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        if (f < 0) return "making a file to bind";
        ::close(f);
        if (::mount(source, path, nullptr, MS_BIND, nullptr) != 0) return "binding a file";
        break;
      }
      case Kind::proc:
        // A procfs of its own: in QEMU's own PID namespace (spawn() in
        // machine.cpp) it lists QEMU alone; where none could be made, it
        // still hides other users' processes (their command lines are
        // world-readable). A user namespace may mount one only for a PID
        // namespace it owns, and a container's masked /proc allows none:
        // then the host's is bound.
        if (::mount("proc", path, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=invisible") == 0) break;
        [[fallthrough]];
      case Kind::bind_ro:
        if (::mount(source, path, nullptr, MS_BIND | MS_REC, nullptr) != 0) return "binding a folder";
        if (step.kind == Kind::bind_ro && ::mount(nullptr, path, nullptr, step.remount_flags, nullptr) != 0)
          return "making a bound folder read-only";
        break;
    }
  }
  // The tmpfs becomes "/", and the host's root goes (man 2 pivot_root: new
  // and old root may be the same folder).
  if (::chdir(at) != 0 || ::syscall(SYS_pivot_root, ".", ".") != 0) return "pivot_root";
  if (::umount2(".", MNT_DETACH) != 0 || ::chdir("/") != 0) return "letting go of the host's root";
  return nullptr;
}

}  // namespace sandgate::vmm::detail
