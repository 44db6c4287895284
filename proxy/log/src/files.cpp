#include "files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/json/parse.hpp>

#include <cerrno>
#include <cstring>
#include <filesystem>

namespace sandgate::netlog::detail {

boost::system::result<Tail, std::string> read_tail(const std::string& path) {
  Tail t;
  std::copy(genesis.begin(), genesis.end(), t.last_hash.begin());
  const int f = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f < 0) {
    if (errno == ENOENT) return t;
    return "cannot read the log " + path + ": " + std::strerror(errno);
  }
  // Invariant: f is closed on every path below.
  struct stat st {};
  ::fstat(f, &st);
  const auto size = static_cast<std::uint64_t>(st.st_size);
  const std::uint64_t window = std::min<std::uint64_t>(size, 4u << 20);
  std::string buf(window, '\0');
  const auto n = ::pread(f, buf.data(), window, static_cast<off_t>(size - window));
  ::close(f);
  if (n != static_cast<ssize_t>(window)) return "cannot read the end of the log " + path;
  if (buf.empty()) return t;
  t.torn = buf.back() != '\n';
  const auto end = buf.rfind('\n');
  if (end == std::string::npos) return t;  // one torn line and nothing before it
  const auto before = end == 0 ? std::string::npos : buf.rfind('\n', end - 1);
  const auto start = before == std::string::npos ? 0 : before + 1;
  const std::string_view line(buf.data() + start, end - start);
  Sha256 sha;
  t.last_hash = to_hex(sha.digest(line));
  boost::system::error_code ec;
  const auto v = boost::json::parse(line, ec);
  if (!ec && v.is_object())
    if (const auto* seq = v.as_object().if_contains("seq"); seq && seq->is_int64())
      t.last_seq = static_cast<std::uint64_t>(seq->as_int64());
  return t;
}

std::string rotate_siblings(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  auto numbered = [&](unsigned i, bool gz) { return path + "." + std::to_string(i) + (gz ? ".gz" : ""); };
  unsigned highest = 0;
  while (fs::exists(numbered(highest + 1, false), ec) || fs::exists(numbered(highest + 1, true), ec)) ++highest;
  for (unsigned i = highest; i >= 1; --i)
    for (bool gz : {false, true})
      if (fs::exists(numbered(i, gz), ec)) fs::rename(numbered(i, gz), numbered(i + 1, gz), ec);
  fs::rename(path, numbered(1, false), ec);
  return fs::path(numbered(1, false)).filename().string();
}

}  // namespace sandgate::netlog::detail
