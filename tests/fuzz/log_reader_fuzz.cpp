// The network log's readers on arbitrary bytes: the record parser, the line
// splitter (any line length, torn tails) and verify, with the invariants:
//  - a line the parser accepts has a type, a seq > 0 and a 64-character prev;
//  - verify never accepts a file that does not end in a final checkpoint;
//  - nothing crashes or leaks on any input.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string_view>

#include "record.h"
#include "sandgate/netlog/reader.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  sandgate::netlog::detail::RecordParser parser;
  if (const auto* r = parser.parse(in))
    if (r->type.empty() || r->seq == 0 || r->prev.size() != 64) __builtin_trap();

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
