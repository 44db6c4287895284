// A destination as an operator gives it on the command line (`policy
// explain TARGET`, `network proxy --allow-host`).
#pragma once

#include <string>
#include <string_view>

#include <boost/system/result.hpp>

namespace sandgate::cli {

// host[:port] as it is given; a URL, as a client's error shows it, as
// host:port, the port from its scheme when it names none (http and ws 80,
// https and wss 443). Fails with why: another scheme, userinfo, no host.
boost::system::result<std::string, std::string> authority_of(std::string_view arg);

}  // namespace sandgate::cli
