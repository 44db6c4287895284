// The network log as the proxy writes it and `sandgate network log` reads
// it: real proxy binary, real curl, real signals (SIGTERM, SIGUSR1, SIGKILL).
#include <boost/json/parse.hpp>

#include <map>
#include <set>
#include <iterator>
#include <sstream>

#include "fixture.h"

namespace sandgate {
namespace {

namespace json = boost::json;

// The complete lines of the log: read while the proxy writes, the last may
// be only partly there.
std::vector<json::object> records(const fs::path& p, const std::string& type = "") {
  std::ifstream in(p);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  text.erase(text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1);
  std::istringstream lines(text);
  std::vector<json::object> out;
  for (std::string l; std::getline(lines, l);) {
    auto v = json::parse(l).as_object();
    if (type.empty() || v.at("type").as_string() == type) out.push_back(std::move(v));
  }
  return out;
}

const json::object* find_decision(const std::vector<json::object>& rs, std::string_view target) {
  for (const auto& r : rs)
    if (r.at("type").as_string() == "decision" && r.at("target").is_string() && r.at("target").as_string() == target)
      return &r;
  return nullptr;
}

class NetworkLogTest : public ProxyTest {
 protected:
  // Stops the proxy (SIGTERM) so that the log is complete.
  void stop_proxy() {
    proxy_->signal(SIGTERM);
    ASSERT_EQ(proxy_->wait_exit(std::chrono::seconds(15)), 0);
    proxy_.reset();
  }
  // /metrics from the admin listener, scraped until it holds `wanted` (or
  // about 5 s pass); returns the last body.
  std::string scrape_until(int admin_port, const std::string& wanted) {
    std::string m;
    for (int i = 0; i < 500; ++i) {
      m = exchange("127.0.0.1", admin_port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
      if (m.find(wanted) != std::string::npos) break;
      ::usleep(10'000);
    }
    return m;
  }
  testing::Run cli(const std::string& args) {
    return shell(std::string(SANDGATE_BIN) + " network log " + args + " --log " + log_path().string());
  }
};

TEST_F(NetworkLogTest, EveryRequestHasADecisionAndEveryAllowedOneACloseRecord) {
  const int port = start_proxy();
  const auto proxy = "http://127.0.0.1:" + std::to_string(port);
  EXPECT_EQ(shell("curl -s -o /dev/null -w '%{http_code}' -x " + proxy + " http://origin.test:" + o() + "/small").out,
            "200");
  EXPECT_EQ(shell("curl -s -o /dev/null -w '%{http_code}' -p -x " + proxy + " http://origin.test:" + o() + "/small").out,
            "200");
  EXPECT_EQ(shell("curl -s -o /dev/null -w '%{http_code}' -x " + proxy + " http://evil.test/").out, "403");
  EXPECT_EQ(status_line(exchange("127.0.0.1", port, "GET /relative HTTP/1.1\r\nHost: x\r\n\r\n")),
            "HTTP/1.1 400 Bad Request");
  stop_proxy();

  const auto all = records(log_path());
  ASSERT_FALSE(all.empty());
  EXPECT_EQ(all.front().at("type").as_string(), "file");
  const auto policy = records(log_path(), "policy");
  ASSERT_EQ(policy.size(), 1u);
  EXPECT_EQ(policy[0].at("event").as_string(), "start");
  EXPECT_EQ(policy[0].at("sha256").as_string().size(), 64u);
  EXPECT_EQ(all.back().at("type").as_string(), "checkpoint");
  EXPECT_TRUE(all.back().at("final").as_bool());

  const auto decisions = records(log_path(), "decision");
  ASSERT_EQ(decisions.size(), 4u);
  const auto* blocked = find_decision(decisions, "evil.test:80");
  ASSERT_NE(blocked, nullptr);
  EXPECT_EQ(blocked->at("verdict").as_string(), "deny");
  EXPECT_EQ(blocked->at("reason").as_string(), "blocked-by-denylist");
  EXPECT_EQ(blocked->at("rule").as_object().at("text").as_string(), "evil.test");
  EXPECT_EQ(blocked->at("rule").as_object().at("line").as_int64(), 10);
  EXPECT_EQ(blocked->at("status").as_int64(), 403);
  EXPECT_EQ(blocked->at("policy_sha256").as_string(), policy[0].at("sha256").as_string());

  std::set<std::string> allowed_ids;
  for (const auto& d : decisions) {
    EXPECT_TRUE(d.at("time").as_string().ends_with("Z"));
    EXPECT_EQ(d.at("time").as_string().size(), 27u) << "RFC 3339 with microseconds";
    if (d.at("verdict").as_string() != "allow") continue;
    EXPECT_EQ(d.at("target").as_string(), "origin.test:" + o());
    EXPECT_EQ(d.at("address").as_string(), "127.0.0.1");
    EXPECT_GE(d.at("connect_us").as_int64(), 0);
    EXPECT_TRUE(d.at("client").as_string().starts_with("127.0.0.1:"));
    allowed_ids.insert(std::string(d.at("id").as_string()));
  }
  EXPECT_EQ(allowed_ids.size(), 2u);
  std::set<std::string> proxy_types;
  for (const auto& d : decisions) proxy_types.insert(std::string(d.at("proxy_type").as_string()));
  EXPECT_TRUE(proxy_types.contains("connect") && proxy_types.contains("http"));
  bool malformed = false;
  for (const auto& d : decisions)
    malformed |= d.at("verdict").as_string() == "error" && d.at("reason").as_string() == "bad-request" &&
                 d.at("status").as_int64() == 400;
  EXPECT_TRUE(malformed) << "a 400 is a decision too";

  const auto closes = records(log_path(), "close");
  ASSERT_EQ(closes.size(), 2u);
  for (const auto& c : closes) {
    EXPECT_TRUE(allowed_ids.contains(std::string(c.at("id").as_string())));
    EXPECT_GT(c.at("bytes_down").as_int64(), 0);
    EXPECT_GE(c.at("duration_us").as_int64(), 0);
  }

  const auto verify = cli("verify --key " + key_path().string());
  EXPECT_EQ(verify.status, 0) << verify.out;
  EXPECT_NE(verify.out.find("OK: the chain is intact"), std::string::npos) << verify.out;

  const auto table = cli("");
  EXPECT_EQ(table.status, 0) << table.out;
  const auto b = table.out.find("Blocked requests"), a = table.out.find("Allowed requests");
  ASSERT_NE(b, std::string::npos) << table.out;
  ASSERT_NE(a, std::string::npos) << table.out;
  const auto evil = table.out.find("evil.test:80");
  EXPECT_TRUE(evil > b && evil < a) << table.out;
  EXPECT_NE(table.out.find("blocked-by-denylist", b), std::string::npos) << table.out;
  EXPECT_GT(table.out.find("origin.test:" + o(), a), a) << table.out;
  // The malformed request is listed with the blocked, under no rule: the
  // policy's default did not refuse it.
  const auto bad = table.out.find("bad-request");
  ASSERT_TRUE(bad > b && bad < a) << table.out;
  std::istringstream bad_row(table.out.substr(table.out.rfind('\n', bad) + 1));
  std::string sandbox, host, rule, reason;
  bad_row >> sandbox >> host >> rule >> reason;
  EXPECT_EQ(rule, "-") << table.out;
  EXPECT_EQ(reason, "bad-request") << table.out;

  const auto denied = cli("--verdict deny --json");
  auto v = json::parse(denied.out).as_object();
  EXPECT_EQ(v.at("blocked").as_array().size(), 1u) << denied.out;
  EXPECT_EQ(v.at("allowed").as_array().size(), 0u) << denied.out;
  const auto none = cli("--host '*.origin.test' --raw");
  EXPECT_EQ(none.status, 0) << none.out;
  EXPECT_EQ(none.out, "") << "*. excludes the apex";
  const auto raw = cli("--host '**.origin.test' --raw --verdict allow");
  EXPECT_NE(raw.out.find("\"type\":\"close\""), std::string::npos) << raw.out;
  EXPECT_EQ(raw.out.find("evil.test"), std::string::npos) << raw.out;
  EXPECT_NE(cli("suggest").out.find("host: \"evil.test:80\""), std::string::npos);
  // A window that ends before it starts is a mistake to say, not an empty table.
  const auto backwards = cli("--since 1h --until 2h");
  EXPECT_EQ(backwards.status, 2) << backwards.out;
  EXPECT_NE(backwards.out.find("--until is before --since"), std::string::npos) << backwards.out;
  EXPECT_EQ(cli("--since 2h --until 1m").status, 0);
  // A key named with --key must be there, and be a key; the message says which it is not.
  const auto missing = cli("verify --key " + (dir_ / "no-such.key").string());
  EXPECT_EQ(missing.status, 2) << missing.out;
  EXPECT_NE(missing.out.find("cannot read the log key " + (dir_ / "no-such.key").string() + ": No such file"),
            std::string::npos)
      << missing.out;
  std::ofstream(dir_ / "short.key") << "abc\n";
  const auto short_key = cli("verify --key " + (dir_ / "short.key").string());
  EXPECT_EQ(short_key.status, 2) << short_key.out;
  EXPECT_NE(short_key.out.find("is shorter than 32 characters"), std::string::npos) << short_key.out;
}

TEST_F(NetworkLogTest, KillNineLosesAtMostTheFlushIntervalAndVerifyShowsTheTail) {
  const int port = start_proxy({"--log-flush", "100"});
  const auto req = request("/small");
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(exchange("127.0.0.1", port, req).starts_with("HTTP/1.1 200"));
  // Wait out the flush interval (polling the file), then kill without warning.
  for (int i = 0; i < 200 && records(log_path(), "close").size() < 20; ++i) ::usleep(10'000);
  proxy_->signal(SIGKILL);
  proxy_->wait_exit(std::chrono::seconds(5));
  proxy_.reset();
  EXPECT_EQ(records(log_path(), "decision").size(), 20u);
  EXPECT_EQ(records(log_path(), "close").size(), 20u);
  const auto killed = cli("verify --key " + key_path().string());
  EXPECT_EQ(killed.status, 1) << killed.out;
  EXPECT_NE(killed.out.find("truncated"), std::string::npos) << killed.out;
  EXPECT_NE(killed.out.find("FAILED: 1 problem"), std::string::npos) << "only the tail: " << killed.out;
  // A restart continues the chain; the kill stays on record as an unclean stop.
  start_proxy();
  stop_proxy();
  const auto after = cli("verify --key " + key_path().string());
  EXPECT_EQ(after.status, 0) << after.out;
  EXPECT_NE(after.out.find("unclean stop"), std::string::npos) << after.out;
}

TEST_F(NetworkLogTest, SigusrReopensForLogrotateAndTheChainSpansBothFiles) {
  const int port = start_proxy();
  const auto req = request("/small");
  ASSERT_TRUE(exchange("127.0.0.1", port, req).starts_with("HTTP/1.1 200"));
  for (int i = 0; i < 200 && records(log_path(), "close").empty(); ++i) ::usleep(10'000);
  fs::rename(log_path(), log_path().string() + ".1");
  proxy_->signal(SIGUSR1);
  for (int i = 0; i < 200 && !fs::exists(log_path()); ++i) ::usleep(10'000);
  ASSERT_TRUE(fs::exists(log_path()));
  ASSERT_TRUE(exchange("127.0.0.1", port, req).starts_with("HTTP/1.1 200"));
  stop_proxy();
  EXPECT_EQ(records(log_path(), "decision").size(), 1u);
  EXPECT_EQ(records(log_path().string() + ".1", "decision").size(), 1u);
  const auto r = cli("verify --key " + key_path().string());
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("checked 2 files"), std::string::npos) << r.out;
}

TEST_F(NetworkLogTest, ALogThatCannotBeWrittenMakesTheProxyUnreadyNotDead) {
  // The log's folder moved away and a file put in its place: at SIGUSR1
  // the new log cannot be made. /readyz says so (503, with the reason), the
  // liveness check stays 200, and /metrics shows it; requests meanwhile are
  // served and their records held. With the way clear again, all is well
  // and the held decision is in the new file.
  const int port = start_proxy({"--admin", "127.0.0.1:0"});
  const int admin_port = read_admin_port();
  ASSERT_GT(admin_port, 0);
  const auto get = [&](const std::string& path) {
    return exchange("127.0.0.1", admin_port, "GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n");
  };
  const auto failing = [](int v) { return "\nsandgate_log_failing " + std::to_string(v) + "\n"; };
  EXPECT_TRUE(get("/readyz").starts_with("HTTP/1.1 200")) << get("/readyz");
  const auto folder = log_path().parent_path();
  const auto moved = folder.string() + ".moved";
  fs::rename(folder, moved);
  std::ofstream(folder) << "in the way\n";
  proxy_->signal(SIGUSR1);
  EXPECT_NE(scrape_until(admin_port, failing(1)).find(failing(1)), std::string::npos);
  const auto unready = get("/readyz");
  EXPECT_TRUE(unready.starts_with("HTTP/1.1 503")) << unready;
  EXPECT_NE(unready.find("the network log is not being written (cannot create the log folder"), std::string::npos)
      << unready;
  EXPECT_TRUE(get("/healthz").starts_with("HTTP/1.1 200"));
  EXPECT_TRUE(exchange("127.0.0.1", port, request("/small")).starts_with("HTTP/1.1 200"));
  fs::remove(folder);
  EXPECT_NE(scrape_until(admin_port, failing(0)).find(failing(0)), std::string::npos);
  EXPECT_TRUE(get("/readyz").starts_with("HTTP/1.1 200")) << get("/readyz");
  stop_proxy();
  const auto fresh = records(log_path());
  ASSERT_FALSE(fresh.empty());
  EXPECT_EQ(fresh.front().at("type").as_string(), "file");
  EXPECT_EQ(fresh.front().at("reason").as_string(), "reopen");
  EXPECT_EQ(records(log_path(), "decision").size(), 1u);
}

TEST_F(NetworkLogTest, TunnelOpenAtShutdownGetsItsCloseRecord) {
  const int port = start_proxy({"--drain-timeout", "200"});
  const int fd = open_tunnel(port, o());
  ASSERT_GE(fd, 0);
  stop_proxy();
  ::close(fd);
  const auto closes = records(log_path(), "close");
  ASSERT_EQ(closes.size(), 1u);
  EXPECT_EQ(closes[0].at("end").as_string(), "shutdown");
}

TEST_F(NetworkLogTest, ARequestRefusedInsideATunnelEndsItsCloseRecord) {
  const int port = start_proxy();
  const auto proxy = "http://127.0.0.1:" + std::to_string(port);
  EXPECT_EQ(shell("curl -s -o /dev/null -w '%{http_code}' -p -x " + proxy + " -H 'Host: evil.test' http://origin.test:" +
                  o() + "/small")
                .out,
            "403");
  stop_proxy();
  const auto closes = records(log_path(), "close");
  ASSERT_EQ(closes.size(), 1u);
  EXPECT_EQ(closes[0].at("end").as_string(), "request-refused");
  EXPECT_EQ(closes[0].at("status").as_int64(), 403);
  EXPECT_EQ(closes[0].at("bytes_up").as_int64(), 0) << "the refused request went on";
  // The tunnel itself was allowed: its decision says so.
  const auto decisions = records(log_path(), "decision");
  ASSERT_EQ(decisions.size(), 1u);
  EXPECT_EQ(decisions[0].at("verdict").as_string(), "allow");
  // The reader lists the refusal with the blocked, by its reason.
  const auto summary = json::parse(cli("--json").out).as_object();
  const auto& blocked = summary.at("blocked").as_array();
  ASSERT_EQ(blocked.size(), 1u) << summary;
  EXPECT_EQ(blocked[0].at("host").as_string(), "origin.test:" + o());
  EXPECT_EQ(blocked[0].at("reason").as_string(), "request-refused");
  EXPECT_TRUE(blocked[0].at("rule").is_null());
  EXPECT_EQ(summary.at("allowed").as_array().size(), 1u) << summary;
  // --verdict selects by the outcome: the refusal is an error, the tunnel's
  // opening an allow.
  const auto errors = json::parse(cli("--json --verdict error").out).as_object();
  ASSERT_EQ(errors.at("blocked").as_array().size(), 1u) << errors;
  EXPECT_EQ(errors.at("blocked").as_array()[0].at("reason").as_string(), "request-refused");
  EXPECT_TRUE(errors.at("allowed").as_array().empty()) << errors;
  const auto allowed = json::parse(cli("--json --verdict allow").out).as_object();
  EXPECT_TRUE(allowed.at("blocked").as_array().empty()) << allowed;
  EXPECT_EQ(allowed.at("allowed").as_array().size(), 1u) << allowed;
  EXPECT_TRUE(json::parse(cli("--json --verdict deny").out).as_object().at("blocked").as_array().empty());
  // --raw --verdict error prints the record that says so: the close.
  const auto raw = cli("--raw --verdict error").out;
  EXPECT_NE(raw.find("\"end\":\"request-refused\""), std::string::npos) << raw;
  EXPECT_EQ(raw.find("\"type\":\"decision\""), std::string::npos) << raw;
  // suggest proposes no rule: none refused it, and allowing more would not help.
  EXPECT_NE(cli("suggest").out.find("# nothing was blocked"), std::string::npos);
}

TEST_F(NetworkLogTest, ReloadsAreLoggedWithTheirResult) {
  // Each `policy` record names the hosts file beside the policy: where an
  // allowed name goes is its say. Each loads or fails on its own.
  const auto hosts = dir_ / "hosts";
  const auto sha256sum = [&] { return shell("sha256sum < " + hosts.string()).out.substr(0, 64); };
  const auto hosts_sha_at_start = sha256sum();
  start_proxy({"--no-watch", "--admin", "127.0.0.1:0"});
  const int admin_port = read_admin_port();
  write_policy("version: 1\nmode: deny\nallow_hosts: [\"*.example.com\"]\n");
  std::ofstream(hosts, std::ios::app) << "not-an-address b.wild.test\n";
  proxy_->signal(SIGHUP);
  // Up to 10 s each: a ThreadSanitizer build on a busy machine once took
  // over 3 s, and a second SIGHUP sent while the first is pending merges
  // with it.
  for (int i = 0; i < 1000 && records(log_path(), "policy").size() < 2; ++i) ::usleep(10'000);
  ASSERT_EQ(records(log_path(), "policy").size(), 2u) << "the first reload was not logged";
  write_policy("version: 1\nmode: sideways\n");
  std::ofstream(hosts) << "127.0.0.1 origin.test\n127.0.0.2 b.wild.test c.wild.test\n";
  proxy_->signal(SIGHUP);
  for (int i = 0; i < 1000 && records(log_path(), "policy").size() < 3; ++i) ::usleep(10'000);
  // Each reload had a file that did not load: an alert on failed reloads
  // sees both.
  const auto m = scrape_until(admin_port, "sandgate_reloads_total{result=\"error\"} 2");
  EXPECT_NE(m.find("sandgate_reloads_total{result=\"ok\"} 0\n"), std::string::npos) << m;
  EXPECT_NE(m.find("sandgate_reloads_total{result=\"error\"} 2\n"), std::string::npos) << m;
  stop_proxy();
  const auto p = records(log_path(), "policy");
  ASSERT_EQ(p.size(), 3u);
  EXPECT_EQ(p[1].at("result").as_string(), "ok");
  EXPECT_NE(p[0].at("sha256").as_string(), p[1].at("sha256").as_string());
  EXPECT_EQ(p[2].at("result").as_string(), "error");
  ASSERT_FALSE(p[2].at("errors").as_array().empty());
  EXPECT_NE(std::string(p[2].at("errors").as_array()[0].as_string()).find("mode"), std::string::npos);

  // At start: the file, its bytes' SHA-256 and the names it pins.
  const auto& h0 = p[0].at("hosts_file").as_object();
  EXPECT_EQ(h0.at("file").as_string(), hosts.string());
  EXPECT_EQ(h0.at("result").as_string(), "ok");
  EXPECT_EQ(h0.at("sha256").as_string(), hosts_sha_at_start);
  EXPECT_EQ(h0.at("names").as_int64(), 4);  // origin.test a.wild.test forbidden.test mixed.test
  EXPECT_TRUE(h0.at("error").is_null());
  // A hosts file that fails beside a policy that loads: the last good one
  // stays, and the record says why, at the line.
  const auto& h1 = p[1].at("hosts_file").as_object();
  EXPECT_EQ(h1.at("result").as_string(), "error");
  EXPECT_TRUE(h1.at("sha256").is_null());
  EXPECT_NE(std::string(h1.at("error").as_string()).find(hosts.string() + ":5: 'not-an-address'"), std::string::npos)
      << h1;
  // And one that loads beside a policy that fails.
  const auto& h2 = p[2].at("hosts_file").as_object();
  EXPECT_EQ(h2.at("result").as_string(), "ok");
  EXPECT_EQ(h2.at("sha256").as_string(), sha256sum());
  EXPECT_EQ(h2.at("names").as_int64(), 3);
}

TEST_F(NetworkLogTest, APolicyFileStillBeingWrittenIsNotLoadedHalfWay) {
  // A new file written in two parts, 300 ms apart (longer than the watch's
  // settling): its first part is a policy of its own (no blocked host), and
  // loading it would run that policy until the second part came. Only the
  // finished file is loaded, once.
  start_proxy();
  const auto whole = read_file(policy_);
  const auto cut = whole.find("block_hosts:");
  ASSERT_NE(cut, std::string::npos);
  fs::remove(policy_);
  {
    std::ofstream out(policy_);
    out << whole.substr(0, cut) << std::flush;
    ::usleep(300'000);
    out << whole.substr(cut) << "# written in two parts\n";
  }
  const auto sha = shell("sha256sum < " + policy_.string()).out.substr(0, 64);
  for (int i = 0; i < 1000 && records(log_path(), "policy").size() < 2; ++i) ::usleep(10'000);
  ::usleep(500'000);  // time for a second reload, if one were coming
  const auto p = records(log_path(), "policy");
  ASSERT_EQ(p.size(), 2u) << "one reload, of the whole file";
  EXPECT_EQ(p[1].at("sha256").as_string(), sha);
}

TEST_F(NetworkLogTest, AStderrWriteThatFailsLosesItsLineOnlyNotTheLaterOnes) {
  // stderr a non-blocking pipe, full (as a parent that set O_NONBLOCK on a
  // shared pipe leaves it): the first reload's line cannot be written. The
  // standard stream stayed failed after that, and the later reload said
  // nothing; now only the line that met the full pipe is lost.
  int err[2];
  ASSERT_EQ(::pipe(err), 0);
  ASSERT_EQ(::fcntl(err[0], F_SETFD, FD_CLOEXEC), 0);
  ASSERT_EQ(::fcntl(err[0], F_SETFL, O_NONBLOCK), 0);
  ASSERT_EQ(::fcntl(err[1], F_SETFL, O_NONBLOCK), 0);  // the proxy's too: one open file
  while (::write(err[1], "x", 1) == 1) {
  }
  ASSERT_EQ(errno, EAGAIN);
  start_proxy({"--no-watch"}, "127.0.0.1:0", {"sh", "-c", "exec \"$@\" 2>&" + std::to_string(err[1]), "sh"});
  ::close(err[1]);
  const auto reloads_logged = [&](std::size_t n) {
    for (int i = 0; i < 1000 && records(log_path(), "policy").size() < n; ++i) ::usleep(10'000);
    return records(log_path(), "policy").size() == n;
  };
  proxy_->signal(SIGHUP);
  ASSERT_TRUE(reloads_logged(2));
  ::usleep(300'000);  // its stderr line follows the record by microseconds
  std::string said;
  char buf[65536];
  for (ssize_t n; (n = ::read(err[0], buf, sizeof buf)) > 0;) said.append(buf, static_cast<std::size_t>(n));
  EXPECT_EQ(said.find("reloaded"), std::string::npos);  // it met the full pipe
  proxy_->signal(SIGHUP);
  ASSERT_TRUE(reloads_logged(3));
  said.clear();
  for (int i = 0; i < 200 && said.find('\n') == std::string::npos; ++i) {
    ::usleep(10'000);
    for (ssize_t n; (n = ::read(err[0], buf, sizeof buf)) > 0;) said.append(buf, static_cast<std::size_t>(n));
  }
  ::close(err[0]);
  EXPECT_TRUE(said.starts_with("sandgate proxy: reloaded " + policy_.string() + " (sha256 ")) << said;
  EXPECT_TRUE(said.ends_with(")\n")) << said;  // whole, in one piece
}

TEST_F(NetworkLogTest, MetricsAndHealthzOnTheAdminListener) {
  const int port = start_proxy({"--admin", "127.0.0.1:0"});
  const int admin_port = read_admin_port();
  ASSERT_GT(admin_port, 0);
  const auto req = request("/small");
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(exchange("127.0.0.1", port, req).starts_with("HTTP/1.1 200"));
  ASSERT_TRUE(exchange("127.0.0.1", port, "GET http://evil.test/ HTTP/1.1\r\nHost: evil.test\r\n\r\n")
                  .starts_with("HTTP/1.1 403"));
  const auto m = exchange("127.0.0.1", admin_port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_TRUE(m.starts_with("HTTP/1.1 200")) << m;
  EXPECT_NE(m.find("sandgate_decisions_total{verdict=\"allow\",reason=\"allowed-by-rule\"} 3"), std::string::npos) << m;
  EXPECT_NE(m.find("sandgate_decisions_total{verdict=\"deny\",reason=\"blocked-by-denylist\"} 1"), std::string::npos)
      << m;
  EXPECT_NE(m.find("sandgate_connections_total 4"), std::string::npos) << m;
  EXPECT_NE(m.find("sandgate_decision_seconds_count 4"), std::string::npos) << m;
  EXPECT_NE(m.find("sandgate_connect_seconds_count 3"), std::string::npos) << m;
  EXPECT_NE(m.find("sandgate_policy_info{sha256=\""), std::string::npos) << m;
  EXPECT_NE(m.find("sandgate_log_dropped_total 0"), std::string::npos) << m;
  EXPECT_NE(m.find("sandgate_dns_questions_total 0"), std::string::npos) << m;  // the hosts file answered
  const auto h = exchange("127.0.0.1", admin_port, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_TRUE(h.starts_with("HTTP/1.1 200")) << h;
  EXPECT_NE(h.find(" GMT\r\n"), std::string::npos) << h;  // its Date
  EXPECT_TRUE(exchange("127.0.0.1", admin_port, "GET /other HTTP/1.1\r\nHost: x\r\n\r\n")
                  .starts_with("HTTP/1.1 404"));
  // HEAD: a GET's head, no body (a body would be read as the next answer).
  const auto head = exchange("127.0.0.1", admin_port, "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_TRUE(head.starts_with("HTTP/1.1 200")) << head;
  EXPECT_NE(head.find("Content-Length: 3\r\n"), std::string::npos) << head;
  EXPECT_TRUE(head.ends_with("\r\n\r\n")) << head;
  // Anything else gets told what is served, not a silent close.
  const auto post = exchange("127.0.0.1", admin_port, "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc");
  EXPECT_TRUE(post.starts_with("HTTP/1.1 405")) << post;
  EXPECT_NE(post.find("Allow: GET, HEAD\r\n"), std::string::npos) << post;
  const auto garbage = exchange("127.0.0.1", admin_port, "hello\r\n\r\n");
  EXPECT_TRUE(garbage.starts_with("HTTP/1.1 400")) << garbage;
  EXPECT_NE(garbage.find("GET /metrics"), std::string::npos) << garbage;
  // Tunnels count once they end, by how their bytes moved: HTTP from curl
  // (each request checked), and bytes that are neither TLS nor HTTP (spliced).
  EXPECT_EQ(shell("curl -s -o /dev/null -w '%{http_code}' -p -x http://127.0.0.1:" + std::to_string(port) +
                  " http://origin.test:" + o() + "/small")
                .out,
            "200");
  EXPECT_TRUE(exchange("127.0.0.1", port, "CONNECT origin.test:" + o() + " HTTP/1.1\r\n\r\nhello\r\n\r\n")
                  .starts_with("HTTP/1.1 200"));
  const auto tunnels = scrape_until(admin_port, "sandgate_tunnels_total{path=\"splice\"} 1");
  EXPECT_NE(tunnels.find("sandgate_tunnels_total{path=\"splice\"} 1"), std::string::npos) << tunnels;
  EXPECT_NE(tunnels.find("sandgate_tunnels_total{path=\"http\"} 1"), std::string::npos) << tunnels;
  EXPECT_NE(tunnels.find("sandgate_tunnels_total{path=\"buffered\"} 0"), std::string::npos) << tunnels;
}

// Prometheus lines `NAME{LABELS} VALUE` of one metric, as label text -> value.
std::map<std::string, long> metric_values(const std::string& text, const std::string& name) {
  std::map<std::string, long> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (line.starts_with(name + "{")) {
      const auto close = line.rfind("} ");
      out[line.substr(name.size() + 1, close - name.size() - 1)] = std::stol(line.substr(close + 2));
    }
  return out;
}

TEST_F(NetworkLogTest, TheMetricsCountWhatTheLogRecords) {
  const int port = start_proxy({"--admin", "127.0.0.1:0", "--max-client-connections", "3"});
  const int admin_port = read_admin_port();
  ASSERT_GT(admin_port, 0);
  const auto proxy = "http://127.0.0.1:" + std::to_string(port);
  auto code = [&](const std::string& args) {
    return shell("curl -s -o /dev/null -w '%{http_code}' -x " + proxy + " " + args).out;
  };
  // One of each outcome a client can cause, each checked by what it got.
  EXPECT_EQ(code("http://origin.test:" + o() + "/small"), "200");
  EXPECT_EQ(code("http://origin.test:" + o() + "/small"), "200");
  EXPECT_EQ(code("http://evil.test/"), "403");
  EXPECT_EQ(code("-p http://origin.test:" + o() + "/small"), "200");
  EXPECT_EQ(code("-p -H 'Host: evil.test' http://origin.test:" + o() + "/small"), "403");  // inside the tunnel
  EXPECT_EQ(status_line(exchange("127.0.0.1", port, "GET /relative HTTP/1.1\r\nHost: x\r\n\r\n")),
            "HTTP/1.1 400 Bad Request");
  EXPECT_EQ(status_line(exchange("127.0.0.1", port,
                                 "GET http://origin.test:" + o() + "/ HTTP/2.0\r\nHost: origin.test:" + o() + "\r\n\r\n")),
            "HTTP/1.1 505 HTTP Version Not Supported");
  EXPECT_EQ(status_line(exchange("127.0.0.1", port,
                                 request("/small", "X-Big: " + std::string(20'000, 'a') + "\r\n"))),
            "HTTP/1.1 431 Request Header Fields Too Large");
  // A TLS handshake naming another host in a tunnel to the TLS origin.
  EXPECT_EQ(tls_hello(port, "evil.test"), "refused\n");
  // Three tunnels held open; a fourth connection is refused when accepted.
  std::vector<int> open;
  for (int i = 0; i < 3; ++i) open.push_back(open_tunnel(port, o()));
  for (int fd : open) ASSERT_GE(fd, 0);
  EXPECT_EQ(status_line(exchange("127.0.0.1", port, "")), "HTTP/1.1 429 Too Many Requests");
  for (int fd : open) ::close(fd);

  // Once every connection has ended, its close is counted.
  const auto m = scrape_until(admin_port, "sandgate_connections_open 0\n");
  ASSERT_NE(m.find("sandgate_connections_open 0\n"), std::string::npos) << m;
  stop_proxy();

  std::map<std::string, long> decided, ended;
  for (const auto& r : records(log_path(), "decision"))
    ++decided["verdict=\"" + std::string(r.at("verdict").as_string()) + "\",reason=\"" +
              std::string(r.at("reason").as_string()) + "\""];
  for (const auto& r : records(log_path(), "close")) ++ended["end=\"" + std::string(r.at("end").as_string()) + "\""];
  EXPECT_EQ(metric_values(m, "sandgate_decisions_total"), decided) << m;
  EXPECT_EQ(metric_values(m, "sandgate_closes_total"), ended) << m;
  // Every outcome above is in both, none under "other".
  for (const std::string reason : {"allowed-by-rule", "blocked-by-denylist", "bad-request",
                                   "http-version-not-supported", "header-too-large"}) {
    bool seen = false;
    for (const auto& [labels, n] : decided) seen |= labels.ends_with("reason=\"" + reason + "\"");
    EXPECT_TRUE(seen) << reason;
  }
  for (const std::string end : {"complete", "client-close", "request-refused", "sni-mismatch"})
    EXPECT_TRUE(ended.contains("end=\"" + end + "\"")) << end;
  EXPECT_EQ(m.find("reason=\"other\""), std::string::npos) << m;
  const auto refused = metric_values(m, "sandgate_connections_refused_total");
  EXPECT_EQ(refused.at("reason=\"too-many-client-connections\""), 1) << m;
  EXPECT_EQ(refused.at("reason=\"too-many-connections\""), 0) << m;
}

TEST_F(NetworkLogTest, FollowStreamsNewRecordsAcrossRotation) {
  const int port = start_proxy({"--log-flush", "20"});
  Process follow({SANDGATE_BIN, "network", "log", "--follow", "--log", log_path().string(), "--verdict", "deny"});
  auto blocked = [&](const std::string& host) {
    return exchange("127.0.0.1", port, "GET http://" + host + "/ HTTP/1.1\r\nHost: " + host + "\r\n\r\n");
  };
  ASSERT_TRUE(blocked("evil.test").starts_with("HTTP/1.1 403"));
  const auto first = follow.read_line(std::chrono::seconds(5));
  EXPECT_NE(first.find("\"target\":\"evil.test:80\""), std::string::npos) << first;
  // logrotate: rename, then SIGUSR1; --follow moves on to the new file.
  fs::rename(log_path(), log_path().string() + ".1");
  proxy_->signal(SIGUSR1);
  for (int i = 0; i < 200 && !fs::exists(log_path()); ++i) ::usleep(10'000);
  ASSERT_TRUE(blocked("other.example").starts_with("HTTP/1.1 403"));
  const auto second = follow.read_line(std::chrono::seconds(5));
  EXPECT_NE(second.find("\"target\":\"other.example:80\""), std::string::npos) << second;
}

TEST_F(NetworkLogTest, RawAndFollowWithALimitPrintTheLastRecords) {
  // As tail -n: --limit N keeps the last N matching records, in order; with
  // --follow, every new one after them.
  const int port = start_proxy({"--log-flush", "20"});
  auto blocked = [&](const std::string& host) {
    return exchange("127.0.0.1", port, "GET http://" + host + "/ HTTP/1.1\r\nHost: " + host + "\r\n\r\n");
  };
  for (const char* host : {"x1.example", "x2.example", "x3.example"})
    ASSERT_TRUE(blocked(host).starts_with("HTTP/1.1 403"));
  // All three written (two threads' records need not reach the file in
  // the order the requests came), then the last two of them.
  const auto lines_of = [](const std::string& text) {
    std::istringstream in(text);
    std::vector<std::string> out;
    for (std::string l; std::getline(in, l);) out.push_back(l);
    return out;
  };
  std::vector<std::string> all;
  for (int i = 0; i < 500 && all.size() < 3; ++i) {
    ::usleep(10'000);
    all = lines_of(cli("--raw --verdict deny").out);
  }
  ASSERT_EQ(all.size(), 3u);
  const auto got = lines_of(cli("--raw --verdict deny --limit 2").out);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0], all[1]);
  EXPECT_EQ(got[1], all[2]);

  Process follow({SANDGATE_BIN, "network", "log", "--follow", "--limit", "1", "--log", log_path().string(), "--verdict",
                  "deny"});
  EXPECT_EQ(follow.read_line(std::chrono::seconds(5)), all[2]);
  ASSERT_TRUE(blocked("x4.example").starts_with("HTTP/1.1 403"));
  const auto next = follow.read_line(std::chrono::seconds(5));
  EXPECT_NE(next.find("\"target\":\"x4.example:80\""), std::string::npos) << next;
}

}  // namespace
}  // namespace sandgate
