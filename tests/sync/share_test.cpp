// The workspace share end to end: real QEMU under TCG, Debian's virtiofsd,
// the guest's own tools (sh, coreutils, python3) on one side and the host's
// file system on the other.
#include <sys/stat.h>

#include <boost/json/parse.hpp>

#include <csignal>
#include <fstream>
#include <set>

#include "../vmm/sandbox_fixture.h"
#include "sandgate/sync/share.h"

namespace sandgate {
namespace {

class ShareTest : public SandboxTest {
 protected:
  // A fresh workspace of the test's own.
  fs::path workspace(const std::string& name) {
    const auto ws = ws_ / name;
    fs::remove_all(ws);
    fs::create_directories(ws);
    return ws;
  }
  // A detached sandbox on ws, for `sandgate exec`.
  void start(const std::string& name, const fs::path& ws, const std::string& options = "") {
    const auto r = cli(home_.string(), "run -d --name " + name + " " + options + " " + ws.string());
    ASSERT_EQ(r.status, 0) << r.out;
  }
};

std::string sha256_of(const fs::path& p) {
  const auto r = shell("sha256sum '" + p.string() + "' | cut -c1-64");
  return r.out.substr(0, 64);
}

TEST(ExcludePatterns, NamesMatchAtAnyDepthAndPathsFromTheTop) {
  const auto ws = fs::temp_directory_path() / ("sandgate-exclude-" + std::to_string(::getpid()));
  fs::remove_all(ws);
  for (const auto* d : {"a/b", "keys", "config", "node_modules/x"}) fs::create_directories(ws / d);
  for (const auto* f : {".env", "a/b/.env", "a/.envrc", "keys/k.pem", "config/app.key", "config/app.yaml",
                        "a/b/c.pem", "node_modules/x/.env"})
    std::ofstream(ws / f) << "x";
  fs::create_symlink("/etc/hostname", ws / "a" / "link.pem");
  const auto found = sync::find_excluded(ws.string(), {".env", "*.pem", "/config/*.key", "node_modules"});
  const std::set<std::string> got(found.begin(), found.end());
  const std::set<std::string> want = {(ws / ".env").string(),        (ws / "a/b/.env").string(),
                                      (ws / "keys/k.pem").string(),  (ws / "a/b/c.pem").string(),
                                      (ws / "config/app.key").string(), (ws / "node_modules").string()};
  EXPECT_EQ(got, want) << "a symlink is never covered; a hidden folder is not entered";
  EXPECT_FALSE(sync::exclude_pattern_error("../secrets").empty());
  EXPECT_FALSE(sync::exclude_pattern_error("a/../../b").empty());
  EXPECT_FALSE(sync::exclude_pattern_error("").empty());
  EXPECT_TRUE(sync::exclude_pattern_error("/build/*.key").empty());
  fs::remove_all(ws);
}

TEST_F(ShareTest, ReadOnlyWorkspaceCannotBeChangedEvenAfterARemountInTheGuest) {
  const auto ws = workspace("ro");
  std::ofstream(ws / "keep.txt") << "original\n";
  start("ro", ws, "--workspace-readonly");
  const auto r = cli(home_.string(), "exec ro sh -c 'cat keep.txt; echo x > new.txt || echo CREATE-REFUSED;"
                                     " mount -o remount,rw " + ws.string() + "; echo y >> keep.txt || echo APPEND-REFUSED;"
                                     " rm keep.txt || echo RM-REFUSED; mkdir d || echo MKDIR-REFUSED'");
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("original\n"), std::string::npos) << r.out;
  for (const auto* refused : {"CREATE-REFUSED", "APPEND-REFUSED", "RM-REFUSED", "MKDIR-REFUSED"})
    EXPECT_NE(r.out.find(refused), std::string::npos) << refused << "\n" << r.out;
  EXPECT_EQ(read_file(ws / "keep.txt"), "original\n");
  EXPECT_FALSE(fs::exists(ws / "new.txt"));
  EXPECT_FALSE(fs::exists(ws / "d"));
  EXPECT_NE(cli(home_.string(), "ls").out.find(ws.string() + " (read-only)"), std::string::npos);

