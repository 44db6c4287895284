#include "sandgate/config/policy_edit.h"

#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace sandgate::config {
namespace {

// The text of a list entry: a plain string or the host/cidr of a map entry.
std::string entry_text(const YAML::Node& n) {
  if (n.IsScalar()) return n.as<std::string>();
  if (n.IsMap()) {
    if (n["host"]) return n["host"].as<std::string>();
    if (n["cidr"]) return n["cidr"].as<std::string>();
  }
  return {};
}

void add_all(YAML::Node root, const char* key, const std::vector<std::string>& values, const std::string& comment) {
  if (values.empty()) return;
  YAML::Node list = root[key];
  if (!list || list.IsNull()) list = YAML::Node(YAML::NodeType::Sequence);
  for (const auto& v : values) {
    bool present = false;
    for (const auto& e : list) present |= entry_text(e) == v;
    if (present) continue;
    YAML::Node entry;
    entry[std::string(key).ends_with("cidrs") ? "cidr" : "host"] = v;
    if (!comment.empty()) entry["comment"] = comment;
    list.push_back(entry);
  }
  root[key] = list;
}

Diagnostics one_error(const std::string& file, std::string message) {
  Diagnostic d;
  d.file = file;
  d.message = std::move(message);
  return {d};
}

}  // namespace

boost::system::result<std::string, Diagnostics> edit_policy_file(const std::string& path, const PolicyEdit& edit) {
  if (format_for_path(path) == Format::docker_json)
    return one_error(path, "a Docker-style proxy-config.json cannot take sandgate rules; use a YAML policy");
  YAML::Node root;
  if (std::filesystem::exists(path)) {
    try {
      root = YAML::LoadFile(path);
    } catch (const YAML::Exception& e) {
      return one_error(path, std::string("cannot parse: ") + e.what());
    }
  }
  if (!root || root.IsNull()) {
    root = YAML::Node(YAML::NodeType::Map);
    root["version"] = 1;
    root["mode"] = "deny";
  }
  if (!root.IsMap()) return one_error(path, "the policy is not a YAML map");
  if (edit.mode) root["mode"] = std::string(policy::to_string(*edit.mode));
  add_all(root, "allow_hosts", edit.allow_hosts, edit.comment);
  add_all(root, "block_hosts", edit.block_hosts, edit.comment);
  add_all(root, "allow_cidrs", edit.allow_cidrs, edit.comment);
  add_all(root, "block_cidrs", edit.block_cidrs, edit.comment);
  YAML::Emitter out;
  out << root;
  std::string text = std::string(out.c_str()) + "\n";
  // Refuse what would not load: the file on disk stays the last good one.
  auto loaded = load_policy_text(text, path, Format::yaml);
  if (!loaded) return loaded.error();
  const auto tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    f << text;
    if (!f) return one_error(path, "cannot write " + tmp);
  }
  std::error_code ec;
  // The new file is read by whoever read the old one (a sandbox's proxy runs as a user of its own).
  if (const auto was = std::filesystem::status(path, ec); !ec && std::filesystem::exists(was))
    std::filesystem::permissions(tmp, was.permissions(), ec);
  ec.clear();
  std::filesystem::rename(tmp, path, ec);
  if (ec) return one_error(path, "cannot replace the file: " + ec.message());
  return loaded->sha256;
}

}  // namespace sandgate::config
