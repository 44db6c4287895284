#include "sandgate/vmm/agent_protocol.h"

namespace sandgate::vmm {
namespace {

void put32(std::string& out, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) out += static_cast<char>((v >> (8 * i)) & 0xff);
}

std::uint32_t get32(const char* p) {
  std::uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<std::uint32_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  return v;
}

}  // namespace

void encode_frame(std::string& out, FrameType type, std::uint32_t session, std::string_view payload) {
  out += static_cast<char>(type);
  put32(out, session);
  put32(out, static_cast<std::uint32_t>(payload.size()));
  out.append(payload);
}

std::optional<Frame> FrameDecoder::next() {
  if (error_) return std::nullopt;
  const std::size_t have = buffer_.size() - consumed_;
  if (have < header_size) {
    if (consumed_ > 0) {
      buffer_.erase(0, consumed_);
      consumed_ = 0;
    }
    return std::nullopt;
  }
  const char* p = buffer_.data() + consumed_;
  const std::uint32_t length = get32(p + 5);
  if (length > max_payload) {
    error_ = true;
    return std::nullopt;
  }
  if (have < header_size + length) return std::nullopt;
  Frame f{static_cast<FrameType>(static_cast<unsigned char>(p[0])), get32(p + 1),
          std::string(p + header_size, length)};
  consumed_ += header_size + length;
  return f;
}

}  // namespace sandgate::vmm
