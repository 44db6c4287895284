#include "record.h"

namespace sandgate::netlog::detail {
namespace {

namespace json = boost::json;

std::string_view text(const json::object& o, std::string_view key) {
  const auto* v = o.if_contains(key);
  return v && v->is_string() ? std::string_view(v->get_string()) : std::string_view();
}

std::int64_t integer(const json::object& o, std::string_view key) {
  const auto* v = o.if_contains(key);
  if (!v) return 0;
  if (v->is_int64()) return v->get_int64();
  if (v->is_uint64()) return static_cast<std::int64_t>(v->get_uint64());
  return 0;
}

}  // namespace

RecordParser::RecordParser() : mr_(buffer_, sizeof buffer_), parser_(json::storage_ptr(), json::parse_options{}) {}

const Record* RecordParser::parse(std::string_view line) {
  // One arena, emptied per line: a parse allocates from it, and from the
  // heap only for lines larger than its first block.
  value_ = json::value();
  mr_.release();
  parser_.reset(json::storage_ptr(&mr_));
  json::error_code ec;
  parser_.write(line.data(), line.size(), ec);
  if (ec) return nullptr;
  value_ = parser_.release();
  if (!value_.is_object()) return nullptr;
  const auto& o = value_.get_object();
  Record& r = record_;
  r = Record{};
  r.type = text(o, "type");
  r.seq = static_cast<std::uint64_t>(integer(o, "seq"));
  r.prev = text(o, "prev");
  if (r.type.empty() || r.seq == 0 || r.prev.size() != 64) return nullptr;
  r.schema_version = integer(o, "schema_version");
  r.time = text(o, "time");
  r.id = text(o, "id");
  r.sandbox = text(o, "sandbox");
  r.verdict = text(o, "verdict");
  r.target = text(o, "target");
  r.requested = text(o, "requested");
  r.host = text(o, "host");
  r.port = integer(o, "port");
  r.reason = text(o, "reason");
  r.phase = text(o, "phase");
  r.address = text(o, "address");
  r.decided_address = text(o, "decided_address");
  if (const auto* rule = o.if_contains("rule"); rule && rule->is_object()) {
    const auto& ro = rule->get_object();
    r.rule_text = text(ro, "text");
    r.rule_file = text(ro, "file");
    r.rule_action = text(ro, "action");
    r.rule_line = integer(ro, "line");
  }
  r.bytes_up = static_cast<std::uint64_t>(integer(o, "bytes_up"));
  r.bytes_down = static_cast<std::uint64_t>(integer(o, "bytes_down"));
  r.file = text(o, "file");
  r.sha256 = text(o, "sha256");
  r.hmac = text(o, "hmac");
  if (const auto* f = o.if_contains("final"); f && f->is_bool()) r.final = f->get_bool();
  return &r;
}

}  // namespace sandgate::netlog::detail
