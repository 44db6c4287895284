// Running out of file descriptors: how the proxy tells, and the one it
// keeps in reserve so that it can still answer when it does.
#pragma once

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>

#include <boost/system/error_code.hpp>

namespace sandgate::proxy::detail {

// One descriptor held in reserve (an eventfd): when accept(2) finds none
// free, letting it go lets the thread take the connection and answer 503
// rather than leave the client waiting in the listen queue.
class SpareDescriptor {
 public:
  SpareDescriptor() { take(); }
  ~SpareDescriptor() { release(); }
  SpareDescriptor(const SpareDescriptor&) = delete;
  SpareDescriptor& operator=(const SpareDescriptor&) = delete;
  bool held() const noexcept { return fd_ >= 0; }
  // Takes one if none is held (it may fail while descriptors are short).
  void take() noexcept {
    if (fd_ < 0) fd_ = ::eventfd(0, EFD_CLOEXEC);
  }
  void release() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

// Whether an error says the process (or system) has no descriptor free.
inline bool out_of_descriptors(int error) noexcept { return error == EMFILE || error == ENFILE; }
inline bool out_of_descriptors(const boost::system::error_code& ec) noexcept {
  return ec == boost::system::errc::too_many_files_open || ec == boost::system::errc::too_many_files_open_in_system;
}

// Says on stderr that the process is out of descriptors, at most every 10 s
// (from any thread).
void warn_out_of_descriptors();

}  // namespace sandgate::proxy::detail
