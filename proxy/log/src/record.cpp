#include "record.h"

#include <boost/json/basic_parser_impl.hpp>

namespace sandgate::netlog::detail {
namespace {

Field top_field(std::string_view k) {
  switch (k.empty() ? '\0' : k[0]) {
    case 'a': return k == "address" ? Field::address : Field::none;
    case 'b': return k == "bytes_up" ? Field::bytes_up : k == "bytes_down" ? Field::bytes_down : Field::none;
    case 'c': return k == "checkpoint_records" ? Field::checkpoint_records : Field::none;
    case 'd': return k == "decided_address" ? Field::decided_address : Field::none;
    case 'e': return k == "end" ? Field::end : Field::none;
    case 'f': return k == "file" ? Field::file : k == "final" ? Field::final : Field::none;
    case 'h': return k == "hmac" ? Field::hmac : Field::none;
    case 'i': return k == "id" ? Field::id : Field::none;
    case 'p': return k == "prev" ? Field::prev : k == "phase" ? Field::phase : Field::none;
    case 'r':
      return k == "reason" ? Field::reason : k == "requested" ? Field::requested : k == "rule" ? Field::rule : Field::none;
    case 's':
      return k == "seq"              ? Field::seq
             : k == "sandbox"        ? Field::sandbox
             : k == "schema_version" ? Field::schema_version
             : k == "sha256"         ? Field::sha256
                                     : Field::none;
    case 't': return k == "type" ? Field::type : k == "time" ? Field::time : k == "target" ? Field::target : Field::none;
    case 'v': return k == "verdict" ? Field::verdict : Field::none;
    default: return Field::none;
  }
}

Field rule_field(std::string_view k) {
  if (k == "text") return Field::rule_text;
  if (k == "file") return Field::rule_file;
  if (k == "action") return Field::rule_action;
  return k == "line" ? Field::rule_line : Field::none;
}

std::string_view* string_of(Record& r, Field f) {
  switch (f) {
    case Field::type: return &r.type;
    case Field::time: return &r.time;
    case Field::id: return &r.id;
    case Field::prev: return &r.prev;
    case Field::sandbox: return &r.sandbox;
    case Field::verdict: return &r.verdict;
    case Field::target: return &r.target;
    case Field::requested: return &r.requested;
    case Field::reason: return &r.reason;
    case Field::phase: return &r.phase;
    case Field::address: return &r.address;
    case Field::decided_address: return &r.decided_address;
    case Field::end: return &r.end;
    case Field::file: return &r.file;
    case Field::sha256: return &r.sha256;
    case Field::hmac: return &r.hmac;
    case Field::rule_text: return &r.rule_text;
    case Field::rule_file: return &r.rule_file;
    case Field::rule_action: return &r.rule_action;
    default: return nullptr;
  }
}

// A member seen again, or of another type, leaves its field as if absent.
void clear(Record& r, Field f) {
  if (auto* s = string_of(r, f)) {
    *s = {};
    return;
  }
  switch (f) {
    case Field::seq: r.seq = 0; break;
    case Field::schema_version: r.schema_version = 0; break;
    case Field::bytes_up: r.bytes_up = 0; break;
    case Field::bytes_down: r.bytes_down = 0; break;
    case Field::final: r.final = false; break;
    case Field::checkpoint_records: r.checkpoint_records = 0; break;
    case Field::rule_line: r.rule_line = 0; break;
    case Field::rule:
      r.rule_text = r.rule_file = r.rule_action = {};
      r.rule_line = 0;
      break;
    default: break;
  }
}

}  // namespace

void RecordHandler::start(std::size_t line_size) {
  record = Record{};
  strings.clear();
  strings.reserve(line_size);
  key.clear();
  depth = 0;
  object = in_rule = false;
  pending = Field::none;
  string_start = std::string::npos;
}

bool RecordHandler::on_object_begin(ec_t&) {
  if (depth == 0) object = true;
  return open_container(true);
}

bool RecordHandler::open_container(bool is_object) {
  // The value of "rule", if an object, holds the rule's members; any other
  // container is skipped whole.
  if (depth == 1 && pending == Field::rule && is_object) in_rule = true;
  pending = Field::none;
  ++depth;
  return true;
}

bool RecordHandler::close_container() {
  --depth;
  if (depth <= 1) in_rule = false;
  return true;
}

bool RecordHandler::on_key_part(boost::json::string_view s, std::size_t, ec_t&) {
  if (value_here()) key.append(s.data(), s.size());
  return true;
}

bool RecordHandler::on_key(boost::json::string_view s, std::size_t, ec_t&) {
  if (!value_here()) return true;
  // In one piece, unless it held an escape: then its earlier pieces are
  // in `key` (on_key_part).
  std::string_view k(s.data(), s.size());
  if (!key.empty()) k = key.append(k);
  pending = depth == 1 ? top_field(k) : rule_field(k);
  clear(record, pending);
  key.clear();
  return true;
}

bool RecordHandler::on_string_part(boost::json::string_view s, std::size_t, ec_t& ec) {
  if (!value_here() || !string_of(record, pending)) return true;
  if (string_start == std::string::npos) string_start = strings.size();
  // The reserve holds every string of the line (unescaping never lengthens
  // one): past it, views already handed out would move.
  if (strings.size() + s.size() > strings.capacity()) {
    ec = boost::json::error::exception;
    return false;
  }
  strings.append(s.data(), s.size());
  return true;
}

bool RecordHandler::on_string(boost::json::string_view s, std::size_t n, ec_t& ec) {
  if (!value_here()) return true;
  auto* field = string_of(record, pending);
  if (field) {
    if (!on_string_part(s, n, ec)) return false;
    *field = std::string_view(strings).substr(string_start);
  }
  string_start = std::string::npos;
  pending = Field::none;
  return true;
}

bool RecordHandler::number(std::int64_t v) {
  if (!value_here()) return true;
  switch (pending) {
    case Field::seq: record.seq = static_cast<std::uint64_t>(v); break;
    case Field::schema_version: record.schema_version = v; break;
    case Field::bytes_up: record.bytes_up = static_cast<std::uint64_t>(v); break;
    case Field::bytes_down: record.bytes_down = static_cast<std::uint64_t>(v); break;
    case Field::checkpoint_records: record.checkpoint_records = static_cast<std::uint64_t>(v); break;
    case Field::rule_line: record.rule_line = v; break;
    default: break;
  }
  pending = Field::none;
  return true;
}

bool RecordHandler::on_bool(bool b, ec_t&) {
  if (value_here() && pending == Field::final) record.final = b;
  return scalar();
}

bool RecordHandler::scalar() {
  if (value_here()) pending = Field::none;
  return true;
}

RecordParser::RecordParser() : parser_(boost::json::parse_options{}) {}

const Record* RecordParser::parse(std::string_view line) {
  parser_.reset();
  auto& h = parser_.handler();
  h.start(line.size());
  boost::json::error_code ec;
  // As boost::json::parser::write: the whole line is one document.
  const auto n = parser_.write_some(false, line.data(), line.size(), ec);
  if (ec || n < line.size() || !h.object) return nullptr;
  const Record& r = h.record;
  if (r.type.empty() || r.seq == 0 || r.prev.size() != 64) return nullptr;
  return &r;
}

}  // namespace sandgate::netlog::detail
