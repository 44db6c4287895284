// One log line parsed with Boost.JSON into views of the fields readers use.
// The views stay valid until the next parse() on the same parser.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <boost/json/basic_parser.hpp>

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

// The members a reader uses, and where each goes in a Record.
enum class Field : std::uint8_t {
  none, type, time, id, prev, seq, schema_version, sandbox, verdict, target, requested, reason, phase, address,
  decided_address, rule, bytes_up, bytes_down, end, file, final, sha256, hmac, checkpoint_records,
  // members of "rule"
  rule_text, rule_file, rule_action, rule_line
};

// Boost.JSON's event parser fills a Record as the line goes by: no document
// is built. A member reads as a document would read it: the last of
// duplicate keys counts, and one of another type than its field's leaves
// the field empty.
struct RecordHandler {
  static constexpr std::size_t max_object_size = static_cast<std::size_t>(-1);
  static constexpr std::size_t max_array_size = static_cast<std::size_t>(-1);
  static constexpr std::size_t max_key_size = static_cast<std::size_t>(-1);
  static constexpr std::size_t max_string_size = static_cast<std::size_t>(-1);
  using ec_t = boost::json::error_code;

  Record record;
  std::string strings;  // the kept strings' bytes; reserved to the line's size, so never moved
  std::string key;      // the key being read
  std::size_t depth = 0;  // containers open
  bool object = false;    // the document is an object
  bool in_rule = false;   // directly inside the "rule" object
  Field pending = Field::none;  // the member whose value comes next
  std::size_t string_start = 0;  // where the string being read began in `strings`

  void start(std::size_t line_size);

  bool on_document_begin(ec_t&) { return true; }
  bool on_document_end(ec_t&) { return true; }
  bool on_object_begin(ec_t&);
  bool on_object_end(std::size_t, ec_t&) { return close_container(); }
  bool on_array_begin(ec_t&) { return open_container(false); }
  bool on_array_end(std::size_t, ec_t&) { return close_container(); }
  bool on_key_part(boost::json::string_view s, std::size_t, ec_t&);
  bool on_key(boost::json::string_view s, std::size_t, ec_t&);
  bool on_string_part(boost::json::string_view s, std::size_t, ec_t&);
  bool on_string(boost::json::string_view s, std::size_t, ec_t&);
  bool on_number_part(boost::json::string_view, ec_t&) { return true; }
  bool on_int64(std::int64_t i, boost::json::string_view, ec_t&) { return number(i); }
  bool on_uint64(std::uint64_t u, boost::json::string_view, ec_t&) { return number(static_cast<std::int64_t>(u)); }
  bool on_double(double, boost::json::string_view, ec_t&) { return scalar(); }
  bool on_bool(bool b, ec_t&);
  bool on_null(ec_t&) { return scalar(); }
  bool on_comment_part(boost::json::string_view, ec_t&) { return true; }
  bool on_comment(boost::json::string_view, ec_t&) { return true; }

 private:
  bool open_container(bool is_object);
  bool close_container();
  bool number(std::int64_t v);
  bool scalar();  // a value no field takes: the pending member stays empty
  bool value_here() const noexcept { return depth == 1 || (depth == 2 && in_rule); }
};

class RecordParser {
 public:
  RecordParser();
  // nullptr when the line is not a JSON object with a type, seq and prev.
  const Record* parse(std::string_view line);

 private:
  boost::json::basic_parser<RecordHandler> parser_;
};

}  // namespace sandgate::netlog::detail
