#include "json_line.h"

#include <arpa/inet.h>

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

// Not zeroed: a page of a fresh buffer costs memory only once it is written.
void LineBuffer::grow(std::size_t n) {
  std::size_t cap = capacity_ ? capacity_ : 4096;
  while (cap - size_ < n) cap *= 2;
  auto bigger = std::make_unique_for_overwrite<char[]>(cap);
  if (size_) std::memcpy(bigger.get(), data_.get(), size_);
  data_ = std::move(bigger);
  capacity_ = cap;
}

void LineBuffer::shrink(std::size_t keep) {
  if (capacity_ <= size_ + keep) return;
  auto smaller = std::make_unique_for_overwrite<char[]>(size_ + keep);
  if (size_) std::memcpy(smaller.get(), data_.get(), size_);
  data_ = std::move(smaller);
  capacity_ = size_ + keep;
}

JsonLine& JsonLine::string(std::string_view v) {
  // Common case: printable ASCII with nothing to escape. One flag, no early
  // exit, so the compiler checks many bytes at a time.
  bool special = false;
  for (char ch : v) {
    const auto c = static_cast<unsigned char>(ch);
    special |= (c < 0x20) | (c >= 0x7f) | (c == '"') | (c == '\\');
  }
  if (!special) {
    char* p = out_.reserve(v.size() + 2);
    *p++ = '"';
    p = LineBuffer::put(p, v);
    *p++ = '"';
    out_.commit(p);
    return *this;
  }
  bool ascii = true;
  for (char ch : v) ascii &= static_cast<unsigned char>(ch) < 0x80;
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
  while (!sr_.done()) out_.append(sr_.read(buf));
  return *this;
}

JsonLine& JsonLine::address(const policy::Address& a, int port) {
  char buf[64];
  char* p = buf;
  *p++ = '"';
  if (a.is_v4()) {
    const std::uint32_t v = a.v4();
    for (int shift = 24; shift >= 0; shift -= 8) {
      p = std::to_chars(p, buf + sizeof buf, (v >> shift) & 255).ptr;
      if (shift) *p++ = '.';
    }
  } else {
    std::uint8_t b[16];
    for (int i = 0; i < 8; ++i) {
      b[i] = static_cast<std::uint8_t>(a.hi >> (56 - 8 * i));
      b[8 + i] = static_cast<std::uint8_t>(a.lo >> (56 - 8 * i));
    }
    if (port >= 0) *p++ = '[';
    inet_ntop(AF_INET6, b, p, static_cast<socklen_t>(buf + sizeof buf - p));
    p += std::char_traits<char>::length(p);
    if (port >= 0) *p++ = ']';
  }
  if (port >= 0) {
    *p++ = ':';
    p = std::to_chars(p, buf + sizeof buf, port).ptr;
  }
  *p++ = '"';
  out_.append(std::string_view(buf, static_cast<std::size_t>(p - buf)));
  return *this;
}

}  // namespace sandgate::netlog::detail
