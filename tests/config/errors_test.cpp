// One file per config error in testdata/errors/: each states the exact
// diagnostic it must produce (file:line:column and message) and nothing may
// load. YAML files carry "# expect: ..." on their first line; others have a
// NAME.expect file beside them. A ".forbid" suffix loads with --forbid-report.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "sandgate/config/policy_file.h"

namespace sandgate::config {
namespace {

namespace fs = std::filesystem;

std::string read_first_line(const fs::path& p) {
  std::ifstream f(p);
  std::string line;
  std::getline(f, line);
  return line;
}

TEST(ConfigErrors, EachFileGivesItsExactDiagnostic) {
  const fs::path dir = fs::path(SANDGATE_TESTDATA) / "config/testdata/errors";
  int files = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const auto path = entry.path();
    if (path.extension() == ".expect") continue;
    SCOPED_TRACE(path.filename().string());
    ++files;
    std::string expect = read_first_line(path);
    if (expect.starts_with("# expect: ")) expect = expect.substr(10);
    else expect = read_first_line(path.string() + ".expect");
    ASSERT_FALSE(expect.empty()) << "no expectation for " << path;

    LoadOptions options;
    options.forbid_report = path.extension() == ".forbid";
    std::ifstream f(path);
    const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    const auto format = path.extension() == ".json" ? Format::docker_json : Format::yaml;
    auto r = load_policy_text(text, "p", format, options);
    ASSERT_FALSE(r) << "loaded, but must fail";
    const Diagnostics errors = r.error();  // result::error() returns a copy
    ASSERT_FALSE(errors.empty());
    const auto& d = errors.front();
    EXPECT_EQ(d.severity, Severity::error);
    // The expectation may stop early (multi-line messages); it must be a prefix.
    const std::string got = d.to_string();
    EXPECT_EQ(got.substr(0, std::min(got.size(), expect.size() + 2)), "p:" + expect) << got;
  }
  EXPECT_GE(files, 30);
}

TEST(ConfigErrors, AllErrorsInOnePass) {
  const char* text = R"(version: 1
mode: deny
allow_hosts:
  - api.*.example.com
  - "*.com"
block_cidrs:
  - 10.0.0.0/99
colour: blue
)";
  auto r = load_policy_text(text, "p.yaml", Format::yaml);
  ASSERT_FALSE(r);
  ASSERT_EQ(r.error().size(), 4u);
  EXPECT_EQ(r.error()[0].line, 4u);
  EXPECT_EQ(r.error()[1].line, 5u);
  EXPECT_EQ(r.error()[2].line, 7u);
  EXPECT_EQ(r.error()[3].line, 8u);
  EXPECT_EQ(r.error()[3].column, 1u);
}

TEST(ConfigErrors, MissingFileSaysWhy) {
  auto r = load_policy_file("/nonexistent/policy.yaml");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().front().to_string(),
            "/nonexistent/policy.yaml: error: cannot read the policy file: No such file or directory");
  // A folder opens, then reads as nothing: not "an empty policy" (it was
  // read as one, and got "expected a map at the top level").
  const auto folder = fs::temp_directory_path();
  auto d = load_policy_file(folder.string());
  ASSERT_FALSE(d);
  EXPECT_EQ(d.error().front().to_string(), folder.string() + ": error: cannot read the policy file: Is a directory");
}

}  // namespace
}  // namespace sandgate::config
