// `sandgate network log verify`: walks the chain across every file and
// reports where it breaks.
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include "chain.h"
#include "record.h"
#include "sandgate/netlog/reader.h"

namespace sandgate::netlog {
namespace {

// True when another process (the proxy) holds the file's writer lock.
bool held_by_writer(const std::string& path) {
  const int f = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f < 0) return false;
  // Invariant: f is closed before return, which drops any lock taken here.
  const bool held = ::flock(f, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
  ::close(f);
  return held;
}

}  // namespace

VerifyReport verify(const std::vector<std::string>& files, const VerifyOptions& options) {
  VerifyReport report;
  report.files = files.size();
  std::uint64_t quiet = 0;  // records left whose chain break is the last problem's echo
  // back: 1 when the problem is in the line before the one being read.
  auto problem = [&](const LineReader& r, std::uint64_t seq, std::string kind, std::string message,
                     std::uint64_t back = 0) {
    quiet = 3;
    if (report.problems.size() < options.max_problems)
      report.problems.push_back({r.file(), r.line_number() - back, seq, std::move(kind), std::move(message)});
  };

  LineReader reader(files);
  detail::RecordParser parser;
  detail::Sha256 sha;
  detail::DigestHex prev{};
  bool have_prev = false;        // a record has been read (prev holds its hash)
  std::uint64_t expected = 0;    // the next seq
  std::string prev_type;         // of the last record
  bool prev_final = false;
  std::uint64_t since_checkpoint = 0;
  std::uint64_t gap = options.max_checkpoint_gap ? options.max_checkpoint_gap : 10'000;
  std::size_t pending_missing = static_cast<std::size_t>(-1);  // a "missing" problem that may be a move
  std::uint64_t missing_from = 0, missing_to = 0;
  std::string last_file;
  std::uint64_t last_line = 0;
  std::string_view line;
  bool terminated = false;
  while (reader.next(line, terminated)) {
    if (!terminated) {
      problem(reader, 0, "torn",
              "a torn record (" + std::to_string(line.size()) +
                  " bytes, no newline): the writer stopped mid-line (a crash, or the file was cut here)");
      continue;
    }
    const auto hash = detail::to_hex(sha.digest(line));
    const auto* r = parser.parse(line);
    if (!r) {
      problem(reader, 0, "invalid", "not a log record (not JSON, or no type, seq and prev): edited or corrupted");
      prev = hash;
      have_prev = true;
      ++expected;  // it stood for one record
      continue;
    }
    ++report.records;
    if (report.first_seq == 0) report.first_seq = r->seq;
    report.last_seq = r->seq;
    const std::string_view want(prev.data(), prev.size());
    if (!have_prev) {
      if (r->prev != detail::genesis)
        report.notes.push_back("the chain starts at seq " + std::to_string(r->seq) + " in " + reader.file() +
                               ": older files are not here (rotated away or pruned)");
    } else if (r->seq != expected) {
      if (r->seq < expected && pending_missing < report.problems.size() && r->seq >= missing_from &&
          r->seq < missing_to) {
        // The "missing" records turned up later: they were moved, not deleted.
        auto& p = report.problems[pending_missing];
        p.kind = "out-of-order";
        p.message = "records were reordered: seq " + std::to_string(p.seq) + " stands where seq " +
                    std::to_string(missing_from) + " belongs (found later at line " +
                    std::to_string(reader.line_number()) + ")";
        pending_missing = static_cast<std::size_t>(-1);
      } else if (r->seq > expected) {
        pending_missing = report.problems.size();
        missing_from = expected;
        missing_to = r->seq;
        problem(reader, r->seq, "missing",
                "records seq " + std::to_string(expected) + (r->seq - 1 > expected ? ".." + std::to_string(r->seq - 1) : "") +
                    " are missing before this one: deleted" + (reader.file_changed() ? " (or a whole file)" : ""));
      } else if (r->seq < expected) {
        problem(reader, r->seq, "out-of-order",
                "seq " + std::to_string(r->seq) + " where " + std::to_string(expected) +
                    " was expected: records were moved or duplicated");
      }
    } else if (r->prev != want && quiet == 0) {
      if (reader.file_changed())
        problem(reader, r->seq, "edited",
                "this file's first record does not chain to the previous file's last one: that file was "
                "edited or cut short");
      else
        problem(reader, r->seq > 0 ? r->seq - 1 : 0, "edited",
                "this record (seq " + std::to_string(r->seq - 1) +
                    ") was edited: its SHA-256 is not the next record's prev",
                1);
    }
    // Only a file starting a new run can follow a killed one: the writer
    // ends every file it rotates or reopens with a final checkpoint, so
    // such a file without one was cut, which the problems above report.
    if (r->type == "file" && r->reason == "start" && have_prev && !prev_final && prev_type != "checkpoint")
      report.notes.push_back("unclean stop before seq " + std::to_string(r->seq) + " (" + reader.file() +
                             "): the proxy was killed; records it had not written are lost");
    if (r->type == "checkpoint") {
      ++report.checkpoints;
      if (!options.key.empty()) {
        if (r->hmac.empty()) {
          problem(reader, r->seq, "hmac", "a checkpoint without an HMAC, but a key was given");
        } else if (detail::hmac_hex(options.key, r->prev) != r->hmac) {
          problem(reader, r->seq, "hmac",
                  "the checkpoint's HMAC does not match: records before it were rewritten (or the key is "
                  "not this log's)");
        } else {
          ++report.hmacs_checked;
        }
      }
      since_checkpoint = 0;
    } else if (r->type == "file") {
      // A new run or file: the writer counts from its own file record (an
      // unclean stop leaves the last run's tail unchecked by a checkpoint).
      since_checkpoint = 1;
      if (options.max_checkpoint_gap == 0 && r->checkpoint_records > 0) gap = r->checkpoint_records;
    } else if (!options.key.empty() && ++since_checkpoint > gap) {
      problem(reader, r->seq, "checkpoint-gap",
              "more than " + std::to_string(gap) + " records without a checkpoint: checkpoints were removed");
      since_checkpoint = 0;
    }
    prev = hash;
    have_prev = true;
    expected = std::max(expected, r->seq + 1);
    if (quiet > 0) --quiet;
    prev_type = std::string(r->type);
    prev_final = r->type == "checkpoint" && r->final;
    last_file = reader.file();
    last_line = reader.line_number();
  }
  if (!reader.error().empty()) report.problems.push_back({"", 0, 0, "invalid", reader.error()});
  if (!files.empty()) {
    report.live = held_by_writer(files.back());
    if (have_prev && !prev_final && !report.live && report.problems.size() < options.max_problems)
      report.problems.push_back(
          {last_file, last_line, report.last_seq, "truncated",
           "the log ends after seq " + std::to_string(report.last_seq) +
               " without the final checkpoint a clean stop writes: records after it were cut, or the proxy "
               "was killed (no proxy holds the log open now)"});
    // The proxy's first write to a log is its file record: a log with no
    // record at all, that no proxy is writing, was emptied.
    if (!have_prev && !report.live && report.problems.empty())
      report.problems.push_back({files.back(), 0, 0, "truncated",
                                 "the log holds no record, though a proxy writes one as it opens a log: it was "
                                 "emptied, or the proxy was killed at once (no proxy holds the log open now)"});
  }
  return report;
}

}  // namespace sandgate::netlog
