// RFC 9110 5.6.2's token characters (methods, field names, protocol names).
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

}  // namespace sandgate::proxy::detail
