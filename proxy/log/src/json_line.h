// Appends one JSON object's members to a line buffer. Keys are our own
// literals; string values are escaped by Boost.JSON's serializer (bytes
// that are not valid UTF-8 become '?', so every line parses).
#pragma once

#include <charconv>
#include <cstdint>
#include <string>
#include <string_view>

#include <boost/json/serializer.hpp>

#include "sandgate/policy/address.h"

namespace sandgate::netlog::detail {

class JsonLine {
 public:
  explicit JsonLine(std::string& out) : out_(out) {}

  // ,"name":  (the object's first member is written by the caller)
  JsonLine& key(std::string_view name) {
    out_ += ",\"";
    out_ += name;
    out_ += "\":";
    return *this;
  }
  JsonLine& str(std::string_view name, std::string_view v) { return key(name).string(v); }
  JsonLine& num(std::string_view name, std::int64_t v) { return key(name).number(v); }
  JsonLine& boolean(std::string_view name, bool v) {
    key(name);
    out_ += v ? "true" : "false";
    return *this;
  }
  JsonLine& null(std::string_view name) {
    key(name);
    out_ += "null";
    return *this;
  }

  JsonLine& number(std::int64_t v) {
    char buf[24];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
    out_.append(buf, end);
    return *this;
  }
  JsonLine& string(std::string_view v);
  // An address as a JSON string, optionally with ":port" ("[v6]:port").
  // IPv4 is formatted here (inet_ntop goes through sprintf); IPv6 by inet_ntop.
  JsonLine& address(const policy::Address& a, int port = -1);
  JsonLine& raw(std::string_view v) {
    out_ += v;
    return *this;
  }

 private:
  std::string& out_;
  boost::json::serializer sr_;
  std::string scratch_;
};

}  // namespace sandgate::netlog::detail
