#include "sandgate/config/policy_store.h"

namespace sandgate::config {

PolicyStore::PolicyStore(std::string path, LoadOptions options, std::shared_ptr<const PolicySet> first)
    : path_(std::move(path)), options_(options), current_(std::move(first)) {}

boost::system::result<std::unique_ptr<PolicyStore>, Diagnostics> PolicyStore::open(std::string path,
                                                                                   LoadOptions options) {
  auto set = load_policy_file(path, options);
  if (!set) return set.error();
  auto first = std::make_shared<const PolicySet>(std::move(*set));
  return std::unique_ptr<PolicyStore>(new PolicyStore(std::move(path), options, std::move(first)));
}

boost::system::result<std::shared_ptr<const PolicySet>, Diagnostics> PolicyStore::reload() {
  auto set = load_policy_file(path_, options_);
  if (!set) return set.error();  // the last good set stays in force
  auto next = std::make_shared<const PolicySet>(std::move(*set));
  current_.store(next, std::memory_order_release);
  return next;
}

}  // namespace sandgate::config
