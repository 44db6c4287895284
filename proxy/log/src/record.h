// One log line parsed with Boost.JSON into views of the fields readers use.
// The views stay valid until the next parse() on the same parser.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include <boost/json/monotonic_resource.hpp>
#include <boost/json/parser.hpp>

namespace sandgate::netlog::detail {

struct Record {
  std::string_view type, time, id, prev;
  std::uint64_t seq = 0;
  std::int64_t schema_version = 0;
  // decision
  std::string_view sandbox, verdict, target, requested, reason, phase, address, decided_address;
  std::string_view rule_text, rule_file, rule_action;
  std::int64_t rule_line = 0;
  // close
  std::uint64_t bytes_up = 0, bytes_down = 0;
  std::string_view end;
  // policy
  std::string_view file, sha256;
  // checkpoint
  std::string_view hmac;
  bool final = false;
  // file (its `reason`, start, rotate or reopen, is read into reason)
  std::uint64_t checkpoint_records = 0;
};

class RecordParser {
 public:
  RecordParser();
  // nullptr when the line is not a JSON object with a type, seq and prev.
  const Record* parse(std::string_view line);

 private:
  unsigned char buffer_[16384];
  boost::json::monotonic_resource mr_;
  boost::json::parser parser_;
  Record record_;
  // The last line's document, in mr_. Emplaced, never assigned: assigning
  // would copy it into the target's own (heap) storage.
  std::optional<boost::json::value> value_;
};

}  // namespace sandgate::netlog::detail
