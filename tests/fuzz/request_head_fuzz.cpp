// The proxy's request-head checks and Beast's parser on arbitrary bytes: no
// crash, and an accepted head never carries two framings. Then the check of
// a request inside a tunnel: one it lets through names the tunnel's target
// in its Host, and a 101's Upgrade that lets a tunnel go opaque names no
// protocol (h2c, TLS) that would hide its requests' hosts. The fields come
// from a HeadArena, as in the proxy (each run reuses the block the last one
// gave back, poisoned in between under ASan).
#include <boost/beast/http/field.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "head_check.h"
#include "sandgate/policy/target.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view head(reinterpret_cast<const char*>(data), size);
  using namespace sandgate::proxy::detail;
  const HeadArena heads;
  const auto owned = make_parser<RequestParser>(heads.allocator());
  auto& parser = *owned;
  parser.header_limit(16 * 1024);
  parser.body_limit(boost::none);
  if (parse_request_head(head, 100, parser).status == 0) {
    const auto& req = parser.get();
    const bool cl = req.find(boost::beast::http::field::content_length) != req.end();
    const bool te = req.find(boost::beast::http::field::transfer_encoding) != req.end();
    if (cl && te) __builtin_trap();
    // A name and an IPv6 address, which a Host writes in brackets.
    for (const std::string_view target : {"origin.test", "::1"}) {
      if (!tunnel_request_refusal(req, target, 80).why.empty()) continue;
      const auto host = req.find(boost::beast::http::field::host);
      if (host == req.end()) __builtin_trap();
      const auto named = sandgate::policy::parse_target(host->value(), 80);
      if (!named || named->host != target || named->port != 80) __builtin_trap();
    }
    // A 101's Upgrade value: one that lets the tunnel go opaque names some
    // protocol, and none of them h2c or TLS.
    if (const auto upgrade = req.find(boost::beast::http::field::upgrade); upgrade != req.end()) {
      const std::string_view value = upgrade->value();
      if (!switches_out_of_sight(value)) {
        std::string lower(value);
        for (auto& c : lower) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c | 0x20 : c);
        for (std::string_view protocol; !lower.empty();) {
          const auto comma = lower.find(',');
          protocol = std::string_view(lower).substr(0, comma);
          while (!protocol.empty() && (protocol.front() == ' ' || protocol.front() == '\t')) protocol.remove_prefix(1);
          if (protocol.starts_with("h2c") && (protocol.size() == 3 || protocol[3] == '/' || protocol[3] == ' ' ||
                                               protocol[3] == '\t'))
            __builtin_trap();
          if (protocol.starts_with("tls") && (protocol.size() == 3 || protocol[3] == '/' || protocol[3] == ' ' ||
                                               protocol[3] == '\t'))
            __builtin_trap();
          lower = comma == std::string::npos ? std::string() : lower.substr(comma + 1);
        }
      }
    }
  }
  return 0;
}
