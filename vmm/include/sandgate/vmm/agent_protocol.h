// The wire format between the host and the guest agent, on one virtio-serial
// port: length-prefixed frames, each tagged with a session (one per command),
// so several commands and their output streams share the port.
//
//   byte 0      frame type
//   bytes 1-4   session id, little endian
//   bytes 5-8   payload length, little endian (at most max_payload)
//   payload
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace sandgate::vmm {

enum class FrameType : std::uint8_t {
  // host -> guest
  ping = 1,       // payload: anything; answered by pong with the same payload
  exec = 2,       // payload: JSON {"argv": [...], "env": ["K=V", ...], "cwd": "/path",
                  //   "tty": {"rows": R, "cols": C}}  (tty: a pseudo-terminal; stderr joins stdout)
  stdin_data = 3,
  stdin_eof = 4,
  signal = 5,     // payload: the signal number as decimal text; sent to the command's process group
  poweroff = 6,   // sync and power off
  set_time = 7,   // payload: microseconds since the epoch as decimal text
  stop = 8,       // client -> sandbox supervisor only: power the sandbox off and end it
  resize = 9,     // payload: "ROWS COLS"; the command's terminal's new size (tty only)
  // guest -> host
  pong = 64,
  started = 65,   // payload: the pid as decimal text
  stdout_data = 66,
  stderr_data = 67,
  exit = 68,      // payload: the exit status as decimal text (128 + signal when killed)
  error = 69,     // payload: why the command could not start; the session ends
  // the network port (stream_mux.h): the session is a stream
  net_open = 96,
  net_data = 97,
  net_eof = 98,
  net_close = 99,
  net_credit = 100,
};

inline constexpr std::size_t header_size = 9;
inline constexpr std::size_t max_payload = 64 * 1024;

struct Frame {
  FrameType type{};
  std::uint32_t session = 0;
  std::string payload;
};

// Appends one encoded frame to `out`.
void encode_frame(std::string& out, FrameType type, std::uint32_t session, std::string_view payload);

// Accumulates bytes and cuts them into frames. A length over max_payload is
// a protocol error: next() then returns nullopt and error() is set for good.
class FrameDecoder {
 public:
  void feed(std::string_view bytes) { buffer_.append(bytes); }
  std::optional<Frame> next();
  bool error() const noexcept { return error_; }

 private:
  std::string buffer_;
  std::size_t consumed_ = 0;
  bool error_ = false;
};

}  // namespace sandgate::vmm
