// Policy files: sandgate's YAML and Docker's proxy-config.json, loaded,
// validated, linted and compiled into immutable policies.
//
// docs/policy.md is the schema. Every error and warning names file, line and
// column (1-based), the key and how to fix it; one load reports all of them.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <boost/system/result.hpp>

#include "sandgate/policy/policy.h"

namespace sandgate::config {

enum class Severity : std::uint8_t { error, warning };

struct Diagnostic {
  Severity severity = Severity::error;
  std::string file;
  std::uint32_t line = 0;    // 1-based; 0 when it concerns the whole file
  std::uint32_t column = 0;  // 1-based
  std::string message;
  // "policy.yaml:12:7: error: allow_hosts[2]: ..."
  std::string to_string() const;
};
using Diagnostics = std::vector<Diagnostic>;
[[noreturn]] void throw_exception_from_error(const Diagnostics& d, const boost::source_location& loc);

enum class Format : std::uint8_t { yaml, docker_json };
// By extension: ".json" is Docker's proxy-config.json, anything else YAML.
Format format_for_path(std::string_view path) noexcept;

struct LoadOptions {
  bool forbid_report = false;  // fleet-wide: refuse `report: true`
};

// One loaded file: its default policy and the named policies of sandboxes.
struct PolicySet {
  std::string file;
  std::string sha256;  // hex digest of the file's bytes, for the log
  std::shared_ptr<const policy::Policy> default_policy;
  std::map<std::string, std::shared_ptr<const policy::Policy>, std::less<>> named;
  Diagnostics warnings;

  // The named policy of a sandbox, or the default one.
  const std::shared_ptr<const policy::Policy>& for_sandbox(std::string_view name) const;
};

using LoadResult = boost::system::result<PolicySet, Diagnostics>;

// Reads and loads a file; the format comes from its extension.
LoadResult load_policy_file(const std::string& path, const LoadOptions& options = {});
// Loads text already in memory; file_name is used in diagnostics.
LoadResult load_policy_text(std::string_view text, const std::string& file_name, Format format,
                            const LoadOptions& options = {});

// The bytes of a file the proxy loads (a policy, a hosts file), or why they
// cannot be read (its message: "Is a directory", "Permission denied").
boost::system::result<std::string> read_whole_file(const std::string& path);
// The hex SHA-256 by which the log names a file it loaded (`sha256` of a
// policy, of a hosts file).
std::string sha256_hex(std::string_view data);

}  // namespace sandgate::config
