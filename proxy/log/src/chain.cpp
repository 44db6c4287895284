#include "chain.h"

#include <openssl/hmac.h>

#include <stdexcept>

namespace sandgate::netlog::detail {

Sha256::Sha256() : md_(EVP_MD_fetch(nullptr, "SHA256", nullptr)), ctx_(EVP_MD_CTX_new()) {
  if (!md_ || !ctx_) throw std::runtime_error("OpenSSL has no SHA-256");
}

Sha256::~Sha256() {
  EVP_MD_CTX_free(ctx_);
  EVP_MD_free(md_);
}

void Sha256::start() noexcept { EVP_DigestInit_ex2(ctx_, md_, nullptr); }

void Sha256::update(std::string_view data) noexcept { EVP_DigestUpdate(ctx_, data.data(), data.size()); }

Digest Sha256::finish() noexcept {
  Digest out{};
  unsigned len = 0;
  EVP_DigestFinal_ex(ctx_, out.data(), &len);
  return out;
}

namespace {
constexpr char hex_digits[] = "0123456789abcdef";
}

DigestHex to_hex(const Digest& d) noexcept {
  DigestHex out;
  for (std::size_t i = 0; i < d.size(); ++i) {
    out[2 * i] = hex_digits[d[i] >> 4];
    out[2 * i + 1] = hex_digits[d[i] & 15];
  }
  return out;
}

std::string to_hex(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out += hex_digits[c >> 4];
    out += hex_digits[c & 15];
  }
  return out;
}

std::string hmac_hex(std::string_view key, std::string_view message) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(message.data()),
       message.size(), mac, &len);
  return to_hex(std::string_view(reinterpret_cast<const char*>(mac), len));
}

}  // namespace sandgate::netlog::detail
