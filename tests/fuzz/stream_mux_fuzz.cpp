// The host's end of a guest's network port on arbitrary frames: the guest
// is untrusted, and the supervisor parses whatever it sends. No crash, no
// hang, and no stream's buffer past its window.
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "sandgate/vmm/stream_mux.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  int port[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, port) != 0) return 0;
  // The guest's side: everything it sends, then EOF (inputs are far below
  // the socket buffer, so this never blocks).
  for (std::size_t done = 0; done < size;) {
    const ssize_t n = ::write(port[1], data + done, size - done);
    if (n <= 0) break;
    done += static_cast<std::size_t>(n);
  }
  ::shutdown(port[1], SHUT_WR);
  // Each stream the guest opens is dialed to one end of a socket pair, whose
  // other end nobody reads: the mux must stay within its window regardless.
  std::vector<int> far_ends;
  {
    sandgate::vmm::StreamMux mux(port[0], -1, [&] {
      int pair[2];
      if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) return -1;
      far_ends.push_back(pair[1]);
      return pair[0];
    });
    mux.run({});  // returns at the port's EOF
  }
  for (int fd : far_ends) ::close(fd);
  ::close(port[0]);
  ::close(port[1]);
  return 0;
}
