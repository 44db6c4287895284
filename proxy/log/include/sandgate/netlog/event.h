// What the proxy hands the network log: one fixed-size event per decision
// or closed connection, filled in place in a queue slot (no allocation).
// The writer's threads turn events into JSON lines; docs/log.md is the schema.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <memory>
#include <string_view>

#include "sandgate/config/policy_file.h"
#include "sandgate/policy/policy.h"

namespace sandgate::netlog {

// Text of bounded size held inline; longer input is cut (and marked so).
template <std::size_t N>
struct FixedText {
  std::uint16_t size = 0;
  bool cut = false;
  std::array<char, N> data;

  void assign(std::string_view s) noexcept {
    cut = s.size() > N;
    size = static_cast<std::uint16_t>(std::min(s.size(), N));
    std::copy_n(s.data(), size, data.data());
  }
  std::string_view view() const noexcept { return {data.data(), size}; }
};

// Who a connection belongs to: the listener it came in on and its sandbox.
// Registered once with the writer (Writer::add_source); events point at it.
struct Source {
  std::string sandbox;   // "" for the default policy
  std::string listener;  // "127.0.0.1:3128", "unix:/run/sandgate/a.sock"
};

enum class ProxyType : std::uint8_t { connect, http };

// Why an allowed connection ended.
enum class EndReason : std::uint8_t {
  complete,        // plain HTTP: the exchange finished
  client_close,    // the client closed
  upstream_close,  // the origin closed
  idle_timeout,
  reload,          // a policy reload denied the open tunnel
  shutdown,        // the proxy stopped while it was open
  sni_mismatch,    // the TLS ClientHello named another host
  request_refused, // an HTTP request in the tunnel was refused (its Host named another host, say)
  error,           // a read or write failed
};
std::string_view to_string(EndReason r) noexcept;

// The verdict a decision record carries: the policy's (allow, deny, report),
// or "error" when the proxy refused for another reason (status >= 400 but
// not 403) or before any decision.
inline std::string_view outcome(bool decided, policy::Verdict v, std::uint16_t status) noexcept {
  if ((status >= 400 && status != 403) || !decided) return "error";
  return policy::to_string(v);
}

// The reason code a decision record carries: the proxy's error code when it
// refused for a reason other than policy, else the policy's reason
// ("bad-request" when the request never reached a decision).
inline std::string_view reason_code(bool decided, policy::Reason r, std::uint16_t status, const char* error) noexcept {
  if (status >= 400 && status != 403 && error) return error;
  return decided ? policy::to_string(r) : std::string_view("bad-request");
}
std::string_view to_string(ProxyType t) noexcept;

struct Event {
  enum class Kind : std::uint8_t { decision, close };
  static constexpr std::size_t max_addresses = 8;

  Kind kind = Kind::decision;
  std::uint64_t id = 0;       // the decision's id; a close event repeats it
  std::int64_t time_us = 0;   // system clock, microseconds since the epoch
  const Source* source = nullptr;
  policy::Address client{};   // the client's address, when it came over TCP
  std::uint16_t client_port = 0;
  bool client_is_ip = false;

  // --- decision ---
  ProxyType proxy_type = ProxyType::connect;
  FixedText<16> method;          // plain HTTP only
  FixedText<260> requested;      // the authority as the client wrote it
  FixedText<256> host;           // normalized; empty when the request did not parse
  std::uint16_t port = 0;
  std::array<policy::Address, max_addresses> addresses{};  // the answer that was checked
  std::uint8_t address_count = 0;
  std::uint8_t addresses_cut = 0;  // how many more the answer had
  bool has_used = false;
  policy::Address used{};       // the address dialed
  bool decided = false;         // a policy decision was reached (else: refused before it)
  policy::Decision decision{};
  // The policy that decided, kept alive until the writer has named its rule.
  std::shared_ptr<const config::PolicySet> policy_set;
  const policy::Policy* policy = nullptr;
  std::uint16_t status = 0;        // the proxy's own answer (403, 400, 502, ...); 0 when forwarded
  const char* error = nullptr;     // its X-Proxy-Error code (a string literal), when it refused
  std::int64_t dns_us = -1;        // -1: no lookup (literal, pinned or cached)
  std::int64_t connect_us = -1;    // -1: not dialed

  // --- close ---
  std::uint64_t bytes_up = 0;    // client to origin
  std::uint64_t bytes_down = 0;  // origin to client
  std::int64_t duration_us = 0;
  EndReason end = EndReason::client_close;
  std::uint16_t http_status = 0;  // the origin's status, plain HTTP
};

}  // namespace sandgate::netlog
