// Appends one JSON object's members to a line buffer. Keys are our own
// literals; string values are escaped by Boost.JSON's serializer (bytes
// that are not valid UTF-8 become '?', so every line parses).
//
// The writer formats about a million members a second, so the buffer is a
// plain byte array: each member reserves its worst case once and writes
// through a pointer, instead of one bounds-checked append per piece.
#pragma once

#include <charconv>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>

#include <boost/json/serializer.hpp>

#include "sandgate/policy/address.h"

namespace sandgate::netlog::detail {

class LineBuffer {
 public:
  // Room for n more bytes; write them, then commit() the end pointer.
  char* reserve(std::size_t n) {
    if (capacity_ - size_ < n) grow(n);
    return data_.get() + size_;
  }
  void commit(const char* end) noexcept { size_ = static_cast<std::size_t>(end - data_.get()); }
  void append(std::string_view s) { commit(put(reserve(s.size()), s)); }

  std::string_view view() const noexcept { return {data_.get(), size_}; }
  const char* data() const noexcept { return data_.get(); }
  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  std::size_t capacity() const noexcept { return capacity_; }
  // Drops the first n bytes (those written to the file).
  void consume(std::size_t n) noexcept {
    if (n < size_) std::memmove(data_.get(), data_.get() + n, size_ - n);
    size_ -= n < size_ ? n : size_;
  }
  // Gives memory back after a burst, keeping `keep` bytes of room.
  void shrink(std::size_t keep);

  static char* put(char* p, std::string_view s) noexcept {
    std::memcpy(p, s.data(), s.size());
    return p + s.size();
  }

 private:
  void grow(std::size_t n);

  std::unique_ptr<char[]> data_;
  std::size_t size_ = 0;
  std::size_t capacity_ = 0;
};

class JsonLine {
 public:
  explicit JsonLine(LineBuffer& out) : out_(out) {}

  // ,"name":  (the object's first member is written by the caller)
  JsonLine& key(std::string_view name) {
    out_.commit(put_key(out_.reserve(name.size() + 4), name));
    return *this;
  }
  JsonLine& str(std::string_view name, std::string_view v) { return key(name).string(v); }
  // A value known to need no escaping: our own codes, hex digests, ids.
  JsonLine& code(std::string_view name, std::string_view v) {
    char* p = put_key(out_.reserve(name.size() + v.size() + 6), name);
    *p++ = '"';
    p = LineBuffer::put(p, v);
    *p++ = '"';
    out_.commit(p);
    return *this;
  }
  JsonLine& num(std::string_view name, std::int64_t v) {
    char* p = put_key(out_.reserve(name.size() + 4 + 20), name);
    out_.commit(std::to_chars(p, p + 20, v).ptr);
    return *this;
  }
  JsonLine& boolean(std::string_view name, bool v) { return key(name).raw(v ? "true" : "false"); }
  JsonLine& null(std::string_view name) { return key(name).raw("null"); }

  JsonLine& number(std::int64_t v) {
    char* p = out_.reserve(20);
    out_.commit(std::to_chars(p, p + 20, v).ptr);
    return *this;
  }
  JsonLine& string(std::string_view v);
  // An address as a JSON string, optionally with ":port" ("[v6]:port").
  // IPv4 is formatted here (inet_ntop goes through sprintf); IPv6 by inet_ntop.
  JsonLine& address(const policy::Address& a, int port = -1);
  JsonLine& raw(std::string_view v) {
    out_.append(v);
    return *this;
  }

 private:
  static char* put_key(char* p, std::string_view name) noexcept {
    *p++ = ',';
    *p++ = '"';
    p = LineBuffer::put(p, name);
    *p++ = '"';
    *p++ = ':';
    return p;
  }

  LineBuffer& out_;
  boost::json::serializer sr_;
  std::string scratch_;
};

}  // namespace sandgate::netlog::detail
