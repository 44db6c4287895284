// `sandgate ls | exec | stop | rm`: the sandboxes under $SANDGATE_HOME.
#include <signal.h>
#include <unistd.h>

#include <boost/json/serialize.hpp>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <thread>

#include "commands.h"
#include "sandbox_state.h"
#include "sandgate/vmm/agent_client.h"

namespace sandgate::cli {
namespace {

namespace fs = std::filesystem;

std::string str(const boost::json::object& o, std::string_view k) {
  const auto* v = o.if_contains(k);
  return v && v->is_string() ? std::string(v->as_string()) : std::string();
}
long num(const boost::json::object& o, std::string_view k) {
  const auto* v = o.if_contains(k);
  return v && v->is_int64() ? static_cast<long>(v->as_int64()) : 0;
}

// running: the supervisor holds its lock and QEMU runs; crashed: one of them
// died without cleaning up; stopped: neither runs. A running sandbox whose
// virtiofsd has exited has lost its workspace (QEMU cannot reattach one).
std::string sandbox_status(const fs::path& dir, const boost::json::object& st) {
  const bool supervisor = lock_held(dir);
  const bool qemu = process_runs(num(st, "qemu_pid"), "qemu-system");
  if (supervisor && qemu && num(st, "virtiofsd_pid") > 0 && !process_runs(num(st, "virtiofsd_pid"), "virtiofsd"))
    return "running (workspace share down: virtiofsd exited; see virtiofsd.log)";
  if (supervisor && qemu) return "running";
  if (!supervisor && !qemu) return "stopped";
  return supervisor ? "crashed (QEMU died)" : "crashed (supervisor died)";
}

std::string uptime(long started) {
  if (started <= 0) return "-";
  const long s = static_cast<long>(std::time(nullptr)) - started;
  char buf[32];
  if (s < 60) std::snprintf(buf, sizeof buf, "%lds", s);
  else if (s < 3600) std::snprintf(buf, sizeof buf, "%ldm%02lds", s / 60, s % 60);
  else std::snprintf(buf, sizeof buf, "%ldh%02ldm", s / 3600, (s % 3600) / 60);
  return buf;
}

constexpr std::string_view ls_usage = R"(usage: sandgate ls [--json]

Lists the sandboxes: name, workspace, state (running, stopped, or crashed
when QEMU or its supervisor died), uptime, policy mode and accelerator.
)";

constexpr std::string_view exec_usage = R"(usage: sandgate exec [-it] [-e KEY=VALUE]... [-w DIR] NAME CMD...

Runs CMD in the running sandbox NAME (started with 'sandgate run -d') and
exits with its status; stdout and stderr stay apart, piped stdin is passed
on, and Ctrl-C goes to the command. CMD starts in the workspace unless -w
says otherwise, with the proxy settings every sandbox command gets.

  -i    pass stdin on even from a terminal
  -t    run CMD on a pseudo-terminal that follows this terminal's size
        (stderr joins stdout); -it for an interactive shell
  -e KEY=VALUE, -w DIR   environment and working directory

Example:
  sandgate exec -it app bash
)";

constexpr std::string_view stop_usage = R"(usage: sandgate stop [--timeout SECONDS] NAME

Powers the sandbox off (the guest syncs its disks and exits), then stops its
proxy and workspace share. After --timeout (default 10) it is killed.
)";

constexpr std::string_view rm_usage = R"(usage: sandgate rm [-f] NAME

Removes a stopped sandbox's folder (state, sockets, console and network
logs). -f stops it first if it runs.
)";

bool wants_help(std::span<const std::string_view> args) {
  for (auto a : args)
    if (a == "-h" || a == "--help") return true;
  return false;
}

// Stops NAME: asks its supervisor, then kills what is left after `timeout`.
bool stop_sandbox(const fs::path& dir, std::chrono::seconds timeout) {
  const auto st = read_state(dir);
  if (auto c = vmm::AgentClient::connect((dir / "control.sock").string(), std::chrono::seconds(2)))
    (*c)->stop_sandbox();
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (lock_held(dir) && std::chrono::steady_clock::now() < end)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  if (!st) return !lock_held(dir);
  // Whatever is still there is killed: the supervisor, QEMU, virtiofsd and the proxy.
  bool forced = false;
  for (const std::string key : {"pid", "qemu_pid", "virtiofsd_pid", "proxy_pid"}) {
    const long pid = num(*st, key);
    const bool ours = key == "pid"             ? lock_held(dir)
                      : key == "qemu_pid"      ? process_runs(pid, "qemu-system")
                      : key == "virtiofsd_pid" ? process_runs(pid, "virtiofsd")
                                               : process_runs(pid, "sandgate");
    if (ours && pid > 0) {
      ::kill(static_cast<pid_t>(pid), SIGKILL);
      forced = true;
    }
  }
  if (forced) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  return !lock_held(dir);
}

}  // namespace

