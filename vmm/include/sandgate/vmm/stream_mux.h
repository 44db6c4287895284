// Many byte streams over one ordered channel: the guest's connections to its
// proxy, carried over the virtio-serial port "net0" to the sandbox's
// supervisor, which hands each to the proxy's listener. No network device,
// and no process per connection.
//
// Frames are agent_protocol.h's, the session field naming the stream:
//   net_open     guest -> host: a client connected (payload empty)
//   net_data     bytes of the stream, either way
//   net_eof      the sender's side read EOF: shut down writing on this side
//   net_close    abort: close the stream now (a failed dial, a reset)
//   net_credit   payload: decimal byte count the receiver has written on;
//                the sender may have at most `window` bytes unacknowledged
// Flow control keeps one slow stream from stalling the others, and the
// channel is never written while it is not also being read, so two muxes
// writing to each other cannot deadlock.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <stop_token>
#include <string>

#include "sandgate/vmm/agent_protocol.h"

namespace sandgate::vmm {

class StreamMux {
 public:
  static constexpr std::size_t window = 256 * 1024;  // unacknowledged bytes per stream and direction
  // Streams open at once; past it a far side's open is refused and the
  // listener waits. With the window this bounds what a guest can make the
  // host hold: at most 256 MiB, and only while the proxy does not read.
  static constexpr std::size_t max_streams = 1024;

  // port: the channel, made non-blocking here. listener: a listening socket
  // whose connections become streams this side opens, or -1. dial: makes the
  // local end of a stream the far side opened; -1 refuses it.
  StreamMux(int port, int listener, std::function<int()> dial);
  StreamMux(const StreamMux&) = delete;
  StreamMux& operator=(const StreamMux&) = delete;

  // Relays until the channel ends (EOF or error) or a stop is requested
  // (checked at least every 200 ms). Every stream is closed when it returns.
  void run(std::stop_token stop);

 private:
  struct Stream {
    int fd = -1;
    std::string out;              // from the far side, not yet written to fd
    bool far_eof = false;         // the far side's EOF arrived: shut down writing once out is empty
    bool near_eof = false;        // fd reached EOF, and the far side was told
    bool shut = false;            // shutdown(SHUT_WR) done
    std::size_t credit = window;  // bytes this side may still send
    std::size_t unacked = 0;      // bytes written to fd, not yet credited back
  };

  void send(FrameType type, std::uint32_t id, std::string_view payload = {});
  void on_frame(Frame&& f);
  void read_stream(std::uint32_t id, Stream& s);
  void write_stream(std::uint32_t id, Stream& s);
  void drop(std::uint32_t id, bool tell_far_side);
  bool flush_port();

  int port_;
  int listener_;
  std::function<int()> dial_;
  FrameDecoder decoder_;
  std::string port_out_;  // frames waiting for the channel
  std::map<std::uint32_t, Stream> streams_;
  std::uint32_t next_id_ = 0;
};

// The host's end of a guest's network port: QEMU's socket for it
// (Machine::net_socket, made before QEMU starts), connected; -1 with errno
// set when it cannot be.
int connect_guest_network(const std::string& port_socket);

// Relays every stream the guest opens on `port` (connect_guest_network) to
// a new connection to the proxy's unix socket, until the VM ends or a stop
// is requested; then closes `port`.
void relay_guest_network(int port, const std::string& proxy_socket, std::stop_token stop);

}  // namespace sandgate::vmm
