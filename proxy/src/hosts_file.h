// The static hosts file (`--hosts-file`): names an operator pins to
// addresses, consulted before anything else.
#pragma once

#include <functional>
#include <istream>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <boost/system/result.hpp>

#include "sandgate/policy/address.h"

namespace sandgate::proxy::detail {

// Transparent hashing: lookups take a string_view without a copy.
struct NameHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};

class HostsFile {
 public:
  // "ADDRESS NAME [NAME...]" per line, '#' comments, as /etc/hosts. Errors
  // name the file and line.
  static boost::system::result<HostsFile, std::string> load(const std::string& path);
  // The same, from a stream; `name` stands for the file in errors.
  static boost::system::result<HostsFile, std::string> parse(std::istream& in, const std::string& name);
  // Addresses for a normalized name, in file order; nullptr if not listed.
  const std::vector<policy::Address>* find(std::string_view name) const noexcept;
  bool empty() const noexcept { return entries_.empty(); }
  std::size_t names() const noexcept { return entries_.size(); }
  // The file's bytes' SHA-256 (hex), which the log's `policy` records name; "" from parse().
  const std::string& sha256() const noexcept { return sha256_; }

 private:
  std::unordered_map<std::string, std::vector<policy::Address>, NameHash, std::equal_to<>> entries_;
  std::string sha256_;
};

}  // namespace sandgate::proxy::detail
