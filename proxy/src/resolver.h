// Name resolution for the proxy: a static hosts file first, then the
// system resolver (getaddrinfo on Asio's resolver thread), bounded in time.
// The proxy dials only addresses returned here, after the policy checked
// them: it never hands a name to another resolver.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <boost/system/result.hpp>

#include "sandgate/policy/address.h"

namespace sandgate::proxy::detail {

class HostsFile {
 public:
  // "ADDRESS NAME [NAME...]" per line, '#' comments, as /etc/hosts. Errors
  // name the file and line.
  static boost::system::result<HostsFile, std::string> load(const std::string& path);
  // Addresses for a normalized name, in file order; nullptr if not listed.
  const std::vector<policy::Address>* find(std::string_view name) const noexcept;
  bool empty() const noexcept { return entries_.empty(); }

 private:
  // Transparent hashing: find() takes the string_view without a copy.
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
  };
  std::unordered_map<std::string, std::vector<policy::Address>, Hash, std::equal_to<>> entries_;
};

}  // namespace sandgate::proxy::detail
