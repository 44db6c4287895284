// The hosts-file parser (`--hosts-file`) on arbitrary bytes: it either names
// the line it refuses, or every name it took looks up to addresses, and the
// normalized spelling of a name finds the same ones.
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>

#include "hosts_file.h"
#include "sandgate/policy/target.h"

using sandgate::proxy::detail::HostsFile;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  std::istringstream in(text);
  auto h = HostsFile::parse(in, "hosts");
  if (!h) {
    if (h.error().rfind("hosts:", 0) != 0) __builtin_trap();  // every refusal names file and line
    return 0;
  }
  std::istringstream again(text);
  for (std::string line; std::getline(again, line);) {
    std::istringstream words(line.substr(0, line.find('#')));
    std::string address, name;
    if (!(words >> address)) continue;
    while (words >> name) {
      const auto t = sandgate::policy::normalize_host(name);
      if (!t) __builtin_trap();  // it was accepted above
      const auto* found = h->find(t->host);
      if (!found || found->empty()) __builtin_trap();
    }
  }
  return 0;
}
