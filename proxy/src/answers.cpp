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
  const std::string name = sandbox.empty() ? "SANDBOX" : std::string(sandbox);
  if (d.reason == policy::Reason::blocked_by_default_cidr || d.reason == policy::Reason::dns_mixed_answer)
    body += "to allow: only an exact host:port rule reaches this private or reserved address:\n"
            "          sandgate network proxy " + name + " --allow-host " + policy::authority(t) + "\n";
  else if (d.reason == policy::Reason::blocked_by_cidr)
    body += "to allow: remove the block_cidrs rule above, or narrow it\n";
  else
    body += "to allow: sandgate network proxy " + name + " --allow-host " + policy::authority(t) + "\n";
  return respond(403, policy::to_string(d.reason), body, 0);
}

std::string error_answer(int status, std::string_view code, std::string_view message, int retry_after_seconds) {
  return respond(status, code, "sandgate: " + std::string(message) + "\n", retry_after_seconds);
}

}  // namespace sandgate::proxy::detail
