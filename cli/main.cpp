// sandgate: egress-filtering proxy and microVM sandboxes for AI coding agents.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <iostream>
#include <streambuf>
#include <string>
#include <string_view>
#include <vector>

#include "commands.h"

namespace {

constexpr std::string_view usage = R"(usage: sandgate COMMAND [ARGS]

sandgate decides, for every connection an AI agent's sandbox makes, whether
it may go out, and says which rule decided.

Commands:
  run WORKSPACE [-- CMD...]     boot a sandbox (a microVM whose only way out is the
                                proxy) on WORKSPACE and run CMD in it; -d keeps it up
  exec NAME CMD...              run CMD in a running sandbox
  ls                            list sandboxes: state, uptime, policy mode, accelerator
  stop NAME / rm [-f] NAME      power a sandbox off / remove what it left
  env set NAME KEY=VALUE        environment for later execs, no restart needed
  image build|ls|rm|prune       the guest images sandboxes boot (built from Debian packages)
  network proxy NAME --allow-host H[:P]
                                change a sandbox's policy, at once and for good
  proxy --config POLICY --listen ADDR
                                run the egress proxy (CONNECT and absolute-form HTTP)
  network log [SANDBOX]         what was blocked and allowed, by host and rule
  network log verify            check the log's hash chain: edits, deletions, truncation
  network log suggest           policy YAML that would allow what was blocked
  policy check FILE...          validate policy files; print every error and warning
  policy explain FILE TARGET    show how a policy decides a host[:port] and why

Run 'sandgate COMMAND --help' for a command's options and examples.

Examples:
  sandgate run ~/src/app -- uname -a
  sandgate proxy --config /etc/sandgate/policy.yaml --listen 127.0.0.1:3128
  sandgate network log --since 1h --verdict deny
  sandgate policy check /etc/sandgate/policy.yaml
  sandgate policy explain policy.yaml api.anthropic.com:443
  sandgate policy explain policy.yaml db.internal:5432 --addr 10.0.0.7

Options:
  -h, --help      show this help
  --version       print the version
)";

// std::cerr for processes that run for months (the proxy, a sandbox's
// supervisor). The standard stream stays failed after one failed write (a
// full disk, a non-blocking pipe that was full) and drops every later
// message without a trace; here a failed write loses its own line only.
// Each thread gathers its line and writes it whole in one write(2), so
// threads' lines do not interleave.
class StderrLines : public std::streambuf {
 protected:
  int_type overflow(int_type c) override {
    if (traits_type::eq_int_type(c, traits_type::eof())) return traits_type::not_eof(c);
    const char ch = traits_type::to_char_type(c);
    xsputn(&ch, 1);
    return c;
  }
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    line().append(s, static_cast<std::size_t>(n));
    if (const auto end = line().rfind('\n'); end != std::string::npos) {
      write_out(line().data(), end + 1);
      line().erase(0, end + 1);
    }
    return n;
  }

 private:
  // A line not yet ended, per thread; what is left at the thread's end is written then.
  struct Pending {
    std::string text;
    ~Pending() { write_out(text.data(), text.size()); }
  };
  static std::string& line() {
    thread_local Pending pending;
    return pending.text;
  }
  static void write_out(const char* p, std::size_t n) {
    while (n > 0) {
      const ssize_t w = ::write(STDERR_FILENO, p, n);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return;  // this line is lost, not the ones after it
      p += w;
      n -= static_cast<std::size_t>(w);
    }
  }
};

}  // namespace

int main(int argc, char** argv) {
  // Never destroyed: std::cerr is flushed after static objects are gone.
  std::cerr.rdbuf(new StderrLines);
  std::vector<std::string_view> args(argv + 1, argv + argc);
  if (args.empty()) {
    std::fputs(usage.data(), stderr);
    return 2;
  }
  const auto cmd = args.front();
  const std::span<const std::string_view> rest(args.data() + 1, args.size() - 1);
  if (cmd == "-h" || cmd == "--help" || cmd == "help") {
    std::fputs(usage.data(), stdout);
    return 0;
  }
  if (cmd == "--version") {
    std::puts("sandgate " SANDGATE_VERSION);
    return 0;
  }
  if (cmd == "policy") return sandgate::cli::policy_command(rest);
  if (cmd == "proxy") return sandgate::cli::proxy_command(rest);
  if (cmd == "network") return sandgate::cli::network_command(rest);
  if (cmd == "run") return sandgate::cli::run_command(rest);
  if (cmd == "ls") return sandgate::cli::ls_command(rest);
  if (cmd == "exec") return sandgate::cli::exec_command(rest);
  if (cmd == "stop") return sandgate::cli::stop_command(rest);
  if (cmd == "rm") return sandgate::cli::rm_command(rest);
  if (cmd == "env") return sandgate::cli::env_command(rest);
  if (cmd == "image") return sandgate::cli::image_command(rest);
  std::fprintf(stderr, "sandgate: unknown command '%.*s'\n\n%s", static_cast<int>(cmd.size()), cmd.data(),
               usage.data());
  return 2;
}