  // If virtiofsd dies, ls says the workspace is gone from the guest.
  const auto state = boost::json::parse(cli(home_.string(), "ls --json").out).as_array().at(0).as_object();
  ASSERT_GT(state.at("virtiofsd_pid").as_int64(), 0);
  ::kill(static_cast<pid_t>(state.at("virtiofsd_pid").as_int64()), SIGKILL);
  std::string ls;
  for (int i = 0; i < 50 && ls.find("share down") == std::string::npos; ++i) {
    ::usleep(100'000);
    ls = cli(home_.string(), "ls").out;
  }
  EXPECT_NE(ls.find("running (workspace share down"), std::string::npos) << ls;
  EXPECT_EQ(cli(home_.string(), "rm -f ro").status, 0);
}

TEST_F(ShareTest, ExcludedPathsAreEmptyAndReadOnlyInTheGuestAndUntouchedOnTheHost) {
  const auto ws = workspace("exclude");
  fs::create_directories(ws / "sub");
  fs::create_directories(ws / "secrets");
  std::ofstream(ws / ".env") << "TOKEN=host-secret-1\n";
  std::ofstream(ws / "sub" / ".env") << "TOKEN=host-secret-2\n";
  std::ofstream(ws / "secrets" / "id.key") << "host-secret-3\n";
  std::ofstream(ws / "visible.txt") << "shown\n";
  const auto r = run("--name ex --exclude .env --exclude /secrets " + ws.string() +
                     " -- sh -c 'cat .env sub/.env secrets/id.key 2>&1; ls -A secrets; cat visible.txt;"
                     " echo stolen > .env || echo WRITE-REFUSED; touch secrets/new || echo CREATE-REFUSED'");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out.find("host-secret"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("shown\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("WRITE-REFUSED"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("CREATE-REFUSED"), std::string::npos) << r.out;
  EXPECT_EQ(read_file(ws / ".env"), "TOKEN=host-secret-1\n");
  EXPECT_EQ(read_file(ws / "secrets" / "id.key"), "host-secret-3\n");
  EXPECT_FALSE(fs::exists(ws / "secrets" / "new"));
  // A pattern that climbs out is refused before anything starts.
  const auto bad = run("--name ex2 --exclude ../x " + ws.string() + " -- true");
  EXPECT_EQ(bad.status, 2);
  EXPECT_NE(bad.err.find("--exclude"), std::string::npos) << bad.err;
}

TEST_F(ShareTest, SymlinksCannotReachOutsideTheWorkspaceAndDeviceFilesAreRefused) {
  const auto ws = workspace("links");
  const auto outside = ws_ / "outside-secret.txt";
  std::ofstream(outside) << "host-only-content\n";
  fs::create_symlink(outside, ws / "abs-link");
  fs::create_symlink("../outside-secret.txt", ws / "rel-link");
  const auto r = run("--name links " + ws.string() +
                     " -- sh -c 'cat abs-link rel-link 2>&1; ln -s /etc/shadow guest-link; cat guest-link >/dev/null;"
                     " mknod null-dev c 1 3 && echo DEVICE-CREATED; mknod disk b 8 0 && echo BLOCK-CREATED;"
                     " echo done'");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("done"), std::string::npos) << r.out << r.err;
  EXPECT_EQ(r.out.find("host-only-content"), std::string::npos) << "the guest resolves links in its own tree: " << r.out;
  EXPECT_EQ(r.out.find("DEVICE-CREATED"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("BLOCK-CREATED"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(fs::symlink_status(ws / "null-dev")));
  EXPECT_FALSE(fs::exists(fs::symlink_status(ws / "disk")));
  // The guest's link is a link on the host too, pointing where it said: a
  // host reader that follows it reads the host's file, as with any checkout.
  EXPECT_EQ(fs::read_symlink(ws / "guest-link"), "/etc/shadow");
}

TEST_F(ShareTest, ChangesPropagateBothWaysWithModeOwnerAndMtime) {
  const auto ws = workspace("meta");
  std::ofstream(ws / "host.txt") << "from host\n";
  fs::permissions(ws / "host.txt", fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read);
  shell("touch -d @1600000000 '" + (ws / "host.txt").string() + "'");
  std::ofstream(ws / "to-rename") << "r";
  std::ofstream(ws / "to-delete") << "d";
  start("meta", ws);
  const auto g = cli(home_.string(), "exec meta sh -c 'stat -c \"%a %Y %s\" host.txt; echo from guest > guest.txt;"
                                     " chmod 751 guest.txt; touch -d @1500000000 guest.txt; mv to-rename renamed;"
                                     " rm to-delete; mkdir -p x/y'");
  EXPECT_EQ(g.status, 0) << g.out;
  EXPECT_NE(g.out.find("640 1600000000 10"), std::string::npos) << g.out;
  struct stat st {};
  ASSERT_EQ(::stat((ws / "guest.txt").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0751u);
  EXPECT_EQ(st.st_mtime, 1500000000);
  EXPECT_EQ(st.st_uid, ::getuid()) << "files the guest creates belong to the user who ran sandgate";
  EXPECT_EQ(read_file(ws / "guest.txt"), "from guest\n");
  EXPECT_TRUE(fs::exists(ws / "renamed"));
  EXPECT_FALSE(fs::exists(ws / "to-rename"));
  EXPECT_FALSE(fs::exists(ws / "to-delete"));
  EXPECT_TRUE(fs::is_directory(ws / "x" / "y"));
  // And the other way, while it runs.
  fs::rename(ws / "renamed", ws / "renamed-by-host");
  fs::remove(ws / "guest.txt");
  std::ofstream(ws / "late.txt") << "written after boot\n";
  const auto h = cli(home_.string(), "exec meta sh -c 'ls; cat late.txt'");
  EXPECT_NE(h.out.find("renamed-by-host"), std::string::npos) << h.out;
  EXPECT_EQ(h.out.find("guest.txt"), std::string::npos) << h.out;
  EXPECT_NE(h.out.find("written after boot"), std::string::npos) << h.out;
  // A file the guest closed just before `stop` is on the host, byte for byte.
  const auto w = cli(home_.string(),
                     "exec meta python3 -c \"open('last.bin','wb').write(bytes(range(256))*4096)\"");
  EXPECT_EQ(w.status, 0) << w.out;
  EXPECT_EQ(cli(home_.string(), "stop meta").status, 0);
  std::string want;
  for (int i = 0; i < 4096; ++i)
    for (int b = 0; b < 256; ++b) want += static_cast<char>(b);
  EXPECT_EQ(read_file(ws / "last.bin"), want);
  cli(home_.string(), "rm -f meta");
}

TEST_F(ShareTest, WithoutVirtiofsdTheWorkspaceComesOver9pWithAWarning) {
  const auto ws = workspace("ninep");
  std::ofstream(ws / "host.txt") << "from host\n";
  const std::string no_virtiofsd = "SANDGATE_VIRTIOFSD=" + (ws_ / "no-such-virtiofsd").string() + " ";
  auto run_9p = [&](const std::string& args) {
    const auto out = ws_ / "stdout", err = ws_ / "stderr";
    const auto r = shell("(" + no_virtiofsd + "SANDGATE_HOME='" + home_.string() + "' " + SANDGATE_BIN + " run " +
                         args + " >" + out.string() + " 2>" + err.string() + ")");
    return Result{r.status, read_file(out), read_file(err)};
  };
  const auto r = run_9p("--name ninep " + ws.string() +
                        " -- sh -c 'mount | grep -c \" type 9p \"; cat host.txt; echo from guest > guest.txt;"
                        " chmod 640 guest.txt; mknod dev c 1 3 || echo MKNOD-REFUSED'");
  EXPECT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_NE(r.err.find("no-such-virtiofsd is missing"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("over virtio-9p instead"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("1\nfrom host\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("MKNOD-REFUSED"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(fs::symlink_status(ws / "dev")));
  EXPECT_EQ(read_file(ws / "guest.txt"), "from guest\n");
  EXPECT_EQ(fs::status(ws / "guest.txt").permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read);
  // Read-only holds over 9p too (QEMU enforces it) ...
  const auto ro = run_9p("--name ninep-ro --workspace-readonly " + ws.string() +
                         " -- sh -c 'mount -o remount,rw " + ws.string() + "; echo x >> host.txt || echo REFUSED'");
  EXPECT_NE(ro.out.find("REFUSED"), std::string::npos) << ro.out << ro.err;
  EXPECT_EQ(read_file(ws / "host.txt"), "from host\n");
  // ... but 9p cannot hide paths, so --exclude refuses to start.
  const auto ex = run_9p("--name ninep-ex --exclude host.txt " + ws.string() + " -- cat host.txt");
  EXPECT_EQ(ex.status, 1);
  EXPECT_EQ(ex.out.find("from host"), std::string::npos);
  EXPECT_NE(ex.err.find("--exclude needs virtiofsd"), std::string::npos) << ex.err;
}

TEST_F(ShareTest, RunByAnUnprivilegedUserWhatTheGuestCreatesBelongsToThatUser) {
  if (::getuid() != 0) GTEST_SKIP() << "needs root to act as another user";
  // nobody (65534) runs sandgate: virtiofsd in a user namespace mapping
  // nobody to the guest's root, QEMU as nobody.
  const std::string as_nobody = "setpriv --reuid=65534 --regid=65534 --clear-groups ";
  const std::string images = std::getenv("SANDGATE_IMAGES");
  if (shell(as_nobody + "test -x " + std::string(SANDGATE_BIN) + " -a -r " + images).status != 0)
    GTEST_SKIP() << "the build tree is not reachable by an unprivileged user";
  // The image is built by root (nobody may only read the cache).
  ASSERT_EQ(run("--name warm " + workspace("warm").string() + " -- true").status, 0);
  const auto top = fs::temp_directory_path() / ("sandgate-nobody-" + std::to_string(::getpid()));
  fs::create_directories(top / "home");
  fs::create_directories(top / "ws");
  ASSERT_EQ(::chown(top.c_str(), 65534, 65534) | ::chown((top / "home").c_str(), 65534, 65534) |
                ::chown((top / "ws").c_str(), 65534, 65534),
            0);
  const auto r = shell(as_nobody + "env HOME=" + (top / "home").string() + " SANDGATE_HOME=" +
                       (top / "home").string() + " SANDGATE_IMAGES=" + images + " " + SANDGATE_BIN +
                       " run " + (top / "ws").string() + " -- sh -c 'id -u; echo made > made.txt; mkdir dir'");
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("0\n"), std::string::npos) << "root in the guest: " << r.out;
  struct stat st {};
  ASSERT_EQ(::stat((top / "ws" / "made.txt").c_str(), &st), 0) << r.out;
  EXPECT_EQ(st.st_uid, 65534u);
  EXPECT_EQ(st.st_gid, 65534u);
  ASSERT_EQ(::stat((top / "ws" / "dir").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 65534u);
  EXPECT_EQ(read_file(top / "ws" / "made.txt"), "made\n");
  // Its QEMU has a network namespace and a root of its own (in a user
  // namespace, which an unprivileged user may make), as root's has.
  const std::string as_sandgate = as_nobody + "env HOME=" + (top / "home").string() + " SANDGATE_HOME=" +
                                  (top / "home").string() + " SANDGATE_IMAGES=" + images + " " + SANDGATE_BIN + " ";
  ASSERT_EQ(shell(as_sandgate + "run -d --name isolated " + (top / "ws").string()).status, 0);
  struct Removed {  // whatever fails below, the sandbox goes
    std::string rm;
    ~Removed() { shell(rm); }
  } removed{as_sandgate + "rm -f isolated"};
  std::string qemu;
  const auto listed = boost::json::parse(shell(as_sandgate + "ls --json").out);
  for (const auto& sandbox : listed.as_array())
    if (sandbox.as_object().at("name") == "isolated") qemu = std::to_string(sandbox.as_object().at("qemu_pid").as_int64());
  ASSERT_FALSE(qemu.empty());
  std::error_code ec;
  const auto qemu_net = fs::read_symlink("/proc/" + qemu + "/ns/net", ec);
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_NE(qemu_net, fs::read_symlink("/proc/self/ns/net"));
  // And a root of its own: the user's home and workspace are not in it.
  const fs::path qemu_root = "/proc/" + qemu + "/root";
  EXPECT_TRUE(fs::exists(qemu_root / "usr/bin"));
  EXPECT_FALSE(fs::exists(qemu_root / top.relative_path())) << "QEMU sees " << top;
  // Nor the user's other processes: it is process 1 of a PID namespace of
  // its own (which its user namespace owns), and its /proc lists it alone.
  // In the user's, it could signal every process of the user.
  const long qemu_pid = std::stol(qemu);
  EXPECT_EQ(processes_seen_by(qemu_pid), std::set<long>{1});
  EXPECT_EQ(namespace_pids(qemu_pid), (std::vector<long>{qemu_pid, 1}));
  EXPECT_EQ(shell(removed.rm).status, 0);
  fs::remove_all(top);
}

TEST_F(ShareTest, TenThousandSmallFilesAndOneGibibyteFileChecksummedBothWays) {
  const auto ws = workspace("bulk");
  // Host to guest: 10,000 files the guest hashes; a 1 GiB file it hashes
  // and copies. Guest to host: 10,000 files it writes, and the copy.
  fs::create_directories(ws / "from-host");
  for (int i = 0; i < 10000; ++i) {
    const auto name = "f" + std::to_string(i);
    std::ofstream(ws / "from-host" / name) << "host file " << i << "\n";
  }
  ASSERT_EQ(shell("head -c 1073741824 /dev/urandom > '" + (ws / "big.bin").string() + "'").status, 0);
  const auto big_sum = sha256_of(ws / "big.bin");
  std::ofstream(ws / "bulk.py")
      << "import hashlib, os\n"
         "h = hashlib.sha256()\n"
         "for i in range(10000):\n"
         "    h.update(open('from-host/f%d' % i, 'rb').read())\n"
         "print('small', h.hexdigest())\n"
         // virtiofsd holds a descriptor for every file the guest caches; let
         // the guest forget the first 10,000 in case the host's limit is low.
         "open('/proc/sys/vm/drop_caches', 'w').write('2')\n"
         "os.makedirs('from-guest', exist_ok=True)\n"
         "for i in range(10000):\n"
         "    with open('from-guest/g%d' % i, 'w') as f: f.write('guest file %d\\n' % i)\n"
         "print('wrote')\n";
  const auto r = run("--name bulk --memory 768 " + ws.string() +
                     " -- sh -c 'python3 bulk.py && sha256sum big.bin && cp big.bin big.copy && echo copied'");
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  std::string small_host;
  {
    std::string all;
    for (int i = 0; i < 10000; ++i) all += "host file " + std::to_string(i) + "\n";
    std::ofstream(ws_ / "small-all") << all;
    small_host = sha256_of(ws_ / "small-all");
  }
  EXPECT_NE(r.out.find("small " + small_host), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(big_sum + "  big.bin"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("copied"), std::string::npos) << r.out;
  EXPECT_EQ(sha256_of(ws / "big.copy"), big_sum);
  int good = 0;
  for (int i = 0; i < 10000; ++i)
    good += read_file(ws / "from-guest" / ("g" + std::to_string(i))) == "guest file " + std::to_string(i) + "\n";
  EXPECT_EQ(good, 10000);
  fs::remove_all(ws);
}

}  // namespace
}  // namespace sandgate
