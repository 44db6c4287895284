// Sandboxes end to end: the real `sandgate run`, real QEMU microVMs under
// TCG, Debian's kernel, the guest agent; the proxy and a Python origin on
// the host's loopback. Guest images are cached in the build tree
// (SANDGATE_IMAGES), so only the first run builds one.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>

#include <boost/json/parse.hpp>

#include <csignal>
#include <fstream>
#include <set>

#include "sandbox_fixture.h"

namespace sandgate {
namespace {

using testing::Process;
using testing::shell;

TEST_F(SandboxTest, RunsACommandWithItsStreamsAndExitStatus) {
  const auto r = run("--name streams " + ws_.string() +
                     " -- sh -c 'echo out; echo err >&2; uname -r; echo $HTTPS_PROXY;"
                     " env -i /usr/bin/git config --get http.proxy | sed s/^/git=/;"
                     " env -i /usr/bin/npm config get https-proxy | sed s/^/npm=/;"
                     " sed -n \"s/^proxy = /pip=/p\" /etc/pip.conf; exit 7'");
  EXPECT_EQ(r.status, 7) << r.err;
  EXPECT_NE(r.out.find("out\n"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("err"), std::string::npos) << "stderr kept apart: " << r.out;
  EXPECT_NE(r.err.find("err\n"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("-amd64\n"), std::string::npos) << "the guest runs Debian's kernel: " << r.out;
  EXPECT_NE(r.out.find("http://10.0.2.100:3128"), std::string::npos) << r.out;
  // Tools that read their own config find the proxy without the environment.
  for (const auto* tool : {"git=", "npm=", "pip="})
    EXPECT_NE(r.out.find(std::string(tool) + "http://10.0.2.100:3128\n"), std::string::npos) << tool << r.out;
  // A missing command is 127, as in a shell.
  EXPECT_EQ(run("--name missing " + ws_.string() + " -- no-such-command").status, 127);
}

TEST_F(SandboxTest, TheOnlyWayOutIsTheProxyAndItDecidesEveryConnection) {
  // Services on the host's loopback that the guest may reach only through
  // the proxy, and only because the policy below allows them: plain HTTP by
  // address, HTTPS by a name the proxy's hosts file pins.
  Process origin({"python3", std::string(SANDGATE_TESTDATA) + "/proxy/origin.py", "127.0.0.1",
                  (ws_ / "origin.log").string()});
  const auto port = origin.read_line();
  ASSERT_FALSE(port.empty());
  const auto cert = ws_ / "cert.pem", key = ws_ / "key.pem";
  shell("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=origin.test -addext "
        "subjectAltName=DNS:origin.test -keyout " + key.string() + " -out " + cert.string());
  Process tls({"python3", std::string(SANDGATE_TESTDATA) + "/proxy/origin.py", "127.0.0.1",
               (ws_ / "origin-tls.log").string(), "--tls", cert.string(), key.string()});
  const auto tls_port = tls.read_line();
  ASSERT_FALSE(tls_port.empty());
  std::ofstream(ws_ / "hosts") << "127.0.0.1 origin.test\n";
  // And a name only DNS knows: a DNS server on the host's loopback, given with --dns-server.
  std::ofstream(ws_ / "zone.json") << R"({"web.dns.test": {"A": [["127.0.0.1", 60]]}})";
  Process dns({"python3", std::string(SANDGATE_TESTDATA) + "/proxy/dns.py", (ws_ / "zone.json").string(),
               (ws_ / "dns.log").string()});
  const auto dns_port = dns.read_line();
  ASSERT_FALSE(dns_port.empty());
  const auto policy = ws_ / "policy.yaml";
  std::ofstream(policy) << "version: 1\nmode: deny\nallow_hosts:\n  - 127.0.0.1:" << port << "\n  - origin.test:"
                        << tls_port << "\n  - web.dns.test:" << port << "\nallow_cidrs:\n  - 127.0.0.1/32\n";
  // One boot, one script (in the shared workspace): each probe prints a marker.
  std::ofstream(ws_ / "probe.sh")
      << "echo allowed-https=$(curl -sk -o /dev/null -w '%{http_code}' https://origin.test:" << tls_port << "/small)\n"
      << "echo allowed-http=$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:" << port << "/small)\n"
      << "echo allowed-dns=$(curl -s -o /dev/null -w '%{http_code}' http://web.dns.test:" << port << "/small)\n"
      << "echo BLOCKED-START; curl -s http://pastebin.com/; echo BLOCKED-END\n"
      << "curl -s -o /dev/null https://pastebin.com/; echo blocked-https-exit=$?\n"
      << "nc -z -w 3 10.0.2.2 " << port << " && echo HOST-LOOPBACK-REACHED\n"
      << "nc -z -w 3 127.0.0.1 " << port << " && echo GUEST-LOOPBACK-REACHED\n"
      << "nc -z -w 3 1.1.1.1 443 && echo PUBLIC-REACHED\n"
      << "nc -z -w 3 10.0.2.100 80 && echo OTHER-PORT-REACHED\n"
      << "curl --noproxy '*' -s -m 5 -o /dev/null http://1.1.1.1/ && echo DIRECT-HTTP-REACHED\n"
      << "python3 -c \"import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3); "
         "s.sendto(bytes.fromhex('123401000001000000000000076578616d706c6503636f6d0000010001'), ('10.0.2.3', 53)); "
         "s.recv(512); print('DNS-ANSWERED')\" 2>/dev/null\n"
      << "python3 -c \"import socket; s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); "
         "s.settimeout(2); s.sendto(bytes.fromhex('0800f7ff00000000'), ('1.1.1.1', 0)); s.recv(64); "
         "print('ICMP-ANSWERED')\" 2>/dev/null\n"
      << "echo END\n";
  const auto r = run("--name net --policy " + policy.string() + " --hosts-file " + (ws_ / "hosts").string() +
                     " --dns-server 127.0.0.1:" + dns_port + " " + ws_.string() + " -- sh probe.sh");
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  ASSERT_NE(r.out.find("END"), std::string::npos) << r.out << r.err;
  EXPECT_NE(r.out.find("allowed-https=200"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("allowed-http=200"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("allowed-dns=200"), std::string::npos) << r.out;
  EXPECT_NE(read_file(ws_ / "dns.log").find("web.dns.test A\n"), std::string::npos) << "the proxy asked no DNS";
  const auto blocked = r.out.substr(r.out.find("BLOCKED-START"));
  EXPECT_NE(blocked.find("it is policy, not a network failure"), std::string::npos) << blocked;
  EXPECT_NE(blocked.find("sandgate network proxy net --allow-host pastebin.com:80"), std::string::npos) << blocked;
  EXPECT_NE(r.out.find("blocked-https-exit=56"), std::string::npos) << "curl: CONNECT refused: " << r.out;
  for (const auto* leak : {"HOST-LOOPBACK-REACHED", "GUEST-LOOPBACK-REACHED", "PUBLIC-REACHED", "OTHER-PORT-REACHED",
                           "DIRECT-HTTP-REACHED", "DNS-ANSWERED", "ICMP-ANSWERED"})
    EXPECT_EQ(r.out.find(leak), std::string::npos) << leak << "\n" << r.out;
  // Both decisions are in the sandbox's network log, under its name.
  std::ifstream log(sandbox_log("net"));
  int allowed = 0, denied = 0;
  for (std::string line; std::getline(log, line);) {
    const auto v = boost::json::parse(line).as_object();
    if (v.at("type").as_string() != "decision") continue;
    EXPECT_EQ(v.at("sandbox").as_string(), "net");
    allowed += v.at("verdict").as_string() == "allow";
    denied += v.at("verdict").as_string() == "deny" && v.at("target").as_string().starts_with("pastebin.com:");
  }
  EXPECT_EQ(allowed, 3);
  EXPECT_GE(denied, 2);
}

TEST_F(SandboxTest, TheGuestsConnectionsShareItsPortWithoutLossOrStalls) {
  // Every guest connection is a stream on one virtio-serial port. Six
  // downloads at once, one of them read slowly (its window fills and waits
  // while the others go on), and an upload, each checked whole by hash.
  Process origin({"python3", std::string(SANDGATE_TESTDATA) + "/proxy/origin.py", "127.0.0.1",
                  (ws_ / "origin.log").string()});
  const auto port = origin.read_line();
  ASSERT_FALSE(port.empty());
  const auto url = "http://127.0.0.1:" + port + "/bytes/3000000";
  const auto expected = shell("curl -s " + url + " | sha256sum | cut -c1-64").out;
  ASSERT_EQ(expected.size(), 65u) << expected;
  shell("head -c 2000000 /dev/urandom > " + (ws_ / "upload").string());
  const auto upload_hash = shell("sha256sum " + (ws_ / "upload").string() + " | cut -c1-64").out;
  const auto policy = ws_ / "policy.yaml";
  std::ofstream(policy) << "version: 1\nmode: deny\nallow_hosts:\n  - 127.0.0.1:" << port
                        << "\nallow_cidrs:\n  - 127.0.0.1/32\n";
  std::ofstream(ws_ / "streams.sh")
      << "for i in 1 2 3 4 5; do (echo fast-$(curl -s " << url << " | sha256sum | cut -c1-64)) & done\n"
      << "(echo slow-$(curl -s " << url << " | (sleep 3; cat) | sha256sum | cut -c1-64)) &\n"
      << "echo upload-$(curl -s --data-binary @upload http://127.0.0.1:" << port << "/post)\n"
      << "wait\n";
  const auto r = run("--name streams --policy " + policy.string() + " " + ws_.string() + " -- sh streams.sh");
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  const auto want = expected.substr(0, 64);
  std::size_t fast = 0;
  for (auto at = r.out.find("fast-" + want); at != std::string::npos; at = r.out.find("fast-" + want, at + 1)) ++fast;
  EXPECT_EQ(fast, 5u) << r.out;
  EXPECT_NE(r.out.find("slow-" + want), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("upload-" + upload_hash.substr(0, 64) + " 2000000"), std::string::npos) << r.out;
}

TEST_F(SandboxTest, BadArgumentsSayWhy) {
  EXPECT_EQ(run("").status, 2);
  EXPECT_EQ(run("/no/such/folder -- true").status, 2);
  const auto r = run("--name 'a b' " + ws_.string() + " -- true");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("--name"), std::string::npos) << r.err;
}

TEST_F(SandboxTest, TheWorkspaceIsSharedAtTheSameAbsolutePathBothWays) {
  const auto ws = ws_ / "project with space";
  fs::create_directories(ws);
  std::ofstream(ws / "from-host.txt") << "host wrote this\n";
  fs::permissions(ws / "from-host.txt", fs::perms::owner_read | fs::perms::owner_write | fs::perms::others_read);
  const auto r = run("--name share '" + ws.string() + "' -- sh -c 'pwd; cat from-host.txt; stat -c %a from-host.txt;"
                     " echo guest wrote this > from-guest.txt; chmod 640 from-guest.txt; mkdir -p a/b;"
                     " ln -s from-guest.txt link'");
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_NE(r.out.find(ws.string() + "\n"), std::string::npos) << "cwd is the workspace: " << r.out;
  EXPECT_NE(r.out.find("host wrote this\n604\n"), std::string::npos) << r.out;
  std::ifstream in(ws / "from-guest.txt");
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, "guest wrote this");
  EXPECT_EQ(fs::status(ws / "from-guest.txt").permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read);
  EXPECT_TRUE(fs::is_directory(ws / "a" / "b"));
  EXPECT_EQ(fs::read_symlink(ws / "link"), "from-guest.txt");
}

TEST_F(SandboxTest, UnsafeWorkspacesAreRefused) {
  for (const std::string& w : {std::string("/"), std::string(std::getenv("HOME") ? std::getenv("HOME") : "/root")}) {
    SCOPED_TRACE(w);
    const auto r = run("--name unsafe " + w + " -- true");
    EXPECT_EQ(r.status, 2);
    EXPECT_NE(r.err.find("will not share"), std::string::npos) << r.err;
  }
}

TEST_F(SandboxTest, DetachedLifecycleExecLsStopRmLeaveNothingBehind) {
  const auto h = home_.string();
  // A secret in the caller's environment (an API key, say), which QEMU has
  // no use for and must not get.
  ::setenv("SANDGATE_TEST_SECRET", "hunter2", 1);
  const auto started = cli(h, "run -d --name life " + ws_.string());
  ::unsetenv("SANDGATE_TEST_SECRET");
  ASSERT_EQ(started.status, 0) << started.out;
  EXPECT_NE(started.out.find("life\n"), std::string::npos) << started.out;
  auto ls = cli(h, "ls");
  EXPECT_NE(ls.out.find("running"), std::string::npos) << ls.out;
  const auto state = boost::json::parse(cli(h, "ls --json").out).as_array().at(0).as_object();
  EXPECT_EQ(state.at("name").as_string(), "life");
  EXPECT_EQ(state.at("state").as_string(), "running");
  const long qemu = static_cast<long>(state.at("qemu_pid").as_int64());
  const long proxy = static_cast<long>(state.at("proxy_pid").as_int64());
  // Started by root, QEMU runs as an unprivileged user of its own, though
  // the home (its console log and sockets) is closed to that user:
  // everything it uses is handed to it as a descriptor.
  if (::getuid() == 0) {
    const std::string user(state.at("qemu_user").as_string());
    const auto uid_of = [](long pid) {
      std::ifstream status("/proc/" + std::to_string(pid) + "/status");
      std::string line;
      while (std::getline(status, line) && !line.starts_with("Uid:")) {
      }
      return line.size() > 5 ? line.substr(5, line.find('\t', 5) - 5) : std::string();
    };
    EXPECT_EQ(uid_of(qemu), user);
    EXPECT_GE(std::stoul(user), 0x7000'0000ul) << "not a user of its own";
    // No other process has its user; one run as nobody (the user QEMU
    // shared with other services before) cannot read its memory or
    // environment.
    // The proxy, which parses all that the guest sends and all that
    // origins answer, runs apart from the supervisor, as a user of its own
    // too (not QEMU's), with no capability and no way to gain one, under
    // the proxy's seccomp filter in every thread.
    const std::string proxy_user(state.at("proxy_user").as_string());
    EXPECT_EQ(uid_of(proxy), proxy_user);
    EXPECT_GE(std::stoul(proxy_user), 0x7000'0000ul) << "not a user of its own";
    EXPECT_NE(proxy_user, user);
    const auto proxy_status = read_file("/proc/" + std::to_string(proxy) + "/status");
    EXPECT_NE(proxy_status.find("CapPrm:\t0000000000000000"), std::string::npos) << proxy_status;
    EXPECT_NE(proxy_status.find("CapEff:\t0000000000000000"), std::string::npos) << proxy_status;
    int threads = 0;
    for (const auto& t : fs::directory_iterator("/proc/" + std::to_string(proxy) + "/task")) {
      const auto s = read_file(t.path() / "status");
      EXPECT_NE(s.find("NoNewPrivs:\t1"), std::string::npos) << t.path() << ": " << s;
      EXPECT_NE(s.find("Seccomp:\t2"), std::string::npos) << t.path() << ": " << s;
      ++threads;
    }
    EXPECT_GE(threads, 3) << "the proxy's, the log's and the relay's";
    EXPECT_NE(shell("setpriv --reuid=" + proxy_user + " --clear-groups ls " + home_.string()).status, 0)
        << "the home is open to " << proxy_user;
    for (const auto& e : fs::directory_iterator("/proc")) {
      const auto name = e.path().filename().string();
      if (name.find_first_not_of("0123456789") != std::string::npos) continue;
      const long pid = std::stol(name);
      if (pid != qemu) {
        EXPECT_NE(uid_of(pid), user) << "process " << name << " has QEMU's user";
      }
      if (pid != proxy) {
        EXPECT_NE(uid_of(pid), proxy_user) << "process " << name << " has the proxy's user";
      }
    }
    EXPECT_NE(shell("setpriv --reuid=nobody --regid=nogroup --clear-groups cat /proc/" + std::to_string(qemu) +
                    "/environ")
                  .status,
              0);
    // Nor does it see the host's processes (their command lines), or name
    // one to signal: it is process 1 of a PID namespace of its own, and
    // its /proc lists it alone.
    EXPECT_EQ(processes_seen_by(qemu), std::set<long>{1});
    EXPECT_EQ(namespace_pids(qemu), (std::vector<long>{qemu, 1}));
    EXPECT_NE(shell("setpriv --reuid=" + user + " --clear-groups ls " + home_.string()).status, 0)
        << "the home is open to " << user;
    // No socket is given to that user (virtiofsd's serves the workspace to
    // whoever connects first): QEMU gets connections, not paths.
    int sockets = 0;
    for (const auto& e : fs::recursive_directory_iterator(home_ / "sandboxes" / "life")) {
      struct stat st {};
      if (!e.is_socket() || ::stat(e.path().c_str(), &st) != 0) continue;
      ++sockets;
      EXPECT_NE(std::to_string(st.st_uid), user) << e.path() << " belongs to QEMU's user";
    }
    EXPECT_GE(sockets, 5) << "agent, net, QMP, virtiofsd's and the proxy's";
  }
  // QEMU has a network namespace of its own, with no device: a guest that
  // broke out of it would still have no way around the proxy.
  std::error_code net_ec;
  const auto qemu_net = fs::read_symlink("/proc/" + std::to_string(qemu) + "/ns/net", net_ec);
  EXPECT_FALSE(net_ec) << net_ec.message();
  EXPECT_NE(qemu_net, fs::read_symlink("/proc/self/ns/net"));
  // Nor any of the host's files but the system's: a root of its own, with
  // /usr and no home, no workspace, no image cache.
  const fs::path qemu_root = "/proc/" + std::to_string(qemu) + "/root";
  EXPECT_TRUE(fs::exists(qemu_root / "usr/bin"));
  for (const auto& hidden : {ws_, home_, fs::path(std::getenv("SANDGATE_IMAGES"))})
    EXPECT_FALSE(fs::exists(qemu_root / hidden.relative_path())) << hidden << " is in QEMU's view";
  // And an empty environment.
  const auto environment = read_file("/proc/" + std::to_string(qemu) + "/environ");
  EXPECT_EQ(environment.find("hunter2"), std::string::npos) << "QEMU got the caller's environment";
  EXPECT_TRUE(environment.empty()) << environment;
  const long virtiofsd = static_cast<long>(state.at("virtiofsd_pid").as_int64());
  const long supervisor = static_cast<long>(state.at("pid").as_int64());
  EXPECT_TRUE(pid_alive(qemu) && pid_alive(virtiofsd) && pid_alive(supervisor));
  // QEMU and virtiofsd share no socket with the supervisor: they inherited
  // none of its descriptors (the proxy's listener among them).
  const auto sockets = [](long pid) {
    std::set<std::string> found;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec)) {
      const auto target = fs::read_symlink(e.path(), ec).string();
      if (!ec && target.starts_with("socket:")) found.insert(target);
    }
    return found;
  };
  const auto own = sockets(supervisor);
  EXPECT_FALSE(own.empty());
  for (const long helper : {qemu, virtiofsd, proxy})
    for (const auto& s : sockets(helper)) EXPECT_FALSE(own.contains(s)) << helper << " holds the supervisor's " << s;
  // Nor does the proxy hold the sandbox's lock: a dead supervisor is seen as one.
  std::error_code fd_ec;
  for (const auto& e : fs::directory_iterator("/proc/" + std::to_string(proxy) + "/fd", fd_ec))
    EXPECT_NE(fs::read_symlink(e.path(), fd_ec).filename(), "lock") << "the proxy holds the sandbox's lock";
  // Out of descriptors, the supervisor does not spin on its control socket:
  // an exec waits, and runs once there are descriptors again.
  {
    const auto soft = testing::leave_descriptors(static_cast<int>(supervisor), 0);
    ASSERT_FALSE(soft.empty());
    const auto out = ws_ / "exec-waited.out";
    shell("(SANDGATE_HOME='" + h + "' " + SANDGATE_BIN + " exec life echo waited > " + out.string() + " 2>&1 &)");
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    const auto before = testing::cpu_ticks(static_cast<int>(supervisor));
    std::this_thread::sleep_for(std::chrono::seconds(1));
    EXPECT_LT(testing::cpu_ticks(static_cast<int>(supervisor)) - before, 20) << "the supervisor spins on accept";
    EXPECT_TRUE(testing::restore_descriptors(static_cast<int>(supervisor), soft));
    for (int i = 0; i < 100 && read_file(out).empty(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_EQ(read_file(out), "waited\n");
  }

  // exec: status, streams apart, stdin, env, cwd; two at once.
  auto e = cli(h, "exec life sh -c 'echo out; echo err >&2; exit 5' 2>/dev/null; exit $?");
  EXPECT_EQ(e.status, 5);
  EXPECT_EQ(e.out, "out\n");
  EXPECT_EQ(cli(h, "exec -e A=1 life sh -c 'echo $A; pwd' </dev/null").out, "1\n" + ws_.string() + "\n");
  EXPECT_EQ(shell("printf piped | SANDGATE_HOME='" + h + "' " + SANDGATE_BIN + " exec life tr a-z A-Z").out, "PIPED");
  const auto both = cli(h, "exec life sh -c 'sleep 1; echo one' & " + std::string("SANDGATE_HOME='") + h + "' " +
                               SANDGATE_BIN + " exec life sh -c 'echo two'; wait");
  EXPECT_NE(both.out.find("one"), std::string::npos) << both.out;
  EXPECT_NE(both.out.find("two"), std::string::npos) << both.out;

  // exec -it: a pseudo-terminal of the caller's size (script(1) gives this test a terminal).
  const auto pty = shell("printf 'tty; stty size; exit 3\\n' | script -qec \"stty rows 33 cols 101; SANDGATE_HOME='" +
                         h + "' " + SANDGATE_BIN + " exec -it life sh\" /dev/null");
  EXPECT_EQ(pty.status, 3) << pty.out;
  EXPECT_NE(pty.out.find("/dev/pts/"), std::string::npos) << pty.out;
  EXPECT_NE(pty.out.find("33 101"), std::string::npos) << pty.out;
  // ... and follows it when the caller's window changes size (SIGWINCH).
  std::ofstream(ws_ / "resize.py")
      << "import fcntl, os, pty, struct, sys, termios, time\n"
         "def size(fd, rows, cols): fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack('HHHH', rows, cols, 0, 0))\n"
         "pid, fd = pty.fork()\n"
         "if pid == 0:\n"
         "    size(0, 20, 70)\n"
         "    os.execv(sys.argv[1], [sys.argv[1], 'exec', '-it', 'life', 'sh', '-c', 'stty size; read x; stty size'])\n"
         "out = b''\n"
         "def until(text):\n"
         "    global out\n"
         "    deadline = time.time() + 30\n"
         "    while text not in out and time.time() < deadline:\n"
         "        try: out += os.read(fd, 4096)\n"
         "        except OSError: break\n"
         "until(b'20 70')\n"
         "size(fd, 40, 120)\n"
         "time.sleep(1)\n"
         "os.write(fd, b'x\\n')\n"
         "until(b'40 120')\n"
         "print(out.decode(errors='replace'))\n"
         "sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))\n";
  const auto resized = shell("SANDGATE_HOME='" + h + "' python3 " + (ws_ / "resize.py").string() + " " + SANDGATE_BIN);
  EXPECT_EQ(resized.status, 0) << resized.out;
  EXPECT_NE(resized.out.find("20 70"), std::string::npos) << resized.out;
  EXPECT_NE(resized.out.find("40 120"), std::string::npos) << "the guest's terminal followed: " << resized.out;

  // rm refuses a running sandbox; stop ends every process; rm removes every file.
  EXPECT_EQ(cli(h, "rm life").status, 1);
  EXPECT_EQ(cli(h, "stop life").status, 0);
  for (int i = 0; i < 100 && (pid_alive(qemu) || pid_alive(virtiofsd) || pid_alive(supervisor) || pid_alive(proxy));
       ++i)
    ::usleep(20'000);
  EXPECT_FALSE(pid_alive(qemu));
  EXPECT_FALSE(pid_alive(virtiofsd));
  EXPECT_FALSE(pid_alive(supervisor));
  EXPECT_FALSE(pid_alive(proxy));
  // The proxy's user went with it: the log is the caller's again, whole.
  struct stat log_folder {};
  ASSERT_EQ(::stat((home_ / "sandboxes" / "life" / "log").c_str(), &log_folder), 0);
  EXPECT_EQ(log_folder.st_uid, ::getuid());
  EXPECT_EQ(cli(h, "network log verify life").status, 0);
  EXPECT_NE(cli(h, "ls").out.find("stopped"), std::string::npos);
  EXPECT_EQ(cli(h, "exec life true").status, 125);
  EXPECT_EQ(cli(h, "rm life").status, 0);
  EXPECT_FALSE(fs::exists(home_ / "sandboxes" / "life"));
}

TEST_F(SandboxTest, WhereNoPidNamespaceCanBeMadeQemuRunsWithoutOneAndItsLogSaysSo) {
  const auto h = home_.string();
  // As in a container whose seccomp profile forbids PID namespaces.
  const auto started = shell(std::string(DENY_PID_NAMESPACE) + " env SANDGATE_HOME='" + h + "' " + SANDGATE_BIN +
                             " run -d --name nopid " + ws_.string());
  ASSERT_EQ(started.status, 0) << started.out;
  EXPECT_EQ(cli(h, "exec nopid echo ran").out, "ran\n");
  const auto state = boost::json::parse(cli(h, "ls --json").out).as_array().at(0).as_object();
  const long qemu = static_cast<long>(state.at("qemu_pid").as_int64());
  EXPECT_EQ(namespace_pids(qemu), std::vector<long>{qemu}) << "in the host's PID namespace";
  std::error_code ec;
  EXPECT_NE(fs::read_symlink("/proc/" + std::to_string(qemu) + "/ns/net", ec), fs::read_symlink("/proc/self/ns/net"))
      << "its other namespaces are still its own";
  EXPECT_TRUE(fs::exists("/proc/" + std::to_string(qemu) + "/root/usr/bin"));
  EXPECT_FALSE(fs::exists(fs::path("/proc/" + std::to_string(qemu) + "/root") / home_.relative_path()));
  EXPECT_NE(read_file(home_ / "sandboxes" / "nopid" / "console.log")
                .find("sandgate: QEMU sees the host's processes: no PID namespace of its own could be made"),
            std::string::npos);
  EXPECT_EQ(cli(h, "rm -f nopid").status, 0);
}

TEST_F(SandboxTest, AKilledQemuIsNoticedAndRmCleansUp) {
  const auto h = home_.string();
  ASSERT_EQ(cli(h, "run -d --name crash " + ws_.string()).status, 0);
  const auto state = boost::json::parse(cli(h, "ls --json").out).as_array().at(0).as_object();
  const long qemu = static_cast<long>(state.at("qemu_pid").as_int64());
  ASSERT_TRUE(pid_alive(qemu));
  ::kill(static_cast<pid_t>(qemu), SIGKILL);
  // The supervisor sees its VM gone and stops the rest; ls never says running.
  std::string st;
  for (int i = 0; i < 100; ++i) {
    st = std::string(boost::json::parse(cli(h, "ls --json").out).as_array().at(0).as_object().at("state").as_string());
    if (st == "stopped") break;
    EXPECT_NE(st, "running");
    ::usleep(50'000);
  }
  EXPECT_EQ(st, "stopped");
  EXPECT_EQ(cli(h, "rm crash").status, 0);
  EXPECT_FALSE(fs::exists(home_ / "sandboxes" / "crash"));
}

TEST_F(SandboxTest, ASandboxWhoseProxyEndsStopsAndAProxyWhoseSupervisorEndsDoesToo) {
  const auto h = home_.string();
  const auto pids = [&] {
    const auto st = boost::json::parse(cli(h, "ls --json").out).as_array().at(0).as_object();
    return std::array<long, 3>{static_cast<long>(st.at("pid").as_int64()),
                               static_cast<long>(st.at("qemu_pid").as_int64()),
                               static_cast<long>(st.at("proxy_pid").as_int64())};
  };
  ASSERT_EQ(cli(h, "run -d --name noproxy " + ws_.string()).status, 0);
  const auto [supervisor, qemu, proxy] = pids();
  ASSERT_TRUE(pid_alive(proxy));
  ::kill(static_cast<pid_t>(proxy), SIGKILL);
  // A sandbox without its proxy has no network: it does not run on so.
  std::string st;
  for (int i = 0; i < 200 && st != "stopped"; ++i) {
    ::usleep(50'000);
    st = std::string(boost::json::parse(cli(h, "ls --json").out).as_array().at(0).as_object().at("state").as_string());
  }
  EXPECT_EQ(st, "stopped");
  for (int i = 0; i < 100 && (pid_alive(qemu) || pid_alive(supervisor)); ++i) ::usleep(20'000);
  EXPECT_FALSE(pid_alive(qemu));
  EXPECT_FALSE(pid_alive(supervisor));
  EXPECT_NE(read_file(home_ / "sandboxes" / "noproxy" / "supervisor.log").find("its proxy process exited"),
            std::string::npos)
      << read_file(home_ / "sandboxes" / "noproxy" / "supervisor.log");
  // A proxy outlives no supervisor.
  ASSERT_EQ(cli(h, "run -d --name noproxy " + ws_.string()).status, 0);
  const auto [supervisor2, qemu2, proxy2] = pids();
  ASSERT_TRUE(pid_alive(proxy2));
  ::kill(static_cast<pid_t>(supervisor2), SIGKILL);
  for (int i = 0; i < 200 && pid_alive(proxy2); ++i) ::usleep(50'000);
  EXPECT_FALSE(pid_alive(proxy2));
  EXPECT_EQ(cli(h, "rm -f noproxy").status, 0);
  for (int i = 0; i < 100 && pid_alive(qemu2); ++i) ::usleep(20'000);
  EXPECT_FALSE(pid_alive(qemu2));
  // In the foreground the command runs on, and `run` says afterwards that
  // it had no network.
  fs::remove(ws_ / "started");
  fs::remove(ws_ / "go");
  Result fg;
  std::thread foreground([&] {
    fg = run("--name fg " + ws_.string() + " -- sh -c 'touch started; while [ ! -e go ]; do sleep 0.1; done; echo went'");
  });
  for (int i = 0; i < 1200 && !fs::exists(ws_ / "started"); ++i) ::usleep(50'000);
  const auto fg_state = read_file(home_ / "sandboxes" / "fg" / "state.json");
  const long fg_proxy = fg_state.empty() ? 0 : boost::json::parse(fg_state).at("proxy_pid").as_int64();
  EXPECT_TRUE(pid_alive(fg_proxy)) << fg_state;
  if (fg_proxy > 0) ::kill(static_cast<pid_t>(fg_proxy), SIGKILL);
  std::ofstream(ws_ / "go").put('\n');
  foreground.join();
  EXPECT_EQ(fg.status, 0) << fg.err;
  EXPECT_EQ(fg.out, "went\n");
  EXPECT_NE(fg.err.find("the sandbox's proxy process ended while the sandbox ran"), std::string::npos) << fg.err;
}

TEST_F(SandboxTest, NetworkProxyChangesARunningSandboxsNextVerdictAndEnvSetItsNextExec) {
  const auto h = home_.string();
  Process origin({"python3", std::string(SANDGATE_TESTDATA) + "/proxy/origin.py", "127.0.0.1",
                  (ws_ / "origin2.log").string()});
  const auto port = origin.read_line();
  ASSERT_EQ(cli(h, "run -d --name live " + ws_.string()).status, 0);
  const auto get = "exec live sh -c 'printf \"GET http://localhost:" + port +
                   "/small HTTP/1.0\\r\\n\\r\\n\" | nc 10.0.2.100 3128 | head -1'";
  EXPECT_NE(cli(h, get).out.find("403"), std::string::npos) << "the default policy blocks it";
  const auto changed = cli(h, "network proxy live --allow-host localhost:" + port);
  ASSERT_EQ(changed.status, 0) << changed.out;
  EXPECT_NE(cli(h, get).out.find("200"), std::string::npos) << "allowed by the next request, no restart";
  EXPECT_NE(read_file(home_ / "sandboxes" / "live" / "policy.yaml").find("localhost:" + port), std::string::npos)
      << "persisted to the sandbox's policy";
  EXPECT_EQ(cli(h, "network proxy live --allow-host 'bad*.x'").status, 1) << "a bad rule changes nothing";

  ASSERT_EQ(cli(h, "env set live GREETING=hello").status, 0);
  EXPECT_EQ(cli(h, "exec live sh -c 'echo $GREETING'").out, "hello\n");
  ASSERT_EQ(cli(h, "env unset live GREETING").status, 0);
  EXPECT_EQ(cli(h, "exec live sh -c 'echo x$GREETING'").out, "x\n");
  EXPECT_EQ(cli(h, "rm -f live").status, 0);
}

TEST_F(SandboxTest, GitInTheGuestUsesTheHostIdentityAndAgreesWithTheHost) {
  const auto user_home = ws_ / "user-home";
  fs::create_directories(user_home);
  std::ofstream(user_home / ".gitconfig") << "[user]\n\tname = Sandbox Tester\n\temail = tester@example.com\n";
  const auto repo = ws_ / "repo";
  fs::remove_all(repo);
  fs::create_directories(repo);
  const auto r = shell("(HOME='" + user_home.string() + "' SANDGATE_HOME='" + home_.string() + "' " + SANDGATE_BIN +
                       " run --name git " + repo.string() +
                       " -- sh -c 'git init -q . && echo hello > README && git add README && git commit -qm first"
                       " && git log -1 --format=%an/%ae && git status --porcelain')");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("Sandbox Tester/tester@example.com\n"), std::string::npos) << r.out;
  // The host's git sees the same commit and a clean tree.
  EXPECT_EQ(shell("git -C " + repo.string() + " log -1 --format=%an/%s").out, "Sandbox Tester/first\n");
  EXPECT_EQ(shell("git -C " + repo.string() + " -c safe.directory='*' status --porcelain").out, "");
}

TEST_F(SandboxTest, ASecondSandboxCannotReachTheFirst) {
  // The first serves HTTP on its own port 8000 and can reach it itself; the
  // second tries the address a guest had on QEMU's user network (a guest has
  // no network device now), its own loopback, and its proxy.
  const auto h = home_.string();
  ASSERT_EQ(cli(h, "run -d --name first " + ws_.string()).status, 0);
  ASSERT_EQ(cli(h, "run -d --name second " + ws_.string()).status, 0);
  EXPECT_EQ(cli(h, "exec first sh -c 'echo served-by-first > /tmp/page; cd /tmp;"
                   " setsid python3 -m http.server 8000 </dev/null >/dev/null 2>&1 &'").status, 0);
  const auto own = cli(h, "exec first sh -c 'for i in 1 2 3 4 5 6 7 8 9 10; do"
                          " curl -s --noproxy \"*\" http://127.0.0.1:8000/page && break; sleep 1; done'");
  EXPECT_NE(own.out.find("served-by-first"), std::string::npos) << "control: the first reaches itself: " << own.out;
  const auto other = cli(h, "exec second sh -c 'curl -s -m 5 --noproxy \"*\" http://10.0.2.15:8000/page;"
                            " curl -s -m 5 --noproxy \"*\" http://127.0.0.1:8000/page;"
                            " curl -s -m 5 http://10.0.2.15:8000/page; nc -z -w 3 10.0.2.2 8000 && echo REACHED;"
                            " echo end'");
  EXPECT_NE(other.out.find("end"), std::string::npos) << other.out;
  EXPECT_EQ(other.out.find("served-by-first"), std::string::npos) << other.out;
  EXPECT_EQ(other.out.find("REACHED"), std::string::npos) << other.out;
  EXPECT_EQ(cli(h, "rm -f first").status, 0);
  EXPECT_EQ(cli(h, "rm -f second").status, 0);
}

TEST_F(SandboxTest, ImageLsRmAndPruneKeepTheNewestAndWhatRunningSandboxesUse) {
  // A cache of three images sharing two root filesystems; "b" is booted by a
  // running sandbox (its lock held by this process, as a supervisor would).
  const auto cache = ws_ / "image-cache";
  fs::remove_all(cache);
  const std::vector<std::pair<std::string, std::string>> images = {{"a", "r1"}, {"b", "r1"}, {"c", "r2"}};
  long when = 1'700'000'000;
  for (const auto& [id, rootfs] : images) {
    fs::create_directories(cache / id);
    fs::create_directories(cache / ".rootfs" / rootfs);
    std::ofstream(cache / ".rootfs" / rootfs / "rootfs.erofs") << std::string(4096, 'r');
    std::ofstream(cache / id / "vmlinux") << std::string(1 << 20, 'k');
    std::ofstream(cache / id / "manifest") << "id " << id << "\nkernel linux-image-test 00\nrootfs " << rootfs
                                            << " bookworm bash\n";
    fs::create_symlink("../.rootfs/" + rootfs + "/rootfs.erofs", cache / id / "rootfs.erofs");
    shell("touch -d @" + std::to_string(when += 100) + " " + (cache / id / "manifest").string());
  }
  // c is the newest; b is in use.
  const auto box = home_ / "sandboxes" / "user";
  fs::create_directories(box);
  std::ofstream(box / "state.json") << "{\"name\":\"user\",\"image\":\"" << (cache / "b").string() << "\"}\n";
  const int lock = ::open((box / "lock").c_str(), O_RDWR | O_CREAT, 0600);
  ASSERT_EQ(::flock(lock, LOCK_EX), 0);
  const std::string env = "SANDGATE_IMAGES=" + cache.string() + " ";
  const auto ls = shell(env + "SANDGATE_HOME=" + home_.string() + " " + SANDGATE_BIN + " image ls --json");
  ASSERT_EQ(ls.status, 0);
  const auto listed = boost::json::parse(ls.out).as_array();
  ASSERT_EQ(listed.size(), 3u);
  EXPECT_EQ(listed[0].at("id").as_string(), "c") << "newest first";
  EXPECT_EQ(listed[1].at("used_by").as_array().at(0).as_string(), "user");
  EXPECT_EQ(listed[0].at("rootfs_bytes").as_int64(), 4096);
  EXPECT_EQ(listed[0].at("kernel").as_string(), "linux-image-test");
  auto image = [&](const std::string& args) {
    return shell(env + "SANDGATE_HOME=" + home_.string() + " " + SANDGATE_BIN + " image " + args);
  };
  EXPECT_EQ(image("rm nope").status, 1);
  const auto in_use = image("rm b");
  EXPECT_EQ(in_use.status, 1);
  EXPECT_NE(in_use.out.find("in use by user"), std::string::npos) << in_use.out;
  EXPECT_TRUE(fs::exists(cache / "b"));
  // prune keeps c (newest) and b (in use), removes a; r1 is still b's.
  EXPECT_EQ(image("prune").status, 0);
  EXPECT_FALSE(fs::exists(cache / "a"));
  EXPECT_TRUE(fs::exists(cache / "b"));
  EXPECT_TRUE(fs::exists(cache / "c"));
  EXPECT_TRUE(fs::exists(cache / ".rootfs" / "r1"));
  // Once the sandbox is gone, b goes with -f or prune, and r1 with it.
  ::close(lock);
  EXPECT_EQ(image("rm b").status, 0);
  EXPECT_FALSE(fs::exists(cache / ".rootfs" / "r1"));
  EXPECT_TRUE(fs::exists(cache / ".rootfs" / "r2"));
  EXPECT_EQ(image("bogus").status, 2);
  fs::remove_all(cache);
}

}  // namespace
}  // namespace sandgate
