// The log's files on disk: the live file and its rotated siblings.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <boost/system/result.hpp>

#include "chain.h"

namespace sandgate::netlog::detail {

// Where an existing log ends: the hash and sequence number of its last
// complete line, and whether a torn (unterminated) line follows it.
struct Tail {
  DigestHex last_hash{};
  std::uint64_t last_seq = 0;
  bool torn = false;
};
// Reads the end of `path` (no whole-file read). A missing or empty file is
// the chain's start.
boost::system::result<Tail, std::string> read_tail(const std::string& path);

// Renames PATH.N[.gz] to PATH.N+1[.gz] (highest first), then PATH to PATH.1.
// Returns the new name of PATH ("network.jsonl.1").
std::string rotate_siblings(const std::string& path);

}  // namespace sandgate::netlog::detail
