#include "answers.h"

#include <boost/beast/http/status.hpp>

#include <cstdio>
#include <ctime>

namespace sandgate::proxy::detail {
namespace {

// The standard reason phrase (RFC 9110 15), from Beast's table.
std::string_view status_text(int status) {
  const auto text = boost::beast::http::obsolete_reason(static_cast<boost::beast::http::status>(status));
  return {text.data(), text.size()};
}

std::string respond(int status, std::string_view code, const std::string& body, int retry_after) {
  std::string out = "HTTP/1.1 " + std::to_string(status) + " " + std::string(status_text(status)) + "\r\n";
  out += "Date: " + http_date() + "\r\n";
  out += "X-Proxy-Error: " + std::string(code) + "\r\n";
  out += "Content-Type: text/plain; charset=utf-8\r\n";
  if (retry_after > 0) out += "Retry-After: " + std::to_string(retry_after) + "\r\n";
  out += "Connection: close\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n";
  return out + body;
}

// The "to allow:" line(s) for a denial of t.
std::string how_to_allow(const policy::Decision& d, const policy::Target& t, std::string_view sandbox) {
  const std::string name = sandbox.empty() ? "SANDBOX" : std::string(sandbox);
  if (d.reason == policy::Reason::blocked_by_default_cidr || d.reason == policy::Reason::dns_mixed_answer)
    return "to allow: only an exact host:port rule reaches this private or reserved address:\n"
           "          sandgate network proxy " + name + " --allow-host " + policy::authority(t) + "\n";
  if (d.reason == policy::Reason::blocked_by_cidr) return "to allow: remove the block_cidrs rule above, or narrow it\n";
  return "to allow: sandgate network proxy " + name + " --allow-host " + policy::authority(t) + "\n";
}

}  // namespace

std::string http_date() {
  // Spelled out rather than strftime's %a and %b, which follow the locale.
  static constexpr const char* days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr const char* months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                           "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  const std::time_t now = std::time(nullptr);
  std::tm t{};
  gmtime_r(&now, &t);
  char text[40];
  std::snprintf(text, sizeof text, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[t.tm_wday], t.tm_mday,
                months[t.tm_mon], t.tm_year + 1900, t.tm_hour, t.tm_min, t.tm_sec);
  return text;
}

std::string blocked_answer(const policy::Policy& p, const policy::Decision& d, const policy::Target& t,
                           std::string_view sandbox, std::string_view policy_file) {
  const auto* rule = p.rule(d.rule);
  std::string body = "sandgate blocked this connection: it is policy, not a network failure.\n";
  body += "target:   " + policy::authority(t) + "\n";
  if (d.phase == policy::Phase::address) body += "address:  " + d.address.to_string() + "\n";
  body += "reason:   " + std::string(policy::to_string(d.reason)) + "\n";
  if (rule) {
    body += "rule:     " + std::string(policy::to_string(rule->action)) + " " + rule->text + " (" +
            rule->source.to_string() + ")\n";
  } else {
    body += "rule:     <default policy: mode " + std::string(policy::to_string(p.mode())) + ">\n";
  }
  body += "policy:   " + std::string(policy_file) + "\n";
  body += how_to_allow(d, t, sandbox);
  return respond(403, policy::to_string(d.reason), body, 0);
}

std::string tunnel_host_answer(const policy::Policy& p, const policy::Target& tunnel, const policy::Target& named,
                               std::string_view why, std::string_view sandbox, std::string_view policy_file) {
  const auto to = policy::authority(named);
  std::string body = "sandgate refused a request inside a tunnel: it is policy, not a network failure.\n";
  body += "tunnel:   " + policy::authority(tunnel) + " (allowed)\n";
  body += "request:  names " + to + "\n";
  body += "why:      " + std::string(why) + ", else a front end that routes by name would take it there\n";
  // An address is decided whole; a name by its host phase only (its own
  // request would resolve it and check every address too).
  const policy::Address literal[] = {named.address.value_or(policy::Address{})};
  const auto d = named.address ? p.check(named, literal) : p.check_host(named);
  const auto* rule = p.rule(d.rule);
  const std::string by = rule ? std::string(policy::to_string(rule->action)) + " " + rule->text + " (" +
                                    rule->source.to_string() + ")"
                              : "<default policy: mode " + std::string(policy::to_string(p.mode())) + ">";
  if (d.verdict == policy::Verdict::deny) {
    body += "policy:   " + to + " is blocked (" + std::string(policy::to_string(d.reason)) + ") by " + by + "\n";
    body += how_to_allow(d, named, sandbox);
  } else {
    body += "policy:   " + to + (named.address ? " is allowed, by " + by + "\n"
                                                   : " passes the host phase, by " + by +
                                                         "; its addresses are checked when dialed\n");
  }
  body += "to reach: open a tunnel to it (CONNECT " + to + "), or send GET http://" + to + "/PATH to the proxy\n";
  body += "policy file: " + std::string(policy_file) + "\n";
  return respond(403, "host-mismatch", body, 0);
}

std::string error_answer(int status, std::string_view code, std::string_view message, int retry_after_seconds) {
  return respond(status, code, "sandgate: " + std::string(message) + "\n", retry_after_seconds);
}

}  // namespace sandgate::proxy::detail
