// The proxy tests' fixture: the real `sandgate proxy` binary on loopback, a
// real Python origin (plain and TLS), a hosts file (or a DNS server on
// loopback, for the tests of DNS), and a network log in the test's own folder.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <regex>
#include <sstream>

#include "process.h"

namespace sandgate {

namespace fs = std::filesystem;
using testing::connect_tcp;
using testing::cpu_ticks;
using testing::exchange;
using testing::leave_descriptors;
using testing::Process;
using testing::restore_descriptors;
using testing::shell;

inline std::string read_file(const fs::path& p) {
  std::ifstream f(p);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

// An origin server on a loopback address, with its connection log.
struct Origin {
  Origin(const std::string& address, const fs::path& dir, std::vector<std::string> extra = {},
         const std::string& name = "")
      : log(dir / ("conn-" + address + name + ".log")), process(argv(address, extra)) {
    port = std::stoi(process.read_line());
  }
  std::vector<std::string> argv(const std::string& address, const std::vector<std::string>& extra) const {
    std::vector<std::string> a = {"python3", std::string(SANDGATE_TESTDATA) + "/proxy/origin.py", address,
                                  log.string()};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  }
  std::size_t connections() const {
    const auto text = read_file(log);
    return static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n'));
  }
  fs::path log;
  Process process;
  int port = 0;
};

// A DNS server on 127.0.0.1 (tests/proxy/dns.py). It answers from a JSON
// zone the test rewrites at will, and logs every question it gets.
// On `address` and `fixed_port` when given (port 53 for a server named in a
// resolv.conf, which takes no port).
struct DnsServer {
  explicit DnsServer(const fs::path& dir, const std::string& address = "127.0.0.1", int fixed_port = 0)
      : zone(dir / "zone.json"), log(dir / "dns-questions.log"), process(argv(dir, address, fixed_port)) {
    const auto line = process.read_line();
    port = line.empty() ? 0 : std::stoi(line);
  }
  std::vector<std::string> argv(const fs::path& dir, const std::string& address, int fixed_port) {
    fs::create_directories(dir);
    set("{}");
    std::ofstream(log, std::ios::trunc).flush();
    return {"python3", std::string(SANDGATE_TESTDATA) + "/proxy/dns.py", zone.string(), log.string(), address,
            std::to_string(fixed_port)};
  }
  void set(const std::string& json) {
    std::ofstream(zone.string() + ".tmp") << json;
    fs::rename(zone.string() + ".tmp", zone);
  }
  // Questions for `name` of `type` so far ("A", "AAAA"; "A tcp" over TCP).
  std::size_t questions(const std::string& name, const std::string& type = "A") const {
    std::istringstream lines(read_file(log));
    std::size_t n = 0;
    for (std::string line; std::getline(lines, line);) n += line == name + " " + type;
    return n;
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(port); }
  fs::path zone, log;
  Process process;
  int port = 0;
};

class ProxyTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("sandgate-proxy-test-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    origin_ = std::make_unique<Origin>("127.0.0.1", dir_);
    forbidden_ = std::make_unique<Origin>("127.0.0.2", dir_);
    // An HTTPS origin for origin.test with a throwaway CA-less certificate,
    // serving a git repository over the "dumb" HTTP protocol.
    cert_ = dir_ / "cert.pem";
    const auto key = dir_ / "key.pem";
    shell("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=origin.test -addext "
          "subjectAltName=DNS:origin.test -keyout " + key.string() + " -out " + cert_.string());
    const auto repo = dir_ / "static" / "repo.git";
    const auto work = dir_ / "work";
    shell("git init -q --bare " + repo.string() + " && git init -q " + work.string() + " && cd " + work.string() +
          " && echo hi > README && git add README && git -c user.name=t -c user.email=t@t commit -qm 'first commit'"
          " && git push -q " + repo.string() + " HEAD:refs/heads/main && git -C " + repo.string() +
          " symbolic-ref HEAD refs/heads/main && git -C " + repo.string() + " update-server-info");
    tls_ = std::make_unique<Origin>("127.0.0.1", dir_,
                                    std::vector<std::string>{"--tls", cert_.string(), key.string(), "--static",
                                                             (dir_ / "static").string()},
                                    "-tls");
  }
  static void TearDownTestSuite() {
    origin_.reset();
    forbidden_.reset();
    tls_.reset();
    fs::remove_all(dir_);
  }

  void SetUp() override {
    const auto o = std::to_string(origin_->port);
    const auto f = std::to_string(forbidden_->port);
    policy_ = dir_ / "policy.yaml";
    write_policy("version: 1\nmode: deny\nallow_hosts:\n  - origin.test:" + std::to_string(tls_->port) +
                 "\n  - origin.test:" + o +
                 "\n  - \"**.wild.test\"\n  - \"**.forbidden.test\"\n  - \"**.mixed.test\"\nblock_hosts:\n"
                 "  - evil.test\nallow_cidrs:\n  - 127.0.0.1/32\n");
    std::ofstream(dir_ / "hosts") << "127.0.0.1 origin.test a.wild.test\n127.0.0.2 forbidden.test\n"
                                     "127.0.0.1 mixed.test\n127.0.0.2 mixed.test\n";
    forbidden_before_ = forbidden_->connections();
  }

  void TearDown() override {
    // The proxy drains and exits 0 on SIGTERM; under ASan a leak or a memory
    // error in it would show here as another exit status.
    if (proxy_) {
      proxy_->signal(SIGTERM);
      EXPECT_EQ(proxy_->wait_exit(std::chrono::seconds(10)), 0);
    }
    // The forbidden origin must never have seen a byte.
    EXPECT_EQ(forbidden_->connections(), forbidden_before_) << "a forbidden origin was contacted";
  }

  void write_policy(const std::string& text) {
    std::ofstream(policy_.string() + ".tmp") << text;
    fs::rename(policy_.string() + ".tmp", policy_);
  }

  // Starts the proxy (after `prefix`, a command that runs it); returns its port.
  int start_proxy(std::vector<std::string> extra = {}, const std::string& listen = "127.0.0.1:0",
                  std::vector<std::string> prefix = {}) {
    std::vector<std::string> argv = prefix;
    const std::vector<std::string> own = {SANDGATE_BIN, "proxy", "--config", policy_.string(), "--listen", listen,
                                          "--hosts-file", (dir_ / "hosts").string(), "--threads", "2",
                                          "--log", log_path().string(), "--log-key", key_path().string()};
    argv.insert(argv.end(), own.begin(), own.end());
    argv.insert(argv.end(), extra.begin(), extra.end());
    proxy_ = std::make_unique<Process>(argv);
    const std::string line = proxy_->read_line();
    std::smatch m;
    EXPECT_TRUE(std::regex_search(line, m, std::regex(R"(listening on .*:(\d+))"))) << line;
    return m.empty() ? 0 : std::stoi(m[1]);
  }

  // The admin listener's port, from the lines a proxy started with --admin
  // prints after "listening on"; 0 if it printed none.
  int read_admin_port() {
    for (int i = 0; i < 3; ++i) {
      const auto line = proxy_->read_line();
      if (auto at = line.find("admin on 127.0.0.1:"); at != std::string::npos) return std::stoi(line.substr(at + 19));
    }
    return 0;
  }

  // GET /small through the proxy on `port`, on a new connection each try,
  // until one is answered 200 (or about 2 s pass); returns the last answer.
  std::string get_until_ok(int port) const {
    std::string answer;
    for (int i = 0; i < 200 && !answer.starts_with("HTTP/1.1 200"); ++i) {
      answer = exchange("127.0.0.1", port, request("/small"));
      if (!answer.starts_with("HTTP/1.1 200")) ::usleep(10'000);
    }
    return answer;
  }

  // Opens a tunnel to the TLS origin through the proxy on `port`, then makes
  // a TLS handshake naming `sni` (certificate name not checked): prints
  // "handshake done" or "refused".
  std::string tls_hello(int port, const std::string& sni) const {
    return shell("python3 -c \"import socket, ssl\n"
                 "s = socket.create_connection(('127.0.0.1', " + std::to_string(port) + "))\n"
                 "s.sendall(b'CONNECT origin.test:" + std::to_string(tls_->port) + " HTTP/1.1\\r\\n\\r\\n')\n"
                 "assert s.recv(4096).startswith(b'HTTP/1.1 200')\n"
                 "c = ssl.create_default_context(cafile='" + cert_.string() + "')\n"
                 "c.check_hostname = False\n"
                 "try:\n"
                 "    c.wrap_socket(s, server_hostname='" + sni + "'); print('handshake done')\n"
                 "except (ssl.SSLError, OSError) as e: print('refused')\n\"")
        .out;
  }

  // Each test's own log (the folder is per process) and its key, outside it.
  static fs::path log_path() {
    return dir_ / ("log-" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name())) /
           "network.jsonl";
  }
  static fs::path key_path() { return dir_ / "keys" / "log.key"; }

  std::string o() const { return std::to_string(origin_->port); }
  std::string f() const { return std::to_string(forbidden_->port); }

  // An absolute-form request head for the origin: the request line, its Host,
  // `headers` (lines ending in CRLF) and the blank line.
  std::string request(const std::string& path, const std::string& headers = "Connection: close\r\n",
                      const std::string& method = "GET", const std::string& version = "1.1") const {
    return method + " http://origin.test:" + o() + path + " HTTP/" + version + "\r\nHost: origin.test:" + o() +
           "\r\n" + headers + "\r\n";
  }

  static inline fs::path dir_;
  static inline std::unique_ptr<Origin> origin_, forbidden_, tls_;
  static inline fs::path cert_;
  fs::path policy_;
  std::unique_ptr<Process> proxy_;
  std::size_t forbidden_before_ = 0;
};

inline std::string status_line(const std::string& response) { return response.substr(0, response.find("\r\n")); }

// Opens a CONNECT tunnel to the origin; returns the socket, or -1.
inline int open_tunnel(int proxy_port, const std::string& origin_port) {
  const int fd = connect_tcp("127.0.0.1", proxy_port);
  if (fd < 0) return -1;
  const std::string req = "CONNECT origin.test:" + origin_port + " HTTP/1.1\r\n\r\n";
  ::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
  char buf[256] = {};
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, 5000) <= 0 || ::recv(fd, buf, sizeof buf - 1, 0) <= 0 ||
      !std::string(buf).starts_with("HTTP/1.1 200")) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// True when the peer closes the socket within `limit`.
inline bool closed_within(int fd, std::chrono::milliseconds limit) {
  pollfd p{fd, POLLIN, 0};
  char buf[256];
  return ::poll(&p, 1, static_cast<int>(limit.count())) > 0 && ::recv(fd, buf, sizeof buf, 0) <= 0;
}

}  // namespace sandgate