int ls_command(std::span<const std::string_view> args) {
  if (wants_help(args)) {
    std::fputs(ls_usage.data(), stdout);
    return 0;
  }
  const bool json = !args.empty() && args[0] == "--json";
  if (!args.empty() && !json) {
    std::cerr << "sandgate ls: unknown option '" << args[0] << "' (see --help)\n";
    return 2;
  }
  std::vector<std::vector<std::string>> rows;
  boost::json::array out;
  std::error_code ec;
  std::vector<fs::path> dirs;
  for (const auto& e : fs::directory_iterator(sandboxes_dir(), ec))
    if (e.is_directory()) dirs.push_back(e.path());
  std::sort(dirs.begin(), dirs.end());
  for (const auto& dir : dirs) {
    const auto st = read_state(dir);
    if (!st) continue;
    const auto status = sandbox_status(dir, *st);
    const auto up = status.starts_with("running") ? uptime(num(*st, "started")) : "-";
    const auto* ro = st->if_contains("workspace_readonly");
    const auto workspace = str(*st, "workspace") + (ro && ro->is_bool() && ro->get_bool() ? " (read-only)" : "");
    rows.push_back({dir.filename().string(), workspace, status, up, str(*st, "mode"), str(*st, "accel")});
    boost::json::object o = *st;
    o["state"] = status;
    out.push_back(std::move(o));
  }
  if (json) {
    std::cout << boost::json::serialize(out) << "\n";
    return 0;
  }
  const std::vector<std::string> head = {"NAME", "WORKSPACE", "STATE", "UPTIME", "POLICY", "ACCEL"};
  std::vector<std::size_t> width(head.size());
  for (std::size_t c = 0; c < head.size(); ++c) {
    width[c] = head[c].size();
    for (const auto& r : rows) width[c] = std::max(width[c], r[c].size());
  }
  auto line = [&](const std::vector<std::string>& v) {
    for (std::size_t c = 0; c < v.size(); ++c)
      std::cout << v[c] << (c + 1 < v.size() ? std::string(width[c] - v[c].size() + 2, ' ') : "\n");
  };
  line(head);
  for (const auto& r : rows) line(r);
  return 0;
}

int exec_command(std::span<const std::string_view> args) {
  if (args.empty() || args[0] == "-h" || args[0] == "--help") {
    std::fputs(exec_usage.data(), args.empty() ? stderr : stdout);
    return args.empty() ? 2 : 0;
  }
  std::vector<std::string> env;
  std::string cwd, name;
  std::size_t i = 0;
  bool interactive = !::isatty(0), tty = false;
  for (; i < args.size() && args[i].starts_with("-"); ++i) {
    if (args[i] == "-i" || args[i] == "-t" || args[i] == "-it" || args[i] == "-ti") {
      interactive |= args[i].find('i') != std::string_view::npos;
      tty |= args[i].find('t') != std::string_view::npos;
      continue;
    }
    if (i + 1 >= args.size() || (args[i] != "-e" && args[i] != "-w")) {
      std::cerr << "sandgate exec: unknown option or missing value: '" << args[i] << "' (see --help)\n";
      return 2;
    }
    if (args[i] == "-e") env.emplace_back(args[++i]);
    else cwd = args[++i];
  }
  if (i + 1 >= args.size()) {
    std::cerr << "sandgate exec: NAME and CMD are needed (see --help)\n";
    return 2;
  }
  name = args[i++];
  const auto dir = sandboxes_dir() / name;
  const auto st = read_state(dir);
  if (!st || !lock_held(dir)) {
    std::cerr << "sandgate exec: no running sandbox '" << name << "' (see sandgate ls)\n";
    return 125;
  }
  auto client = vmm::AgentClient::connect((dir / "control.sock").string(), std::chrono::seconds(10));
  if (!client) {
    const auto* detached = st->if_contains("detached");
    std::cerr << "sandgate exec: " << name << ": " << client.error()
              << (detached && detached->is_bool() && !detached->as_bool() ? " (it runs in the foreground; exec needs run -d)"
                                                                          : "")
              << "\n";
    return 125;
  }
  vmm::ExecRequest req;
  for (; i < args.size(); ++i) req.argv.emplace_back(args[i]);
  req.cwd = cwd.empty() ? str(*st, "workspace") : cwd;
  req.env = sandbox_env(name);  // with `sandgate env set` values; -e after them wins
  req.env.insert(req.env.end(), env.begin(), env.end());
  req.tty = tty;
  auto status = (*client)->exec(req, interactive ? 0 : -1, 1, 2);
  if (!status) {
    std::cerr << "sandgate exec: " << status.error() << "\n";
    return 125;
  }
  return *status;
}

