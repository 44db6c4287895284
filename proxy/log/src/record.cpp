#include "record.h"

namespace sandgate::netlog::detail {
namespace {

namespace json = boost::json;

}  // namespace

RecordParser::RecordParser() : mr_(buffer_, sizeof buffer_), parser_(json::storage_ptr(), json::parse_options{}) {}

const Record* RecordParser::parse(std::string_view line) {
  // One arena, emptied per line: a parse allocates from it, and from the
  // heap only for lines larger than its first block.
  value_.reset();
  mr_.release();
  parser_.reset(json::storage_ptr(&mr_));
  json::error_code ec;
  parser_.write(line.data(), line.size(), ec);
  if (ec) return nullptr;
  const auto& doc = value_.emplace(parser_.release());
  if (!doc.is_object()) return nullptr;
  const auto& o = doc.get_object();
  Record& r = record_;
  r = Record{};
  // One pass over the members (a lookup per field would rescan the object).
  auto str = [](const json::value& v) {
    return v.is_string() ? std::string_view(v.get_string()) : std::string_view();
  };
  auto num = [](const json::value& v) -> std::int64_t {
    return v.is_int64() ? v.get_int64() : v.is_uint64() ? static_cast<std::int64_t>(v.get_uint64()) : 0;
  };
  for (const auto& kv : o) {
    const std::string_view k = kv.key();
    const auto& v = kv.value();
    switch (k.empty() ? '\0' : k[0]) {
      case 'c':
        if (k == "checkpoint_records") r.checkpoint_records = static_cast<std::uint64_t>(num(v));
        break;
      case 'a':
        if (k == "address") r.address = str(v);
        break;
      case 'b':
        if (k == "bytes_up") r.bytes_up = static_cast<std::uint64_t>(num(v));
        else if (k == "bytes_down") r.bytes_down = static_cast<std::uint64_t>(num(v));
        break;
      case 'd':
        if (k == "decided_address") r.decided_address = str(v);
        break;
      case 'e':
        if (k == "end") r.end = str(v);
        break;
      case 'f':
        if (k == "file") r.file = str(v);
        else if (k == "final" && v.is_bool()) r.final = v.get_bool();
        break;
      case 'h':
        if (k == "hmac") r.hmac = str(v);
        break;
      case 'i':
        if (k == "id") r.id = str(v);
        break;
      case 'p':
        if (k == "prev") r.prev = str(v);
        else if (k == "phase") r.phase = str(v);
        break;
      case 'r':
        if (k == "reason") r.reason = str(v);
        else if (k == "requested") r.requested = str(v);
        else if (k == "rule" && v.is_object()) {
          const auto& ro = v.get_object();
          for (const auto& rkv : ro) {
            const std::string_view rk = rkv.key();
            if (rk == "text") r.rule_text = str(rkv.value());
            else if (rk == "file") r.rule_file = str(rkv.value());
            else if (rk == "action") r.rule_action = str(rkv.value());
            else if (rk == "line") r.rule_line = num(rkv.value());
          }
        }
        break;
      case 's':
        if (k == "seq") r.seq = static_cast<std::uint64_t>(num(v));
        else if (k == "sandbox") r.sandbox = str(v);
        else if (k == "schema_version") r.schema_version = num(v);
        else if (k == "sha256") r.sha256 = str(v);
        break;
      case 't':
        if (k == "type") r.type = str(v);
        else if (k == "time") r.time = str(v);
        else if (k == "target") r.target = str(v);
        break;
      case 'v':
        if (k == "verdict") r.verdict = str(v);
        break;
      default:
        break;
    }
  }
  if (r.type.empty() || r.seq == 0 || r.prev.size() != 64) return nullptr;
  return &r;
}

}  // namespace sandgate::netlog::detail
