// What the admin listener exports at /metrics: per-thread counters and
// histograms, each written by its own thread only (relaxed atomics), summed
// when scraped. No lock, no allocation on the request path.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "sandgate/netlog/event.h"

namespace sandgate::proxy::detail {

// The reason codes a decision can carry: the policy's, then the proxy's own.
// A code missing here is counted as "other"; the test that compares the
// metrics with the log finds it.
inline constexpr std::array<std::string_view, 22> reason_codes = {
    "allowed-by-rule", "allowed-by-default", "allowed-by-cidr", "blocked-by-denylist", "blocked-by-default",
    "blocked-by-cidr", "blocked-by-default-cidr", "dns-mixed-answer", "no-address", "bad-request",
    "header-too-large", "http-version-not-supported", "dns-failure", "dns-timeout", "connect-failed",
    "connect-timeout", "out-of-descriptors", "too-many-tunnels", "too-many-connections", "bad-upstream-response",
    "upstream-timeout", "other"};
inline constexpr std::array<std::string_view, 4> verdicts = {"allow", "deny", "report", "error"};
// Connections refused when accepted, before any request: no decision record.
enum class AcceptRefusal : std::uint8_t { too_many_connections, too_many_client_connections, out_of_descriptors };
inline constexpr std::array<std::string_view, 3> accept_refusals = {  // by AcceptRefusal
    "too-many-connections", "too-many-client-connections", "out-of-descriptors"};
inline constexpr std::size_t end_reason_count = static_cast<std::size_t>(netlog::EndReason::error) + 1;

std::size_t reason_index(std::string_view code) noexcept;
std::size_t verdict_index(std::string_view verdict) noexcept;

// A Prometheus histogram of durations, in fixed buckets (seconds).
struct Histogram {
  static constexpr std::array<double, 14> bounds = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                                    0.025,  0.05,    0.1,    0.25,  0.5,    1,     5};
  std::array<std::atomic<std::uint64_t>, bounds.size() + 1> buckets{};  // the last is +Inf
  std::atomic<std::uint64_t> sum_us{0};
  void observe(std::int64_t us) noexcept;
};

struct Metrics {
  std::array<std::atomic<std::uint64_t>, verdicts.size() * reason_codes.size()> decisions{};
  std::atomic<std::uint64_t> bytes_up{0}, bytes_down{0};
  Histogram decision_seconds;  // head parsed to verdict (DNS included)
  Histogram connect_seconds;   // dialing the checked addresses

  std::array<std::atomic<std::uint64_t>, end_reason_count> closes{};  // by the close record's end
  std::array<std::atomic<std::uint64_t>, accept_refusals.size()> refused{};  // by AcceptRefusal

  void refused_on_accept(AcceptRefusal why) noexcept {
    refused[static_cast<std::size_t>(why)].fetch_add(1, std::memory_order_relaxed);
  }
  void closed(netlog::EndReason end) noexcept {
    closes[static_cast<std::size_t>(end)].fetch_add(1, std::memory_order_relaxed);
  }
  void decided(std::string_view verdict, std::string_view reason) noexcept {
    decisions[verdict_index(verdict) * reason_codes.size() + reason_index(reason)].fetch_add(
        1, std::memory_order_relaxed);
  }
};

// Appends the histogram summed over `parts` (one per thread) to `out`, in
// Prometheus text format.
void append_histogram(std::string& out, std::string_view name, std::string_view help,
                      const std::vector<const Histogram*>& parts);

}  // namespace sandgate::proxy::detail
