#include "metrics.h"

#include <algorithm>
#include <cstdio>

namespace sandgate::proxy::detail {

std::size_t reason_index(std::string_view code) noexcept {
  const auto it = std::find(reason_codes.begin(), reason_codes.end(), code);
  return it == reason_codes.end() ? reason_codes.size() - 1 : static_cast<std::size_t>(it - reason_codes.begin());
}

std::size_t verdict_index(std::string_view verdict) noexcept {
  const auto it = std::find(verdicts.begin(), verdicts.end(), verdict);
  return it == verdicts.end() ? verdicts.size() - 1 : static_cast<std::size_t>(it - verdicts.begin());
}

void Histogram::observe(std::int64_t us) noexcept {
  const double s = static_cast<double>(us) / 1e6;
  std::size_t i = 0;
  while (i < bounds.size() && s > bounds[i]) ++i;
  buckets[i].fetch_add(1, std::memory_order_relaxed);
  sum_us.fetch_add(static_cast<std::uint64_t>(std::max<std::int64_t>(us, 0)), std::memory_order_relaxed);
}

void append_histogram(std::string& out, std::string_view name, std::string_view help,
                      const std::vector<const Histogram*>& parts) {
  const std::string n(name);
  out += "# HELP " + n + " " + std::string(help) + "\n# TYPE " + n + " histogram\n";
  std::uint64_t cumulative = 0, sum_us = 0;
  for (std::size_t i = 0; i <= Histogram::bounds.size(); ++i) {
    for (const auto* h : parts) cumulative += h->buckets[i].load(std::memory_order_relaxed);
    char le[32];
    if (i < Histogram::bounds.size()) std::snprintf(le, sizeof le, "%g", Histogram::bounds[i]);
    else std::snprintf(le, sizeof le, "+Inf");
    out += n + "_bucket{le=\"" + le + "\"} " + std::to_string(cumulative) + "\n";
  }
  for (const auto* h : parts) sum_us += h->sum_us.load(std::memory_order_relaxed);
  char sum[48];
  std::snprintf(sum, sizeof sum, "%.6f", static_cast<double>(sum_us) / 1e6);
  out += n + "_sum " + sum + "\n" + n + "_count " + std::to_string(cumulative) + "\n";
}

}  // namespace sandgate::proxy::detail
