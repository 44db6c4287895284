#include "targets.h"

#include <boost/url/parse.hpp>

namespace sandgate::cli {

boost::system::result<std::string, std::string> authority_of(std::string_view arg) {
  using boost::system::in_place_error, boost::system::in_place_value;
  namespace urls = boost::urls;
  if (arg.find("://") == std::string_view::npos) return {in_place_value, arg};
  const auto url = urls::parse_absolute_uri(arg);
  // The path check: Boost.URL 1.81 reads "http://1.2.3.4.:80/x" as host
  // 1.2.3.4 and path ".:80/x" (as the proxy, which refuses it).
  if (!url || !url->has_authority() || url->encoded_host().empty() ||
      !(url->encoded_path().empty() || url->encoded_path().starts_with("/")))
    return {in_place_error, "not a URL with a host, as https://host/path"};
  if (url->has_userinfo()) return {in_place_error, "a URL with userinfo (user@host) names its host ambiguously"};
  if (url->has_port()) return {in_place_value, url->encoded_host_and_port()};
  std::uint16_t port = 0;
  switch (url->scheme_id()) {
    case urls::scheme::http:
    case urls::scheme::ws: port = 80; break;
    case urls::scheme::https:
    case urls::scheme::wss: port = 443; break;
    default:
      return {in_place_error, std::string(url->scheme()) + ":// URLs have no port sandgate knows: give host:port"};
  }
  return {in_place_value, std::string(url->encoded_host()) + ":" + std::to_string(port)};
}

}  // namespace sandgate::cli
