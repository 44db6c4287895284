// Reading the network log: its files in order (rotated and gzip-compressed
// ones included), streamed line by line, checked (`verify`), filtered and
// summarized (`sandgate network log`). Nothing loads a whole file.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/system/result.hpp>

#include "sandgate/policy/policy.h"

namespace sandgate::netlog {

// The live file PATH and its rotated siblings (PATH.N, PATH.N.gz, PATH-DATE[.gz]),
// oldest first by the sequence number of each file's first record.
boost::system::result<std::vector<std::string>, std::string> log_files(const std::string& path);

// Streams the lines of files in order, plain or gzip (zlib). Any line length.
class LineReader {
 public:
  explicit LineReader(std::vector<std::string> files);
  ~LineReader();
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;

  // The next line, without its newline; false at the end of the last file.
  // `terminated` is false for a file's last line when no newline ends it (torn).
  bool next(std::string_view& line, bool& terminated);
  // Where the last line came from.
  const std::string& file() const noexcept;
  std::uint64_t line_number() const noexcept;
  bool file_changed() const noexcept;  // the last line is the first of a new file
  // An error opening or reading a file ("" when none).
  const std::string& error() const noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// --- verify ---

struct Problem {
  std::string file;
  std::uint64_t line = 0;
  std::uint64_t seq = 0;  // the record's seq, 0 when unknown
  std::string kind;       // "edited", "missing", "out-of-order", "torn", "truncated", "hmac", "checkpoint-gap", "invalid"
  std::string message;
};

struct VerifyReport {
  std::uint64_t files = 0;
  std::uint64_t records = 0;
  std::uint64_t checkpoints = 0;
  std::uint64_t hmacs_checked = 0;
  std::uint64_t first_seq = 0, last_seq = 0;
  bool live = false;                  // a proxy holds the live file open
  std::vector<Problem> problems;      // tampering, loss or corruption: exit non-zero
  std::vector<std::string> notes;     // unclean stops, pruned older files
};

struct VerifyOptions {
  std::string key;  // HMAC key; empty: the chain only
  // With a key: records allowed between checkpoints. 0: what each file's
  // `file` record declares (the writer's --log-checkpoint-records).
  std::uint64_t max_checkpoint_gap = 0;
  std::size_t max_problems = 20;
};

// Checks the chain across `files` (as log_files() orders them): each record's
// prev is the SHA-256 of the line before it, seq grows by one, checkpoints'
// HMACs match, and the log ends with the final checkpoint of a clean stop
// (or is live). Reports the first record where each problem shows.
VerifyReport verify(const std::vector<std::string>& files, const VerifyOptions& options);

// --- events, filters, summaries ---

using Time = std::chrono::system_clock::time_point;

// Parses "2026-11-27T10:00:00Z" (fraction and offset allowed) or a duration
// before now ("90s", "15m", "2h", "7d").
boost::system::result<Time, std::string> parse_time(std::string_view text, Time now);

struct Filter {
  std::optional<Time> since, until;
  std::vector<std::string> verdicts;  // allow, deny, report, error
  std::shared_ptr<const policy::Policy> host;  // a one-rule policy: the --host pattern
  std::string rule;                   // exact rule text ("<default policy>" for none)
  std::string sandbox;
  bool has_sandbox = false;
};
// Builds Filter::host from a pattern in policy syntax.
boost::system::result<std::shared_ptr<const policy::Policy>, std::string> host_filter(std::string_view pattern);

// One row of the summary: a (section, sandbox, target, rule, reason) group.
struct Row {
  bool blocked = false;  // deny, error, and report's would-deny
  std::string verdict;
  std::string sandbox;
  std::string target;  // host:port as normalized (the requested text when it did not parse)
  std::string rule;    // rule text, or "<default policy>"; empty for an error (no rule refused it)
  std::string rule_where;  // file:line
  std::string rule_action;
  std::string reason;
  std::string phase;
  std::string address;  // the address that decided (address phase)
  std::string last_seen;
  std::uint64_t count = 0;
  std::uint64_t bytes = 0;  // from close records
};

struct Summary {
  std::vector<Row> rows;  // blocked first, then allowed; most recent first in each
  std::uint64_t decisions = 0;
  std::uint64_t matched = 0;
  std::string first_time, last_time;
  std::string policy_file;  // from the last policy record
};

// Streams the files once; `raw`, when set, gets every matching decision or
// close line as written.
Summary summarize(LineReader& reader, const Filter& filter,
                  const std::function<void(std::string_view)>& raw = {});

// Decides which lines pass a filter, one at a time (for --raw and --follow):
// a decision by its fields, a close record by its decision's. Keeps the ids
// of passed decisions until their close record (bounded by open connections).
class Matcher {
 public:
  explicit Matcher(const Filter& filter);
  ~Matcher();
  bool operator()(std::string_view line);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sandgate::netlog
