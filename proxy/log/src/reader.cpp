// Streaming the log's files, and the summary and filters built on them.
#include "sandgate/netlog/reader.h"

#include <sys/stat.h>
#include <zlib.h>

#include <algorithm>
#include <charconv>
#include <ctime>
#include <filesystem>
#include <unordered_map>

#include "record.h"

namespace sandgate::netlog {

// --- LineReader ---

struct LineReader::Impl {
  std::vector<std::string> files;
  std::size_t next_file = 0;
  gzFile gz = nullptr;
  std::string current;
  std::uint64_t line_no = 0;
  bool changed = false;
  std::string error;
  std::vector<char> buf = std::vector<char>(1 << 18);
  std::size_t begin = 0, end = 0;  // unread bytes in buf
  std::string carry;               // a line longer than the buffer, in pieces
  bool clear_carry = false;        // carry was handed out; clear it on the next call
  std::string torn_line;
  bool eof = true;

  bool open_next() {
    while (next_file < files.size()) {
      current = files[next_file++];
      // Invariant: gz is closed before the next file is opened and in ~Impl.
      gz = gzopen(current.c_str(), "rb");
      if (!gz) {
        error = "cannot open " + current;
        continue;
      }
      gzbuffer(gz, 1 << 18);
      line_no = 0;
      changed = true;
      eof = false;
      begin = end = 0;
      return true;
    }
    return false;
  }

  void close() {
    if (gz) gzclose(gz);
    gz = nullptr;
  }
};

LineReader::LineReader(std::vector<std::string> files) : impl_(std::make_unique<Impl>()) {
  impl_->files = std::move(files);
}

LineReader::~LineReader() { impl_->close(); }

bool LineReader::next(std::string_view& line, bool& terminated) {
  auto& im = *impl_;
  im.changed = false;
  if (im.clear_carry) {
    im.carry.clear();
    im.clear_carry = false;
  }
  for (;;) {
    if (im.eof) {
      im.close();
      if (!im.open_next()) return false;
    }
    // A complete line in the buffer?
    const char* b = im.buf.data() + im.begin;
    if (const void* nl = std::memchr(b, '\n', im.end - im.begin)) {
      const auto len = static_cast<std::size_t>(static_cast<const char*>(nl) - b);
      ++im.line_no;
      terminated = true;
      if (im.carry.empty()) {
        line = std::string_view(b, len);
      } else {
        im.carry.append(b, len);
        line = im.carry;
        im.clear_carry = true;
      }
      im.begin += len + 1;
      return true;
    }
    // Move the partial line to the front (or into carry), then read more.
    if (im.begin > 0) {
      std::memmove(im.buf.data(), im.buf.data() + im.begin, im.end - im.begin);
      im.end -= im.begin;
      im.begin = 0;
    }
    if (im.end == im.buf.size()) {
      im.carry.append(im.buf.data(), im.end);
      im.end = 0;
    }
    const int n = gzread(im.gz, im.buf.data() + im.end, static_cast<unsigned>(im.buf.size() - im.end));
    if (n < 0) {
      int code = 0;
      im.error = std::string("cannot read ") + im.current + ": " + gzerror(im.gz, &code);
    }
    if (n <= 0) {
      im.eof = true;
      // The file ends without a newline: hand out the torn piece, marked.
      if (im.end > 0 || !im.carry.empty()) {
        im.carry.append(im.buf.data(), im.end);
        im.begin = im.end = 0;
        ++im.line_no;
        im.torn_line.swap(im.carry);
        im.carry.clear();
        line = im.torn_line;
        terminated = false;
        return true;
      }
      continue;
    }
    im.end += static_cast<std::size_t>(n);
  }
}

const std::string& LineReader::file() const noexcept { return impl_->current; }
std::uint64_t LineReader::line_number() const noexcept { return impl_->line_no; }
bool LineReader::file_changed() const noexcept { return impl_->changed; }
const std::string& LineReader::error() const noexcept { return impl_->error; }

// --- log_files ---

boost::system::result<std::vector<std::string>, std::string> log_files(const std::string& path) {
  namespace fs = std::filesystem;
  const fs::path p(path);
  const auto dir = p.has_parent_path() ? p.parent_path() : fs::path(".");
  const auto base = p.filename().string();
  std::error_code ec;
  struct Found {
    std::string path;
    std::uint64_t first_seq;
    bool has_seq;
    fs::file_time_type mtime;
  };
  std::vector<Found> found;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const auto name = entry.path().filename().string();
    const bool sibling = name == base || ((name.starts_with(base + ".") || name.starts_with(base + "-")) &&
                                          !name.ends_with(".tmp") && !name.ends_with(".lock"));
    if (!sibling || !entry.is_regular_file(ec)) continue;
    Found f{entry.path().string(), 0, false, entry.last_write_time(ec)};
    LineReader r({f.path});
    std::string_view line;
    bool terminated = false;
    detail::RecordParser parser;
    if (r.next(line, terminated))
      if (const auto* rec = parser.parse(line)) f.has_seq = (f.first_seq = rec->seq) > 0;
    found.push_back(std::move(f));
  }
  if (ec && found.empty()) return "cannot list " + dir.string() + ": " + ec.message();
  if (found.empty()) return "no log at " + path;
  std::sort(found.begin(), found.end(), [](const Found& a, const Found& b) {
    if (a.has_seq != b.has_seq) return !a.has_seq;  // unreadable first lines first, by age
    if (a.has_seq) return a.first_seq < b.first_seq;
    return a.mtime < b.mtime;
  });
  std::vector<std::string> out;
  for (auto& f : found) out.push_back(std::move(f.path));
  return out;
}

