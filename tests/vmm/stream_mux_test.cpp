// Both ends of a guest's network port, on one host: a "guest" mux listening
// on loopback and a "host" mux dialing a loopback echo server, joined by a
// socket pair standing in for the virtio-serial port (the sandbox tests run
// the real port under QEMU). Checks what the sandbox tests cannot force:
// a reader that does not read for a while, and the stream limit.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "../proxy/process.h"
#include "sandgate/vmm/stream_mux.h"

namespace sandgate::vmm {
namespace {

int tcp_listener(std::uint16_t& port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, 4096) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0)
    return -1;
  port = ntohs(a.sin_port);
  return fd;
}

int tcp_connect(std::uint16_t port) { return sandgate::testing::connect_tcp("127.0.0.1", port); }
using sandgate::testing::read_until_close;

class StreamMuxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, port_), 0);
    echo_ = tcp_listener(echo_port_);
    guest_listener_ = tcp_listener(guest_port_);
    ASSERT_GE(echo_, 0);
    ASSERT_GE(guest_listener_, 0);
    // The "proxy": echoes each connection back, then closes it.
    echo_thread_ = std::thread([this] {
      for (;;) {
        const int c = ::accept(echo_, nullptr, nullptr);
        if (c < 0) return;
        std::thread([c] {
          char buf[65536];
          for (ssize_t n; (n = ::read(c, buf, sizeof buf)) > 0;)
            for (ssize_t done = 0; done < n;) {
              const ssize_t w = ::write(c, buf + done, static_cast<std::size_t>(n - done));
              if (w <= 0) return (void)::close(c);
              done += w;
            }
          ::close(c);
        }).detach();
      }
    });
    guest_ = std::jthread([this](std::stop_token stop) { StreamMux(port_[0], guest_listener_, nullptr).run(stop); });
    host_ = std::jthread(
        [this](std::stop_token stop) { StreamMux(port_[1], -1, [this] { return tcp_connect(echo_port_); }).run(stop); });
  }
  void TearDown() override {
    guest_ = {};  // asks each mux to stop, and waits for it
    host_ = {};
    ::shutdown(echo_, SHUT_RDWR);
    ::close(echo_);
    echo_thread_.join();
    for (int fd : {port_[0], port_[1], guest_listener_}) ::close(fd);
  }

  int port_[2]{-1, -1};
  int echo_ = -1, guest_listener_ = -1;
  std::uint16_t echo_port_ = 0, guest_port_ = 0;
  std::thread echo_thread_;
  std::jthread guest_, host_;
};

TEST_F(StreamMuxTest, StreamsArriveWholeWhileOneReaderWaits) {
  // One client writes 4 MB and reads nothing for a second: its stream's
  // window fills and waits. Eight others echo 1 MB each meanwhile.
  std::string big(4 << 20, '\0');
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 7 + i / 251);
  const int slow = tcp_connect(guest_port_);
  ASSERT_GE(slow, 0);
  std::thread slow_writer([&] {
    for (std::size_t done = 0; done < big.size();) {
      const ssize_t w = ::write(slow, big.data() + done, big.size() - done);
      if (w <= 0) return;
      done += static_cast<std::size_t>(w);
    }
    ::shutdown(slow, SHUT_WR);
  });
  std::vector<std::thread> others;
  std::atomic<int> whole{0};
  for (int k = 0; k < 8; ++k)
    others.emplace_back([&, k] {
      const std::string mine(1 << 20, static_cast<char>('a' + k));
      const int c = tcp_connect(guest_port_);
      std::thread w([&] {
        ::write(c, mine.data(), mine.size());
        ::shutdown(c, SHUT_WR);
      });
      const auto got = read_until_close(c);
      w.join();
      whole += got == mine;
    });
  for (auto& t : others) t.join();
  EXPECT_EQ(whole.load(), 8) << "the others went on while one stream was full";
  std::this_thread::sleep_for(std::chrono::seconds(1));
  EXPECT_EQ(read_until_close(slow), big);
  slow_writer.join();
}

TEST_F(StreamMuxTest, PastTheStreamLimitClientsWaitAndThenGetThrough) {
  std::vector<int> held;
  for (std::size_t i = 0; i < StreamMux::max_streams; ++i) {
    held.push_back(tcp_connect(guest_port_));
    ASSERT_GE(held.back(), 0);
  }
  // One more connects (the kernel's backlog) but is not served yet.
  const int extra = tcp_connect(guest_port_);
  ASSERT_GE(extra, 0);
  ::write(extra, "ping", 4);
  ::shutdown(extra, SHUT_WR);
  timeval tv{0, 500'000};
  ::setsockopt(extra, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char c;
  EXPECT_LT(::read(extra, &c, 1), 0) << "served past the limit";
  for (int fd : held) ::close(fd);
  EXPECT_EQ(read_until_close(extra, std::chrono::seconds(10)), "ping");
}

}  // namespace
}  // namespace sandgate::vmm
