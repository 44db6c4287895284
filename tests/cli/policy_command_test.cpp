// The sandgate executable as an operator runs it: exit codes, output, --help.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <boost/json.hpp>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>

namespace {

namespace fs = std::filesystem;

struct Run {
  int status;
  std::string out;  // stdout and stderr together
};

Run run(const std::string& args) {
  const std::string cmd = std::string(SANDGATE_BIN) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 4096> buf;
  while (std::size_t n = std::fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  const int st = pclose(p);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

std::string policy_file(const std::string& name, const std::string& text) {
  const auto dir = fs::temp_directory_path() / ("sandgate-cli-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const auto path = (dir / name).string();
  std::ofstream(path) << text;
  return path;
}

const std::string default_policy = std::string(SANDGATE_SOURCE_DIR) + "/config/default-policy.yaml";

TEST(Cli, CheckValidAndInvalidFiles) {
  auto ok = run("policy check " + default_policy);
  EXPECT_EQ(ok.status, 0) << ok.out;
  EXPECT_NE(ok.out.find("default-policy.yaml: ok, mode deny, 16 rules"), std::string::npos) << ok.out;

  const auto bad = policy_file("bad.yaml", "version: 1\nmode: deny\nallow_hosts:\n  - api.*.x.com\n  - \"*.com\"\n");
  auto r = run("policy check " + default_policy + " " + bad);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find(bad + ":4:5: error: allow_hosts[0]: 'api.*.x.com'"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(bad + ":5:5: error: allow_hosts[1]: '*.com'"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(bad + ": invalid, 2 errors"), std::string::npos) << r.out;

  const auto warn = policy_file("warn.yaml", "version: 1\nmode: deny\nallow_hosts:\n  - \"*.example.com\"\n");
  auto w = run("policy check " + warn);
  EXPECT_EQ(w.status, 0);
  EXPECT_NE(w.out.find(warn + ":4:5: warning: allow_hosts '*.example.com': does not match"), std::string::npos);
  EXPECT_NE(w.out.find("1 warnings"), std::string::npos) << w.out;
}

TEST(Cli, ExplainExitCodesAndText) {
  auto allow = run("policy explain " + default_policy + " api.anthropic.com");
  EXPECT_EQ(allow.status, 0) << allow.out;
  EXPECT_NE(allow.out.find("verdict  allow"), std::string::npos) << allow.out;
  EXPECT_NE(allow.out.find("rule     allow **.anthropic.com:443  (" + default_policy + ":12:11)  # Claude API"),
            std::string::npos)
      << allow.out;

  auto deny = run("policy explain " + default_policy + " pastebin.com");
  EXPECT_EQ(deny.status, 1);
  EXPECT_NE(deny.out.find("reason   blocked-by-default"), std::string::npos) << deny.out;
  EXPECT_NE(deny.out.find("<default policy: mode deny>"), std::string::npos) << deny.out;

  auto rebind = run("policy explain " + default_policy + " api.anthropic.com --addr 169.254.169.254");
  EXPECT_EQ(rebind.status, 1);
  EXPECT_NE(rebind.out.find("reason   blocked-by-default-cidr"), std::string::npos) << rebind.out;
  EXPECT_NE(rebind.out.find("phase    address (169.254.169.254)"), std::string::npos) << rebind.out;
  // An IPv6 target is written the way it is given, bracketed before its port.
  auto v6 = run("policy explain " + default_policy + " '[::1]:8080'");
  EXPECT_NE(v6.out.find("target   [::1]:8080\n"), std::string::npos) << v6.out;

  // A URL, as an agent's error shows it: its scheme says the port it leaves unsaid.
  auto url = run("policy explain " + default_policy + " 'HTTPS://API.Anthropic.com/v1/messages?x=1'");
  EXPECT_EQ(url.status, 0) << url.out;
  EXPECT_NE(url.out.find("target   api.anthropic.com:443\n"), std::string::npos) << url.out;
  auto http = run("policy explain " + default_policy + " http://pastebin.com/raw/x");
  EXPECT_EQ(http.status, 1) << http.out;
  EXPECT_NE(http.out.find("target   pastebin.com:80\n"), std::string::npos) << http.out;
  EXPECT_NE(run("policy explain " + default_policy + " 'http://[::1]:8080/'").out.find("target   [::1]:8080\n"),
            std::string::npos);
  auto ftp = run("policy explain " + default_policy + " ftp://x.org/");
  EXPECT_EQ(ftp.status, 2);
  EXPECT_NE(ftp.out.find("ftp:// URLs have no port sandgate knows: give host:port"), std::string::npos) << ftp.out;
  EXPECT_EQ(run("policy explain " + default_policy + " 'http://user@evil.test@good.test/'").status, 2);
  EXPECT_EQ(run("policy explain " + default_policy + " 'https://u:p@good.test/'").status, 2);
  EXPECT_EQ(run("policy explain " + default_policy + " 'https:///path'").status, 2);
  EXPECT_EQ(run("policy explain " + default_policy + " 'bad host'").status, 2);
  EXPECT_EQ(run("policy explain " + default_policy + " x.com --addr not-an-ip").status, 2);
  EXPECT_EQ(run("policy explain /nonexistent.yaml x.com").status, 2);
  EXPECT_EQ(run("policy explain " + default_policy).status, 2);
}

TEST(Cli, NetworkProxyTakesAUrlsHostAndPort) {
  // The default policy new sandboxes start from, in a home of its own.
  const auto home = fs::path(policy_file("unused", "")).parent_path() / "home-url";
  fs::remove_all(home);
  ::setenv("SANDGATE_HOME", home.c_str(), 1);
  auto r = run("network proxy --default --allow-host https://api.example.test/v1/x "
                     "--block-host http://pastebin.test:8080/raw --allow-host 're:^a[0-9]+\\.example\\.test$'");
  ASSERT_EQ(r.status, 0) << r.out;
  std::ifstream in(home / "policy.yaml");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("api.example.test:443"), std::string::npos) << text;
  EXPECT_NE(text.find("pastebin.test:8080"), std::string::npos) << text;
  EXPECT_NE(text.find("re:^a[0-9]+\\.example\\.test$"), std::string::npos) << text;  // a regex as written
  EXPECT_EQ(text.find("://"), std::string::npos) << text;
  // An edit keeps the file's mode, whatever the editor's umask: a sandbox's
  // proxy, a user of its own, reads the file it edits.
  for (const auto mode : {fs::perms(0644), fs::perms(0640)}) {
    fs::permissions(home / "policy.yaml", mode);
    for (const char* umask : {"0", "077"}) {
      const auto edit = "--allow-host umask-" + std::string(umask) + ".example.test:443";
      ASSERT_EQ(run("--version >/dev/null; umask " + std::string(umask) + "; " + SANDGATE_BIN +
                    " network proxy --default " + edit)
                    .status,
                0);
      EXPECT_EQ(fs::status(home / "policy.yaml").permissions(), mode) << "umask " << umask;
    }
  }
  auto ftp = run("network proxy --default --allow-host ftp://files.example.test/");
  EXPECT_EQ(ftp.status, 2);
  EXPECT_NE(ftp.out.find("--allow-host 'ftp://files.example.test/': ftp:// URLs have no port"), std::string::npos)
      << ftp.out;
  ::unsetenv("SANDGATE_HOME");
  fs::remove_all(home);
}

TEST(Cli, ExplainListsLosersAndWhy) {
  const auto f = policy_file("p.yaml",
                             "version: 1\nmode: deny\nallow_hosts:\n  - \"**.example.com\"\nblock_hosts:\n"
                             "  - api.example.com\n");
  auto r = run("policy explain " + f + " api.example.com");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("deny api.example.com  (" + f + ":6:5)\n      wins: exact host"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("loses: domain wildcard on 'example.com' is less specific than exact host"), std::string::npos)
      << r.out;
}

TEST(Cli, ExplainJsonIsOneParsableObject) {
  auto r = run("policy explain " + default_policy + " 0x7f.1:5432 --json");
  EXPECT_EQ(r.status, 1);
  const auto v = boost::json::parse(r.out).as_object();
  EXPECT_EQ(v.at("host").as_string(), "127.0.0.1");
  EXPECT_EQ(v.at("verdict").as_string(), "deny");
  EXPECT_EQ(v.at("reason").as_string(), "blocked-by-default");
  EXPECT_EQ(v.at("address_candidates").at("127.0.0.1").as_array().at(0).at("rule").at("text").as_string(),
            "127.0.0.0/8");
}

TEST(Cli, ExplainSandboxAndReportMode) {
  const auto f = policy_file("s.yaml",
                             "version: 1\nmode: deny\nsandboxes:\n  trial:\n    report: true\n");
  auto r = run("policy explain " + f + " x.example --sandbox trial");
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("verdict  report (report mode: would be denied, let through)"), std::string::npos) << r.out;
  auto forbidden = run("policy explain " + f + " x.example --sandbox trial --forbid-report");
  EXPECT_EQ(forbidden.status, 2);
  EXPECT_NE(forbidden.out.find("report mode is forbidden"), std::string::npos);
}

TEST(Cli, HelpTeaches) {
  auto top = run("--help");
  EXPECT_EQ(top.status, 0);
  EXPECT_NE(top.out.find("Examples:"), std::string::npos);
  auto pol = run("policy --help");
  EXPECT_EQ(pol.status, 0);
  EXPECT_NE(pol.out.find("sandgate policy explain policy.yaml api.anthropic.com"), std::string::npos);
  EXPECT_EQ(run("explain --help").status, 2);
  EXPECT_EQ(run("").status, 2);
  EXPECT_EQ(run("policy frobnicate").status, 2);
  EXPECT_EQ(run("policy check --bogus x").status, 2);
}

}  // namespace