int stop_command(std::span<const std::string_view> args) {
  if (wants_help(args) || args.empty()) {
    std::fputs(stop_usage.data(), args.empty() ? stderr : stdout);
    return args.empty() ? 2 : 0;
  }
  long timeout = 10;
  std::string name;
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--timeout" && i + 1 < args.size()) timeout = std::atol(std::string(args[++i]).c_str());
    else name = args[i];
  }
  const auto dir = sandboxes_dir() / name;
  if (!fs::exists(dir / "state.json")) {
    std::cerr << "sandgate stop: no sandbox '" << name << "' (see sandgate ls)\n";
    return 1;
  }
  if (!lock_held(dir)) return 0;  // already stopped
  return stop_sandbox(dir, std::chrono::seconds(std::max(1L, timeout))) ? 0 : 1;
}

int rm_command(std::span<const std::string_view> args) {
  if (wants_help(args) || args.empty()) {
    std::fputs(rm_usage.data(), args.empty() ? stderr : stdout);
    return args.empty() ? 2 : 0;
  }
  bool force = false;
  std::string name;
  for (auto a : args) {
    if (a == "-f") force = true;
    else name = a;
  }
  const auto dir = sandboxes_dir() / name;
  if (name.empty() || !fs::exists(dir)) {
    std::cerr << "sandgate rm: no sandbox '" << name << "' (see sandgate ls)\n";
    return 1;
  }
  if (lock_held(dir)) {
    if (!force) {
      std::cerr << "sandgate rm: '" << name << "' is running; stop it first or use rm -f\n";
      return 1;
    }
    if (!stop_sandbox(dir, std::chrono::seconds(10))) {
      std::cerr << "sandgate rm: cannot stop '" << name << "'\n";
      return 1;
    }
  } else if (const auto st = read_state(dir)) {
    // A crashed sandbox may have left QEMU or virtiofsd behind.
    stop_sandbox(dir, std::chrono::seconds(1));
  }
  std::error_code ec;
  fs::remove_all(dir, ec);
  if (ec) {
    std::cerr << "sandgate rm: " << dir.string() << ": " << ec.message() << "\n";
    return 1;
  }
  return 0;
}

constexpr std::string_view env_usage = R"(usage: sandgate env set NAME KEY=VALUE...
       sandgate env unset NAME KEY...
       sandgate env ls NAME

Changes the environment of later 'sandgate exec' commands in sandbox NAME,
without recreating it (commands already running keep theirs).
)";

int env_command(std::span<const std::string_view> args) {
  if (wants_help(args) || args.size() < 2) {
    std::fputs(env_usage.data(), args.size() < 2 ? stderr : stdout);
    return args.size() < 2 ? 2 : 0;
  }
  const auto verb = args[0];
  const auto dir = sandboxes_dir() / std::string(args[1]);
  if (!fs::exists(dir / "state.json")) {
    std::cerr << "sandgate env: no sandbox '" << args[1] << "' (see sandgate ls)\n";
    return 1;
  }
  std::vector<std::string> lines;
  std::ifstream in(dir / "env");
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) lines.push_back(line);
  auto key_of = [](std::string_view kv) { return std::string(kv.substr(0, kv.find('='))); };
  if (verb == "ls") {
    for (const auto& l : lines) std::cout << l << "\n";
    return 0;
  }
  if (verb != "set" && verb != "unset") {
    std::cerr << "sandgate env: set, unset or ls, not '" << verb << "'\n";
    return 2;
  }
  for (std::size_t i = 2; i < args.size(); ++i) {
    const auto a = args[i];
    if (verb == "set" && (a.find('=') == std::string_view::npos || a.front() == '=')) {
      std::cerr << "sandgate env set: write KEY=VALUE, not '" << a << "'\n";
      return 2;
    }
    const auto key = key_of(a);
    std::erase_if(lines, [&](const std::string& l) { return key_of(l) == key; });
    if (verb == "set") lines.emplace_back(a);
  }
  std::ofstream out(dir / "env.tmp", std::ios::trunc);
  for (const auto& l : lines) out << l << "\n";
  out.close();
  // Values may be secrets (API keys): the sandbox's proxy, a user of its own, may not read them.
  fs::permissions(dir / "env.tmp", fs::perms::owner_read | fs::perms::owner_write);
  fs::rename(dir / "env.tmp", dir / "env");
  return 0;
}

}  // namespace sandgate::cli
