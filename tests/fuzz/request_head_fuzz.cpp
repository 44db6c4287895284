// The proxy's request-head checks and Beast's parser on arbitrary bytes: no
// crash, and an accepted head never carries two framings. Then the check of
// a request inside a tunnel: one it lets through names the tunnel's target
// in its Host. The fields come
// from a HeadArena, as in the proxy (each run reuses the block the last one
// gave back, poisoned in between under ASan).
#include <boost/beast/http/field.hpp>

#include <cstddef>
#include <cstdint>
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
  }
  return 0;
}
