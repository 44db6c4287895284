// The hash chain's primitives (OpenSSL): SHA-256 of a line, HMAC-SHA256 of
// a checkpoint, and their hex forms. Shared by the writer and `verify`.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include <openssl/evp.h>

namespace sandgate::netlog::detail {

using Digest = std::array<std::uint8_t, 32>;
using DigestHex = std::array<char, 64>;

// A reusable SHA-256 context: no allocation per line.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  Digest digest(std::string_view data) noexcept {
    start();
    update(data);
    return finish();
  }
  // The same in pieces: a line's body can be hashed on one thread and its
  // tail (the chain link) added and finished on another.
  void start() noexcept;
  void update(std::string_view data) noexcept;
  Digest finish() noexcept;

 private:
  EVP_MD* md_;
  EVP_MD_CTX* ctx_;
};

DigestHex to_hex(const Digest& d) noexcept;
std::string to_hex(std::string_view bytes);
// The chain's start: 64 zeros.
inline constexpr std::string_view genesis = "0000000000000000000000000000000000000000000000000000000000000000";

// HMAC-SHA256(key, message) in hex.
std::string hmac_hex(std::string_view key, std::string_view message);

}  // namespace sandgate::netlog::detail
