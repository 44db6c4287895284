// The network log's readers on arbitrary bytes: the record parser, the line
// splitter (any line length, torn tails) and verify, with the invariants:
//  - a line the parser accepts has a type, a seq > 0 and a 64-character prev;
//  - the parser (Boost.JSON's event parser, no document) reads every field
//    as Boost.JSON's document of the line says it (the last of duplicate
//    keys, empty when of another type), and accepts the same lines;
//  - verify never accepts a file that does not end in a final checkpoint;
//  - nothing crashes or leaks on any input.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string_view>

#include <boost/json/parse.hpp>

#include "record.h"
#include "sandgate/netlog/reader.h"

namespace {

namespace json = boost::json;

// The fields of a line whose document is `doc` (views into it), or nullopt
// where the parser must refuse the line.
std::optional<sandgate::netlog::detail::Record> by_document(const json::value& doc) {
  if (!doc.is_object()) return std::nullopt;
  const auto& o = doc.get_object();
  const auto str = [](const json::object& in, std::string_view k) {
    const auto* v = in.if_contains(k);
    return v && v->is_string() ? std::string_view(v->get_string()) : std::string_view();
  };
  const auto num = [](const json::object& in, std::string_view k) -> std::int64_t {
    const auto* v = in.if_contains(k);
    if (!v) return 0;
    return v->is_int64() ? v->get_int64() : v->is_uint64() ? static_cast<std::int64_t>(v->get_uint64()) : 0;
  };
  sandgate::netlog::detail::Record r;
  r.type = str(o, "type"), r.time = str(o, "time"), r.id = str(o, "id"), r.prev = str(o, "prev");
  r.seq = static_cast<std::uint64_t>(num(o, "seq")), r.schema_version = num(o, "schema_version");
  r.sandbox = str(o, "sandbox"), r.verdict = str(o, "verdict"), r.target = str(o, "target");
  r.requested = str(o, "requested"), r.reason = str(o, "reason"), r.phase = str(o, "phase");
  r.address = str(o, "address"), r.decided_address = str(o, "decided_address");
  if (const auto* rule = o.if_contains("rule"); rule && rule->is_object()) {
    const auto& ro = rule->get_object();
    r.rule_text = str(ro, "text"), r.rule_file = str(ro, "file"), r.rule_action = str(ro, "action");
    r.rule_line = num(ro, "line");
  }
  r.bytes_up = static_cast<std::uint64_t>(num(o, "bytes_up")), r.bytes_down = static_cast<std::uint64_t>(num(o, "bytes_down"));
  r.end = str(o, "end"), r.file = str(o, "file"), r.sha256 = str(o, "sha256"), r.hmac = str(o, "hmac");
  const auto* final = o.if_contains("final");
  r.final = final && final->is_bool() && final->get_bool();
  r.checkpoint_records = static_cast<std::uint64_t>(num(o, "checkpoint_records"));
  if (r.type.empty() || r.seq == 0 || r.prev.size() != 64) return std::nullopt;
  return r;
}

bool same(const sandgate::netlog::detail::Record& a, const sandgate::netlog::detail::Record& b) {
  return a.type == b.type && a.time == b.time && a.id == b.id && a.prev == b.prev && a.seq == b.seq &&
         a.schema_version == b.schema_version && a.sandbox == b.sandbox && a.verdict == b.verdict &&
         a.target == b.target && a.requested == b.requested && a.reason == b.reason && a.phase == b.phase &&
         a.address == b.address && a.decided_address == b.decided_address && a.rule_text == b.rule_text &&
         a.rule_file == b.rule_file && a.rule_action == b.rule_action && a.rule_line == b.rule_line &&
         a.bytes_up == b.bytes_up && a.bytes_down == b.bytes_down && a.end == b.end && a.file == b.file &&
         a.sha256 == b.sha256 && a.hmac == b.hmac && a.final == b.final &&
         a.checkpoint_records == b.checkpoint_records;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  sandgate::netlog::detail::RecordParser parser;
  const auto* r = parser.parse(in);
  if (r && (r->type.empty() || r->seq == 0 || r->prev.size() != 64)) __builtin_trap();
  {
    json::error_code ec;
    const auto doc = json::parse(in, ec);
    const auto expected = ec ? std::nullopt : by_document(doc);
    if (static_cast<bool>(r) != expected.has_value() || (r && !same(*r, *expected))) __builtin_trap();
  }

  static const auto path =
      (std::filesystem::temp_directory_path() / ("sandgate-fuzz-log-" + std::to_string(::getpid()))).string();
  std::ofstream(path, std::ios::trunc | std::ios::binary).write(in.data(), static_cast<std::streamsize>(size));
  const auto report = sandgate::netlog::verify({path}, {});
  if (report.records > 0 && report.problems.empty() && in.find("\"final\":true") == std::string_view::npos)
    __builtin_trap();
  sandgate::netlog::LineReader reader({path});
  sandgate::netlog::summarize(reader, {});
  return 0;
}
