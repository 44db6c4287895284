// RFC 9110 5.6.2's tokens (methods, field names, protocol names), which
// compare without regard to case.
#pragma once

#include <string_view>

namespace sandgate::proxy::detail {

inline bool is_tchar(char c) noexcept {
  constexpr std::string_view others = "!#$%&'*+-.^_`|~";
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         others.find(c) != std::string_view::npos;
}

// One or more tchars.
inline bool is_token(std::string_view s) noexcept {
  if (s.empty()) return false;
  for (const char c : s)
    if (!is_tchar(c)) return false;
  return true;
}

// Whether s equals `lower` (lower case) but for the case of ASCII letters.
// Not boost::beast::iequals: Boost 1.81's reads a byte past both ends when
// the last characters differ only in case, and s may end a buffer here.
inline bool equals_lower(std::string_view s, std::string_view lower) noexcept {
  if (s.size() != lower.size()) return false;
  for (std::size_t k = 0; k < s.size(); ++k)
    if ((s[k] >= 'A' && s[k] <= 'Z' ? static_cast<char>(s[k] | 0x20) : s[k]) != lower[k]) return false;
  return true;
}

}  // namespace sandgate::proxy::detail