// --- times ---

namespace {

std::string format_time(Time t) {
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
  const time_t s = us / 1'000'000;
  tm parts{};
  gmtime_r(&s, &parts);
  char buf[40];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &parts);
  char out[64];
  std::snprintf(out, sizeof out, "%s.%06lldZ", buf, static_cast<long long>(us % 1'000'000));
  return out;
}

}  // namespace

boost::system::result<Time, std::string> parse_time(std::string_view text, Time now) {
  // A duration before now: 90s, 15m, 2h, 7d.
  if (!text.empty() && std::isdigit(static_cast<unsigned char>(text.front())) && text.size() <= 12 &&
      std::string_view("smhd").find(text.back()) != std::string_view::npos) {
    std::uint64_t n = 0;
    auto [p, ec] = std::from_chars(text.data(), text.data() + text.size() - 1, n);
    if (ec == std::errc{} && p == text.data() + text.size() - 1) {
      const std::uint64_t unit = text.back() == 's' ? 1 : text.back() == 'm' ? 60 : text.back() == 'h' ? 3600 : 86400;
      return now - std::chrono::seconds(n * unit);
    }
  }
  // RFC 3339: 2026-11-27T10:00:00[.ffffff](Z|+hh:mm)
  tm parts{};
  const std::string s(text);
  const char* rest = strptime(s.c_str(), "%Y-%m-%dT%H:%M:%S", &parts);
  if (!rest) rest = strptime(s.c_str(), "%Y-%m-%d %H:%M:%S", &parts);
  if (!rest) {
    rest = strptime(s.c_str(), "%Y-%m-%d", &parts);
    if (rest && *rest) rest = nullptr;
  }
  if (!rest) return "'" + s + "' is neither a time (2026-11-27T10:00:00Z) nor a duration (90s, 15m, 2h, 7d)";
  long long frac_us = 0;
  if (*rest == '.') {
    ++rest;
    long long scale = 100000;
    while (std::isdigit(static_cast<unsigned char>(*rest))) {
      frac_us += (*rest++ - '0') * scale;
      scale /= 10;
    }
  }
  long offset = 0;
  if (*rest == '+' || *rest == '-') {
    int h = 0, m = 0;
    if (std::sscanf(rest + 1, "%2d:%2d", &h, &m) != 2) return "'" + s + "': write the offset as +hh:mm";
    offset = (*rest == '-' ? -1 : 1) * (h * 3600 + m * 60);
    rest += 6;
  } else if (*rest == 'Z' || *rest == 'z') {
    ++rest;
  }
  if (*rest) return "'" + s + "': unexpected '" + std::string(rest) + "'";
  const time_t t = timegm(&parts) - offset;
  return Time(std::chrono::seconds(t)) + std::chrono::microseconds(frac_us);
}

