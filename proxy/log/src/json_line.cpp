#include "json_line.h"

namespace sandgate::netlog::detail {
namespace {

// Length of the valid UTF-8 sequence at s[i], or 0.
std::size_t utf8_length(std::string_view s, std::size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  std::size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
  if (n == 0 || i + n > s.size()) return 0;
  for (std::size_t k = 1; k < n; ++k)
    if ((static_cast<unsigned char>(s[i + k]) >> 6) != 2) return 0;
  return n;
}

}  // namespace

JsonLine& JsonLine::string(std::string_view v) {
  // Common case: printable ASCII with nothing to escape.
  bool plain = true;
  bool ascii = true;
  for (char ch : v) {
    const auto c = static_cast<unsigned char>(ch);
    plain &= c >= 0x20 && c < 0x7f && c != '"' && c != '\\';
    ascii &= c < 0x80;
  }
  if (plain) {
    out_ += '"';
    out_ += v;
    out_ += '"';
    return *this;
  }
  if (!ascii) {
    scratch_.clear();
    for (std::size_t i = 0; i < v.size();) {
      const auto n = utf8_length(v, i);
      if (n == 0) {
        scratch_ += '?';
        ++i;
      } else {
        scratch_.append(v.substr(i, n));
        i += n;
      }
    }
    v = scratch_;
  }
  sr_.reset(v);
  char buf[256];
  while (!sr_.done()) out_ += sr_.read(buf);
  return *this;
}

}  // namespace sandgate::netlog::detail
