// `sandgate network log [verify|suggest]`: read, check and learn from the
// network log.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <charconv>
#include <chrono>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <thread>

#include "commands.h"
#include "paths.h"
#include "sandbox_state.h"
#include "sandgate/config/policy_edit.h"
#include "sandgate/config/policy_file.h"
#include "sandgate/netlog/reader.h"
#include "sandgate/netlog/writer.h"
#include "targets.h"

namespace sandgate::cli {
namespace {

constexpr std::string_view log_usage = R"(usage: sandgate network log [SANDBOX] [options]
       sandgate network log verify [--log FILE] [--key FILE | --no-key]
       sandgate network log suggest [SANDBOX] [--log FILE] [--policy FILE] [filters]

Reads the network log: every decision the proxy made, with the rule that made
it. The default view lists Blocked requests, then Allowed ones, grouped by
sandbox, host:port, rule and reason, most recent first. Rotated files
(FILE.1, FILE.2.gz, ...) are read too, oldest first.

  verify    checks the hash chain across every file: each record names the
            SHA-256 of the one before it, and checkpoints carry an HMAC under
            a key kept outside the log folder. Prints the first record where an
            edit, deletion, reordering or truncation shows; exits 1 if any does.
  suggest   prints policy YAML that would allow what was blocked, and the
            allow rules nothing in the log used.

Options:
  --log FILE         the log (default: SANDBOX's own log when SANDBOX is given
                     and has one, else $SANDGATE_HOME/log/network.jsonl)
  --since T          only events at or after T: a time (2026-11-27T10:00:00Z)
                     or a duration before now (90s, 15m, 2h, 7d)
  --until T          only events at or before T
  --verdict V        allow, deny, report or error (repeatable); error includes
                     tunnels the proxy closed for a ClientHello or a request
                     naming another host (their decision says allow)
  --host PATTERN     hosts matching a policy pattern (api.example.com,
                     *.example.com, **.example.com:443, re:...)
  --rule TEXT        decided by this rule (as written; "<default policy>")
  --sandbox NAME     one sandbox (the same as the SANDBOX argument)
  --limit N          at most N rows per section; with --raw or --follow,
                     the last N records (then, following, every new one)
  --json             the summary as JSON
  --raw              the matching records themselves (JSON Lines)
  --follow           print the matching records, then stream new ones as they
                     are written (across rotation) until interrupted
  -q, --quiet        rows only: no section titles or column headers
  --key FILE         verify: the HMAC key (default $SANDGATE_HOME/keys/log.key)
  --no-key           verify: check the chain only
  --policy FILE      suggest: the policy whose unused allow rules to list
                     (default: the file the log's last policy record names)
  -h, --help         show this help

Examples:
  sandgate network log
  sandgate network log agent1 --since 1h --verdict deny
  sandgate network log --host '*.github.com' --raw
  sandgate network log verify --log /var/log/sandgate/network.jsonl
  sandgate network log suggest > allow-more.yaml
)";

struct Options {
  std::string mode = "summary";  // summary, verify, suggest
  std::string log = default_log_path();
  bool log_given = false;
  std::string key = default_key_path();
  bool key_given = false, no_key = false;
  std::string policy;
  netlog::Filter filter;
  std::size_t limit = 0;
  bool json = false, raw = false, follow = false, quiet = false;
};

std::string human_bytes(std::uint64_t b) {
  if (b == 0) return "-";
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(b);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

// "2026-11-27T10:13:51.123456Z" -> "2026-11-27 10:13:51Z"
std::string short_time(const std::string& t) {
  if (t.size() < 19) return t;
  return t.substr(0, 10) + " " + t.substr(11, 8) + "Z";
}

void print_table(const std::vector<const netlog::Row*>& rows, const Options& o) {
  const std::vector<std::string> head = {"SANDBOX", "HOST", "RULE", "REASON", "LAST SEEN", "COUNT", "BYTES"};
  std::vector<std::vector<std::string>> cells;
  for (const auto* r : rows)
    cells.push_back({r->sandbox.empty() ? "-" : r->sandbox, r->target, r->rule.empty() ? "-" : r->rule, r->reason,
                     short_time(r->last_seen), std::to_string(r->count), human_bytes(r->bytes)});
  std::vector<std::size_t> width(head.size());
  for (std::size_t c = 0; c < head.size(); ++c) {
    width[c] = o.quiet ? 0 : head[c].size();
    for (const auto& row : cells) width[c] = std::max(width[c], row[c].size());
  }
  auto line = [&](const std::vector<std::string>& v) {
    std::string out;
    for (std::size_t c = 0; c < v.size(); ++c) {
      out += v[c];
      if (c + 1 < v.size()) out += std::string(width[c] - v[c].size() + 2, ' ');
    }
    std::cout << out << "\n";
  };
  if (!o.quiet) line(head);
  for (const auto& row : cells) line(row);
}

boost::json::object row_json(const netlog::Row& r) {
  boost::json::object o;
  o["sandbox"] = r.sandbox;
  o["host"] = r.target;
  o["verdict"] = r.verdict;
  if (r.rule.empty()) o["rule"] = nullptr;
  else o["rule"] = r.rule;
  if (!r.rule_where.empty()) o["rule_source"] = r.rule_where;
  o["reason"] = r.reason;
  o["phase"] = r.phase;
  if (!r.address.empty()) o["address"] = r.address;
  o["last_seen"] = r.last_seen;
  o["count"] = r.count;
  o["bytes"] = r.bytes;
  return o;
}

int show_summary(const netlog::Summary& s, const Options& o) {
  std::vector<const netlog::Row*> blocked, allowed;
  for (const auto& r : s.rows) {
    auto& into = r.blocked ? blocked : allowed;
    if (o.limit == 0 || into.size() < o.limit) into.push_back(&r);
  }
  if (o.json) {
    boost::json::object out;
    boost::json::array b, a;
    for (const auto* r : blocked) b.push_back(row_json(*r));
    for (const auto* r : allowed) a.push_back(row_json(*r));
    out["blocked"] = std::move(b);
    out["allowed"] = std::move(a);
    out["decisions"] = s.decisions;
    out["matched"] = s.matched;
    out["first"] = s.first_time;
    out["last"] = s.last_time;
    std::cout << boost::json::serialize(out) << "\n";
    return 0;
  }
  if (!o.quiet) std::cout << "Blocked requests\n";
  if (!blocked.empty()) print_table(blocked, o);
  else if (!o.quiet) std::cout << "(none)\n";
  if (!o.quiet) std::cout << "\nAllowed requests\n";
  if (!allowed.empty()) print_table(allowed, o);
  else if (!o.quiet) std::cout << "(none)\n";
  if (!o.quiet && s.matched != s.decisions)
    std::cout << "\n" << s.matched << " of " << s.decisions << " decisions match the filters\n";
  return 0;
}

// The records --raw and --follow print: every matching one, or with
// --limit only the last N (as tail -n), held until the reading has caught
// up with what is written.
class RecordTail {
 public:
  explicit RecordTail(std::size_t limit) : limit_(limit) {}
  void add(std::string_view line) {
    if (limit_ == 0 || caught_up_) {
      std::cout << line << "\n";
      return;
    }
    if (held_.size() == limit_) held_.pop_front();
    held_.emplace_back(line);
  }
  // Prints what is held; records added later print at once.
  void caught_up() {
    for (const auto& l : held_) std::cout << l << "\n";
    held_.clear();
    caught_up_ = true;
  }

 private:
  std::size_t limit_;
  bool caught_up_ = false;
  std::deque<std::string> held_;
};

// Prints the matching records already written (rotated files first), then
// streams those appended to the live file, across rotation, until killed.
int follow(const Options& o) {
  netlog::Matcher match(o.filter);
  RecordTail out(o.limit);
  if (auto files = netlog::log_files(o.log)) {
    std::error_code ec;
    std::erase_if(*files, [&](const std::string& f) { return std::filesystem::equivalent(f, o.log, ec); });
    netlog::LineReader older(*files);
    std::string_view line;
    bool terminated = false;
    while (older.next(line, terminated))
      if (terminated && match(line)) out.add(line);
  }
  int fd = -1;
  ino_t inode = 0;
  off_t at = 0;
  std::string partial;
  auto open_live = [&](bool from_end) {
    // Invariant: fd is the only descriptor held; closed before it is replaced.
    if (fd >= 0) ::close(fd);
    fd = ::open(o.log.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    struct stat st {};
    ::fstat(fd, &st);
    inode = st.st_ino;
    at = from_end ? st.st_size : 0;
    partial.clear();
  };
  open_live(false);
  std::vector<char> buf(1 << 16);
  for (;;) {
    bool read_any = false;
    if (fd >= 0) {
      for (;;) {
        const ssize_t n = ::pread(fd, buf.data(), buf.size(), at);
        if (n <= 0) break;
        at += n;
        read_any = true;
        partial.append(buf.data(), static_cast<std::size_t>(n));
        std::size_t start = 0;
        for (std::size_t nl; (nl = partial.find('\n', start)) != std::string::npos; start = nl + 1) {
          const std::string_view line(partial.data() + start, nl - start);
          if (match(line)) out.add(line);
        }
        partial.erase(0, start);
      }
    }
    if (!read_any) {
      out.caught_up();
      std::cout.flush();
      // Rotated (a new file at the path)? The old one is read to its end first.
      struct stat st {};
      if (::stat(o.log.c_str(), &st) == 0 && (fd < 0 || st.st_ino != inode)) {
        open_live(false);
        continue;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }
}

int verify_command(const Options& o, const std::vector<std::string>& files) {
  netlog::VerifyOptions vo;
  // The default key is used when it is there; one named with --key must be.
  if (const auto why = o.no_key ? std::string() : netlog::read_key(o.key, vo.key); !why.empty() && o.key_given) {
    std::cerr << "sandgate network log verify: " << why << "\n";
    return 2;
  }
  const auto r = netlog::verify(files, vo);
  std::cout << "checked " << r.files << " file" << (r.files == 1 ? "" : "s") << ", " << r.records << " records";
  if (r.records) std::cout << " (seq " << r.first_seq << ".." << r.last_seq << ")";
  std::cout << ", " << r.checkpoints << " checkpoints";
  if (vo.key.empty()) std::cout << " (no key: HMACs not checked)";
  else std::cout << ", " << r.hmacs_checked << " HMACs valid";
  std::cout << (r.live ? "; the log is live (a proxy is writing it)" : "") << "\n";
  for (const auto& n : r.notes) std::cout << "note: " << n << "\n";
  for (const auto& p : r.problems)
    std::cout << p.file << (p.line ? ":" + std::to_string(p.line) : "") << ": " << p.kind
              << (p.seq ? " at seq " + std::to_string(p.seq) : "") << ": " << p.message << "\n";
  if (r.problems.empty()) {
    std::cout << "OK: the chain is intact\n";
    return 0;
  }
  std::cout << "FAILED: " << r.problems.size() << " problem" << (r.problems.size() == 1 ? "" : "s") << "\n";
  return 1;
}

int suggest_command(const Options& o, const netlog::Summary& s) {
  std::cout << "# sandgate network log suggest: " << s.matched << " decisions";
  if (!s.first_time.empty()) std::cout << " from " << s.first_time << " to " << s.last_time;
  std::cout << "\n";
  // Blocked by a host rule or the default: allow the host:port. Blocked by
  // an address rule: that needs an allow_cidrs entry, named as such.
  std::map<std::string, const netlog::Row*> hosts, cidrs;
  for (const auto& r : s.rows) {
    if (!r.blocked || r.verdict == "error") continue;
    if (r.phase == "address" && !r.address.empty()) cidrs.emplace(r.address, &r);
    else hosts.emplace(r.target, &r);
  }
  if (hosts.empty() && cidrs.empty()) std::cout << "# nothing was blocked\n";
  if (!hosts.empty()) {
    std::cout << "allow_hosts:\n";
    for (const auto& [target, r] : hosts)
      std::cout << "  - host: \"" << target << "\"\n    comment: \"blocked " << r->count << "x by " << r->rule
                << " (" << r->reason << "), last " << short_time(r->last_seen) << "\"\n";
  }
  if (!cidrs.empty()) {
    std::cout << "allow_cidrs:  # private or reserved addresses: allow only what you mean to expose\n";
    for (const auto& [address, r] : cidrs)
      std::cout << "  - cidr: \"" << address << (address.find(':') == std::string::npos ? "/32" : "/128")
                << "\"\n    comment: \"" << r->target << " resolved here; blocked " << r->count << "x by " << r->rule
                << "\"\n";
  }
  const std::string policy = o.policy.empty() ? s.policy_file : o.policy;
  if (policy.empty()) {
    std::cout << "# unused allow rules: no policy file named (use --policy FILE)\n";
    return 0;
  }
  auto set = config::load_policy_file(policy);
  if (!set) {
    std::cout << "# unused allow rules: cannot load " << policy << "\n";
    for (const auto& d : set.error()) std::cerr << d.to_string() << "\n";
    return 1;
  }
  std::set<std::string> used;
  for (const auto& r : s.rows)
    if (!r.blocked) used.insert(r.rule_where.empty() ? r.rule : r.rule + "@" + r.rule_where);
  std::vector<std::string> unused;
  auto scan = [&](const policy::Policy& p) {
    for (const auto& rule : p.rules()) {
      if (rule.action != policy::Action::allow || rule.source.file.empty()) continue;
      const auto key = rule.text + "@" + rule.source.file + ":" + std::to_string(rule.source.line);
      if (!used.contains(key) && !used.contains(rule.text))
        unused.push_back("#   " + rule.text + "    (" + rule.source.to_string() + ")");
    }
  };
  scan(*set->default_policy);
  for (const auto& [name, p] : set->named) scan(*p);
  std::sort(unused.begin(), unused.end());
  unused.erase(std::unique(unused.begin(), unused.end()), unused.end());
  if (unused.empty()) {
    std::cout << "# every allow rule in " << policy << " was used\n";
  } else {
    std::cout << "# allow rules in " << policy << " that nothing in this log used (consider removing):\n";
    for (const auto& u : unused) std::cout << u << "\n";
  }
  return 0;
}

constexpr std::string_view proxy_usage = R"(usage: sandgate network proxy NAME|--default [options]

Changes a sandbox's policy: at once for a running sandbox (its proxy reloads;
this waits until it has), and for good (the sandbox's own policy file). With
--default it changes $SANDGATE_HOME/policy.yaml, which new sandboxes start from.
Each flag may be repeated. Rules already present are not added twice; the
file keeps its rules but not its YAML comments.

Options:
  --policy allow|deny    what happens when no rule matches
  --allow-host H[:P]     allow a host pattern (api.example.com, *.example.com,
                         **.example.com:443, localhost:5432, re:...), or
                         a URL's host and port (https://api.github.com/x)
  --block-host H[:P]     block a host pattern
  --allow-cidr C         allow an address range (10.1.2.0/24)
  --block-cidr C         block an address range
  -h, --help             show this help

Examples:
  sandgate network proxy agent1 --allow-host api.github.com:443
  sandgate network proxy agent1 --allow-host localhost:5432   # a host service
  sandgate network proxy --default --block-host '*.pastebin.com'
)";

// Waits (bounded) until the sandbox's log shows its proxy running the policy with `sha256`.
bool wait_for_reload(const std::string& log, const std::string& sha256) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (std::chrono::steady_clock::now() < end) {
    std::ifstream in(log);
    for (std::string line; std::getline(in, line);)
      if (line.find("\"type\":\"policy\"") != std::string::npos && line.find(sha256) != std::string::npos)
        return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

int proxy_subcommand(std::span<const std::string_view> args) {
  config::PolicyEdit edit;
  std::string name;
  bool to_default = false;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const auto a = args[i];
    if (a == "-h" || a == "--help") {
      std::fputs(proxy_usage.data(), stdout);
      return 0;
    }
    if (a == "--default") {
      to_default = true;
      continue;
    }
    if (!a.starts_with("-")) {
      name = a;
      continue;
    }
    if (i + 1 >= args.size()) {
      std::cerr << "sandgate network proxy: unknown option or missing value: '" << a << "' (see --help)\n";
      return 2;
    }
    const std::string v(args[++i]);
    if (a == "--policy") {
      if (v != "allow" && v != "deny") {
        std::cerr << "sandgate network proxy: --policy takes allow or deny, not '" << v << "'\n";
        return 2;
      }
      edit.mode = v == "allow" ? policy::Mode::allow : policy::Mode::deny;
    } else if (a == "--allow-host" || a == "--block-host") {
      std::string host = v;  // a regex stays as written; a URL becomes its host:port
      if (!v.starts_with("re:")) {
        const auto h = authority_of(v);
        if (!h) {
          std::cerr << "sandgate network proxy: " << a << " '" << v << "': " << h.error() << "\n";
          return 2;
        }
        host = *h;
      }
      (a == "--allow-host" ? edit.allow_hosts : edit.block_hosts).push_back(host);
    } else if (a == "--allow-cidr") edit.allow_cidrs.push_back(v);
    else if (a == "--block-cidr") edit.block_cidrs.push_back(v);
    else {
      std::cerr << "sandgate network proxy: unknown option '" << a << "' (see --help)\n";
      return 2;
    }
  }
  if (name.empty() == !to_default) {
    std::cerr << "sandgate network proxy: give a sandbox NAME or --default (see --help)\n";
    return 2;
  }
  namespace fs = std::filesystem;
  std::string path;
  std::error_code ec;
  if (to_default) {
    path = default_policy_path();
    if (!fs::exists(path)) {
      // Start from the bundled default policy.
      fs::create_directories(fs::path(path).parent_path(), ec);
      fs::copy_file(shipped_policy_path(), path, ec);
    }
  } else {
    const auto dir = fs::path(sandgate_home()) / "sandboxes" / name;
    path = fs::exists(dir / "policy.json") ? (dir / "policy.json").string() : (dir / "policy.yaml").string();
    if (!fs::exists(path)) {
      std::cerr << "sandgate network proxy: no sandbox '" << name << "' (see sandgate ls)\n";
      return 1;
    }
  }
  edit.comment = "added by sandgate network proxy";
  auto r = config::edit_policy_file(path, edit);
  if (!r) {
    for (const auto& d : r.error()) std::cerr << d.to_string() << "\n";
    std::cerr << "sandgate network proxy: nothing changed\n";
    return 1;
  }
  std::cout << "updated " << path << " (sha256 " << r->substr(0, 12) << ")\n";
  if (!to_default) {
    const auto dir = fs::path(sandgate_home()) / "sandboxes" / name;
    if (lock_held(dir)) {
      if (!wait_for_reload((dir / "log" / "network.jsonl").string(), *r)) {
        std::cerr << "sandgate network proxy: the running sandbox did not reload within 5 s\n";
        return 1;
      }
      std::cout << "sandbox " << name << " now decides by it\n";
    }
  }
  return 0;
}

}  // namespace

int network_command(std::span<const std::string_view> args) {
  if (args.empty() || args[0] == "-h" || args[0] == "--help") {
    std::fputs(log_usage.data(), args.empty() ? stderr : stdout);
    std::fputs("\n", args.empty() ? stderr : stdout);
    std::fputs(proxy_usage.data(), args.empty() ? stderr : stdout);
    return args.empty() ? 2 : 0;
  }
  if (args[0] == "proxy") return proxy_subcommand(args.subspan(1));
  if (args[0] != "log") {
    std::cerr << "sandgate network: unknown subcommand '" << args[0] << "' (see sandgate network --help)\n";
    return 2;
  }
  Options o;
  const auto now = std::chrono::system_clock::now();
  for (std::size_t i = 1; i < args.size(); ++i) {
    const auto a = args[i];
    if (a == "-h" || a == "--help") {
      std::fputs(log_usage.data(), stdout);
      return 0;
    }
    if (i == 1 && (a == "verify" || a == "suggest")) {
      o.mode = a;
      continue;
    }
    if (a == "--json") o.json = true;
    else if (a == "--raw") o.raw = true;
    else if (a == "--follow" || a == "-f") o.follow = true;
    else if (a == "--quiet" || a == "-q") o.quiet = true;
    else if (a == "--no-key") o.no_key = true;
    else if (!a.starts_with("-")) {
      if (o.filter.has_sandbox) {
        std::cerr << "sandgate network log: one SANDBOX at most ('" << a << "')\n";
        return 2;
      }
      o.filter.sandbox = a;
      o.filter.has_sandbox = true;
    } else {
      if (i + 1 >= args.size()) {
        std::cerr << "sandgate network log: unknown option or missing value: '" << a << "' (see --help)\n";
        return 2;
      }
      const std::string v(args[++i]);
      if (a == "--log") {
        o.log = v;
        o.log_given = true;
      }
      else if (a == "--key") {
        o.key = v;
        o.key_given = true;
      } else if (a == "--policy") o.policy = v;
      else if (a == "--sandbox") {
        o.filter.sandbox = v;
        o.filter.has_sandbox = true;
      } else if (a == "--rule") o.filter.rule = v;
      else if (a == "--verdict") {
        if (v != "allow" && v != "deny" && v != "report" && v != "error") {
          std::cerr << "sandgate network log: --verdict takes allow, deny, report or error, not '" << v << "'\n";
          return 2;
        }
        o.filter.verdicts.push_back(v);
      } else if (a == "--since" || a == "--until") {
        auto t = netlog::parse_time(v, now);
        if (!t) {
          std::cerr << "sandgate network log: " << a << ": " << t.error() << "\n";
          return 2;
        }
        (a == "--since" ? o.filter.since : o.filter.until) = *t;
      } else if (a == "--host") {
        auto h = netlog::host_filter(v);
        if (!h) {
          std::cerr << "sandgate network log: " << h.error() << "\n";
          return 2;
        }
        o.filter.host = *h;
      } else if (a == "--limit") {
        std::size_t n = 0;
        auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
        if (ec != std::errc{} || p != v.data() + v.size() || n == 0) {
          std::cerr << "sandgate network log: --limit needs a positive number, not '" << v << "'\n";
          return 2;
        }
        o.limit = n;
      } else {
        std::cerr << "sandgate network log: unknown option '" << a << "' (see --help)\n";
        return 2;
      }
    }
  }
  if (o.filter.since && o.filter.until && *o.filter.until < *o.filter.since) {
    // "--since 1h --until 2h" reads as a window, but 2h ago is before 1h ago.
    std::cerr << "sandgate network log: --until is before --since: no event can match (a duration counts back "
                 "from now: --since 2h --until 1h is the hour before the last)\n";
    return 2;
  }
  // A sandbox's own log, unless --log named one.
  if (!o.log_given && o.filter.has_sandbox) {
    const auto own = sandgate_home() + "/sandboxes/" + o.filter.sandbox + "/log/network.jsonl";
    if (std::filesystem::exists(own)) o.log = own;
  }
  if (o.follow) return follow(o);
  auto files = netlog::log_files(o.log);
  if (!files) {
    std::cerr << "sandgate network log: " << files.error() << " (give the log with --log FILE)\n";
    return 2;
  }
  if (o.mode == "verify") return verify_command(o, *files);
  netlog::LineReader reader(*files);
  RecordTail records(o.limit);
  std::function<void(std::string_view)> raw;
  if (o.raw) raw = [&](std::string_view line) { records.add(line); };
  const auto summary = netlog::summarize(reader, o.filter, raw);
  records.caught_up();
  if (!reader.error().empty()) std::cerr << "sandgate network log: warning: " << reader.error() << "\n";
  if (o.mode == "suggest") return suggest_command(o, summary);
  if (o.raw) return 0;
  return show_summary(summary, o);
}

}  // namespace sandgate::cli