boost::system::result<std::shared_ptr<const policy::Policy>, std::string> host_filter(std::string_view pattern) {
  auto parsed = policy::parse_host_pattern(pattern);
  if (!parsed) return "--host " + std::string(pattern) + ": " + parsed.error().message;
  policy::PolicyBuilder b(policy::Mode::deny, false);
  b.add_host_rule(policy::Action::allow, *parsed, std::string(pattern), "", {});
  auto p = std::move(b).build();
  if (!p) return "--host " + std::string(pattern) + ": " + p.error().message;
  return *p;
}

// --- filters ---

namespace {

struct Bounds {
  std::string since, until;  // as the log writes times, so they compare as strings
};

Bounds bounds(const Filter& f) {
  Bounds b;
  if (f.since) b.since = format_time(*f.since);
  if (f.until) b.until = format_time(*f.until);
  return b;
}

bool verdict_selected(const Filter& f, std::string_view verdict) {
  return f.verdicts.empty() || std::find(f.verdicts.begin(), f.verdicts.end(), verdict) != f.verdicts.end();
}

// A tunnel the policy allowed and the proxy then closed for what went
// through it (a ClientHello or an HTTP request naming another host), as its
// close record says: a refusal (verdict error) by the check's name, though
// its decision says allow.
bool refused_tunnel(const detail::Record& close) {
  return close.end == "sni-mismatch" || close.end == "request-refused";
}

// Every filter but --verdict, which a tunnel's close record can answer
// after its decision (above).
bool decision_passes(const detail::Record& r, const Filter& f, const Bounds& b) {
  if (!b.since.empty() && r.time < b.since) return false;
  if (!b.until.empty() && r.time > b.until) return false;
  if (f.has_sandbox && r.sandbox != f.sandbox) return false;
  if (!f.rule.empty() && (r.rule_text.empty() ? std::string_view("<default policy>") : r.rule_text) != f.rule)
    return false;
  if (f.host) {
    auto t = policy::parse_target(r.target, std::nullopt);
    if (!t || f.host->check_host(*t).verdict != policy::Verdict::allow) return false;
  }
  return true;
}

}  // namespace

struct Matcher::Impl {
  explicit Impl(const Filter& f) : filter(f), b(bounds(f)) {}
  const Filter& filter;
  Bounds b;
  detail::RecordParser parser;
  // Passed decisions awaiting their close: true when the decision was
  // printed, false when only a refusal at its close would be.
  std::unordered_map<std::string, bool> open;
};

Matcher::Matcher(const Filter& filter) : impl_(std::make_unique<Impl>(filter)) {}
Matcher::~Matcher() = default;

bool Matcher::operator()(std::string_view line) {
  const auto* r = impl_->parser.parse(line);
  if (!r) return false;
  const auto& f = impl_->filter;
  if (r->type == "decision") {
    if (!decision_passes(*r, f, impl_->b)) return false;
    const bool pass = verdict_selected(f, r->verdict);
    if (pass && r->verdict != "deny" && r->verdict != "error") impl_->open.emplace(r->id, true);
    else if (!pass && r->verdict == "allow" && verdict_selected(f, "error")) impl_->open.emplace(r->id, false);
    return pass;
  }
  if (r->type == "close") {
    const auto it = impl_->open.find(std::string(r->id));
    if (it == impl_->open.end()) return false;
    const bool printed = it->second;
    impl_->open.erase(it);
    return printed || refused_tunnel(*r);
  }
  return false;
}

