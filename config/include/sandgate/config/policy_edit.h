// Changes to a policy file from the command line (`sandgate network proxy`):
// set the mode, add host and CIDR rules. The file is rewritten only if the
// result loads without errors, and atomically (a watching proxy never reads
// half a file).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <boost/system/result.hpp>

#include "sandgate/config/policy_file.h"

namespace sandgate::config {

struct PolicyEdit {
  std::optional<policy::Mode> mode;
  std::vector<std::string> allow_hosts, block_hosts, allow_cidrs, block_cidrs;
  std::string comment;  // kept with each added rule ("added by sandgate network proxy ...")
};

// Applies `edit` to the YAML policy at `path` (created with version 1 and
// mode deny if missing). Rules already present are not added twice. YAML
// comments in the file are not kept (the file is re-emitted). Docker-style
// JSON policies are refused: they have no place for sandgate's rules.
// Returns the new file's SHA-256, or every diagnostic of the would-be file.
boost::system::result<std::string, Diagnostics> edit_policy_file(const std::string& path, const PolicyEdit& edit);

}  // namespace sandgate::config
