// The CONNECT first-flight check (TLS ClientHello SNI) on arbitrary bytes:
// it never crashes and always decides once it has a full record.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "client_hello.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace sandgate::proxy::detail;
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  const auto v = check_first_flight(bytes, "origin.test");
  if (size >= max_first_flight && v == FirstFlight::need_more) __builtin_trap();
  return 0;
}
