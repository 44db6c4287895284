// The proxy's own answers: one stable schema for every refusal or failure.
//   status line, Date, X-Proxy-Error: <code>, Content-Type: text/plain,
//   Connection: close, and a body an agent can act on.
#pragma once

#include <string>
#include <string_view>

#include "sandgate/policy/policy.h"

namespace sandgate::proxy::detail {

// 403 for a policy decision: what was blocked, the deciding rule and where
// it is written, that this is policy and not a network fault, and the
// command that would allow it.
std::string blocked_answer(const policy::Policy& p, const policy::Decision& d, const policy::Target& t,
                           std::string_view sandbox, std::string_view policy_file);

// 403 for a request inside a CONNECT tunnel that names another host than
// the tunnel's (X-Proxy-Error: host-mismatch): why, what the policy's host
// phase says of the host it names, and how to reach that host properly.
std::string tunnel_host_answer(const policy::Policy& p, const policy::Target& tunnel, const policy::Target& named,
                               std::string_view why, std::string_view sandbox, std::string_view policy_file);

// The current time as an HTTP Date field value (IMF-fixdate, RFC 9110 5.6.7):
// the proxy's own answers carry one (6.6.1).
std::string http_date();

// Any other refusal: status 400, 429, 502, 503 or 504, an X-Proxy-Error code
// ("bad-request", "dns-failure", ...) and a sentence saying what to do.
std::string error_answer(int status, std::string_view code, std::string_view message,
                         int retry_after_seconds = 0);

}  // namespace sandgate::proxy::detail