Summary summarize(LineReader& reader, const Filter& filter, const std::function<void(std::string_view)>& raw) {
  Summary s;
  const Bounds b = bounds(filter);
  detail::RecordParser parser;
  std::unordered_map<std::string, std::size_t> groups;
  // Decision id (hashed: no allocation per record) -> row, until its close record.
  std::unordered_map<std::uint64_t, std::size_t> open;
  const std::hash<std::string_view> id_hash;
  std::string key;
  // Under a --verdict without allow but with error: allowed tunnels, whose
  // close may yet make them a refusal -> (sandbox, target).
  std::unordered_map<std::uint64_t, std::pair<std::string, std::string>> refusable;
  const bool show_refusals = verdict_selected(filter, "error");
  // Counts a refused tunnel in the blocked row of its reason. (sandbox and
  // target may view a row: they are copied before a row is added.)
  const auto refusal = [&](std::string_view sandbox, std::string_view target, const detail::Record& close) {
    key.clear();
    key.append("b").append(sandbox).append("\x1f").append(target);
    key.append("\x1f\x1f").append(close.end).append("\x1f").append("error");
    auto [refused, inserted] = groups.try_emplace(key, s.rows.size());
    if (inserted) {
      Row row;
      row.blocked = true;
      row.verdict = "error";
      row.sandbox = sandbox;
      row.target = target;
      row.reason = close.end;
      row.phase = "tunnel";
      s.rows.push_back(std::move(row));
    }
    auto& row = s.rows[refused->second];
    ++row.count;
    row.last_seen.assign(close.time);
    row.bytes += close.bytes_up + close.bytes_down;
  };
  std::string_view line;
  bool terminated = false;
  while (reader.next(line, terminated)) {
    if (!terminated) continue;  // a torn line is never a record
    const auto* r = parser.parse(line);
    if (!r) continue;
    if (r->type == "policy") {
      if (!r->file.empty()) s.policy_file = std::string(r->file);
      continue;
    }
    if (r->type == "close") {
      if (auto it = open.find(id_hash(r->id)); it != open.end()) {
        const auto tunnel = it->second;
        open.erase(it);
        if (raw) raw(line);
        // A refusal a reader must see among the blocked, by the check's
        // name, not by a rule (none refused it); the tunnel also counts
        // among the allowed.
        if (refused_tunnel(*r) && show_refusals) refusal(s.rows[tunnel].sandbox, s.rows[tunnel].target, *r);
        else s.rows[tunnel].bytes += r->bytes_up + r->bytes_down;
      } else if (auto t = refusable.find(id_hash(r->id)); t != refusable.end()) {
        if (refused_tunnel(*r)) {
          ++s.matched;
          if (raw) raw(line);
          if (s.first_time.empty()) s.first_time = std::string(r->time);
          s.last_time.assign(r->time);
          refusal(t->second.first, t->second.second, *r);
        }
        refusable.erase(t);
      }
      continue;
    }
    if (r->type != "decision") continue;
    ++s.decisions;
    if (!decision_passes(*r, filter, b)) continue;
    const std::string_view target = r->target.empty() ? r->requested : r->target;
    if (!verdict_selected(filter, r->verdict)) {
      if (r->verdict == "allow" && show_refusals)
        refusable.try_emplace(id_hash(r->id), std::string(r->sandbox), std::string(target));
      continue;
    }
    ++s.matched;
    if (raw) raw(line);
    if (s.first_time.empty()) s.first_time = std::string(r->time);
    s.last_time.assign(r->time);
    const bool blocked = r->verdict != "allow";
    // A refusal for another reason than policy (malformed, DNS, connect)
    // names no rule: the rule that let the name through did not refuse it.
    const bool error = r->verdict == "error";
    key.clear();
    key.append(blocked ? "b" : "a").append(r->sandbox).append("\x1f").append(target).append("\x1f");
    key.append(error ? "" : r->rule_text).append("\x1f").append(r->reason).append("\x1f").append(r->verdict);
    auto [it, inserted] = groups.try_emplace(key, s.rows.size());
    if (inserted) {
      Row row;
      row.blocked = blocked;
      row.verdict = r->verdict;
      row.sandbox = r->sandbox;
      row.target = target;
      if (!error) row.rule = r->rule_text.empty() ? "<default policy>" : std::string(r->rule_text);
      if (!error && !r->rule_file.empty()) row.rule_where = std::string(r->rule_file) + ":" + std::to_string(r->rule_line);
      row.rule_action = r->rule_action;
      row.reason = r->reason;
      row.phase = r->phase;
      // The address that decided an address-phase verdict; the writer leaves
      // decided_address out when it is the address dialed.
      if (r->phase == "address") row.address = r->decided_address.empty() ? r->address : r->decided_address;
      s.rows.push_back(std::move(row));
    }
    auto& row = s.rows[it->second];
    ++row.count;
    row.last_seen.assign(r->time);
    if (r->verdict == "allow" || r->verdict == "report") open[id_hash(r->id)] = it->second;
  }
  std::stable_sort(s.rows.begin(), s.rows.end(), [](const Row& a, const Row& c) {
    if (a.blocked != c.blocked) return a.blocked;
    return a.last_seen > c.last_seen;
  });
  return s;
}

}  // namespace sandgate::netlog
