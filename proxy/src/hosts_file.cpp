#include "hosts_file.h"

#include <algorithm>
#include <sstream>

#include "sandgate/config/policy_file.h"
#include "sandgate/policy/target.h"

namespace sandgate::proxy::detail {

boost::system::result<HostsFile, std::string> HostsFile::load(const std::string& path) {
  auto text = config::read_whole_file(path);
  if (!text) return "cannot read hosts file " + path + ": " + text.error().message();
  std::istringstream in(*text);
  auto parsed = parse(in, path);
  if (!parsed) return parsed.error();
  HostsFile h = std::move(*parsed);
  h.sha256_ = config::sha256_hex(*text);
  return h;
}

boost::system::result<HostsFile, std::string> HostsFile::parse(std::istream& f, const std::string& path) {
  HostsFile h;
  std::string line;
  for (int n = 1; std::getline(f, line); ++n) {
    if (auto hash = line.find('#'); hash != std::string::npos) line.resize(hash);
    std::istringstream words(line);
    std::string addr_text, name;
    if (!(words >> addr_text)) continue;
    auto addr = policy::parse_address(addr_text);
    if (!addr) return path + ":" + std::to_string(n) + ": '" + addr_text + "' is not an IP address";
    bool any = false;
    while (words >> name) {
      auto t = policy::normalize_host(name);
      if (!t || t->address)
        return path + ":" + std::to_string(n) + ": '" + name + "' is not a host name";
      auto& addresses = h.entries_[t->host];
      if (std::find(addresses.begin(), addresses.end(), *addr) == addresses.end()) addresses.push_back(*addr);
      any = true;
    }
    if (!any) return path + ":" + std::to_string(n) + ": an address needs at least one name";
  }
  return h;
}

const std::vector<policy::Address>* HostsFile::find(std::string_view name) const noexcept {
  auto it = entries_.find(name);
  return it == entries_.end() ? nullptr : &it->second;
}

}  // namespace sandgate::proxy::detail
