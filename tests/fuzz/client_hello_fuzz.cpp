// The CONNECT first-flight check (TLS ClientHello SNI, HTTP request lines) on
// arbitrary bytes. It never crashes and always decides once it has a full
// record; a decision does not change as more bytes arrive, so how a client
// splits its writes cannot choose it; and a line Python's http.server reads
// as an HTTP/1 request (its words split on whitespace, the last "HTTP/...")
// is never passed as opaque.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "client_hello.h"

namespace {

using sandgate::proxy::detail::FirstFlight;

bool python_space(unsigned char c) {
  return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f) || c == 0x85 || c == 0xa0;
}

// http.server's parse_request: three words on the first line (read to LF),
// the last starting with "HTTP/"; here also a method of letters, as a
// server dispatches (a longer or odder one gets it a 501).
bool python_reads_http(std::string_view bytes) {
  const auto end = bytes.find('\n');
  if (end == std::string_view::npos) return false;
  const auto line = bytes.substr(0, end);
  std::size_t words = 0;
  std::string_view first, last;
  for (std::size_t i = 0; i < line.size();) {
    while (i < line.size() && python_space(line[i])) ++i;
    const std::size_t from = i;
    while (i < line.size() && !python_space(line[i])) ++i;
    if (i > from) {
      last = line.substr(from, i - from);
      if (++words == 1) first = last;
    }
  }
  if (words != 3 || !last.starts_with("HTTP/") || first.size() > 32) return false;
  for (const char c : first)
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'))) return false;
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace sandgate::proxy::detail;
  // The tunnel never reads more than max_first_flight before it decides.
  size = std::min(size, max_first_flight);
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  const auto v = check_first_flight(bytes, "origin.test");
  if (size >= max_first_flight && v == FirstFlight::need_more) __builtin_trap();
  // Chunking: the verdict on a prefix, once given, is the verdict on the whole.
  if (size > 1) {
    const auto prefix = check_first_flight(bytes.substr(0, 1 + data[0] % (size - 1)), "origin.test");
    if (prefix != FirstFlight::need_more && prefix != v) __builtin_trap();
  }
  // Not TLS, and read by Python as a request: never opaque.
  if (size > 0 && data[0] != 0x16 && v == FirstFlight::allow && python_reads_http(bytes)) __builtin_trap();
  return 0;
}
