#include <algorithm>
#include <stdexcept>

#include "policy_input.h"

namespace sandgate::config {

std::string Diagnostic::to_string() const {
  std::string s = file;
  if (line) s += ":" + std::to_string(line) + ":" + std::to_string(column);
  s += severity == Severity::error ? ": error: " : ": warning: ";
  return s + message;
}

void throw_exception_from_error(const Diagnostics& d, const boost::source_location&) {
  throw std::runtime_error(d.empty() ? "policy error" : d.front().to_string());
}

namespace detail {

void Reporter::add(Severity s, const YAML::Mark& m, std::string msg) {
  add(s, source(m), std::move(msg));
}

void Reporter::add(Severity s, const policy::RuleSource& at, std::string msg) {
  Diagnostic d{s, file_, at.line, at.column, std::move(msg)};
  // Named policies share the default's rules; say each thing once.
  for (const auto& e : out_)
    if (e.line == d.line && e.column == d.column && e.message == d.message) return;
  out_.push_back(std::move(d));
}

policy::RuleSource Reporter::source(const YAML::Mark& m) const {
  if (m.is_null()) return {file_, 0, 0};
  return {file_, static_cast<std::uint32_t>(m.line + 1), static_cast<std::uint32_t>(m.column + 1)};
}

bool Reporter::has_errors() const noexcept {
  return std::any_of(out_.begin(), out_.end(), [](const Diagnostic& d) { return d.severity == Severity::error; });
}

std::string suggest_key(std::string_view unknown, const std::vector<std::string_view>& known) {
  // Levenshtein distance; keys are short, so the table is tiny.
  auto distance = [](std::string_view a, std::string_view b) {
    std::vector<std::size_t> row(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
      std::size_t diag = row[0];
      row[0] = i;
      for (std::size_t j = 1; j <= b.size(); ++j) {
        const std::size_t up = row[j];
        row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
        diag = up;
      }
    }
    return row[b.size()];
  };
  std::string best;
  std::size_t best_d = 3;  // suggest only near misses
  for (auto k : known) {
    const auto d = distance(unknown, k);
    if (d < best_d) {
      best_d = d;
      best = k;
    }
  }
  return best;
}

}  // namespace detail
}  // namespace sandgate::config
