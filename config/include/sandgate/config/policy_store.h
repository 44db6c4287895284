// The policy in force, swapped atomically on reload.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "sandgate/config/policy_file.h"

namespace sandgate::config {

// Holds the last good PolicySet of one file. current() is lock-free for
// readers; reload() parses, validates and compiles off to the side, then
// swaps, so a bad file never replaces a good policy.
class PolicyStore {
 public:
  // Loads the file once; fails (with every diagnostic) if that load fails.
  static boost::system::result<std::unique_ptr<PolicyStore>, Diagnostics> open(std::string path,
                                                                               LoadOptions options = {});

  // The policy set in force. Thread-safe; take one per connection and keep it.
  std::shared_ptr<const PolicySet> current() const noexcept { return current_.load(std::memory_order_acquire); }

  // Re-reads the file. On success the new set is in force and returned; on
  // error the last good set stays in force and the diagnostics are returned.
  // Not for concurrent callers: one thread (the signal or watch handler) reloads.
  boost::system::result<std::shared_ptr<const PolicySet>, Diagnostics> reload();

  const std::string& path() const noexcept { return path_; }

 private:
  PolicyStore(std::string path, LoadOptions options, std::shared_ptr<const PolicySet> first);
  std::string path_;
  LoadOptions options_;
  std::atomic<std::shared_ptr<const PolicySet>> current_;
};

}  // namespace sandgate::config
