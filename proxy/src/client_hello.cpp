#include "client_hello.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/tls1.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <string>

#include "sandgate/policy/target.h"

namespace sandgate::proxy::detail {
namespace {

struct Hello {
  bool seen = false;
  std::optional<std::string> sni;
};

// Reads the server_name extension (RFC 6066): a list of (type, name); the
// first host_name entry is the one servers use.
int on_client_hello(SSL* ssl, int*, void*) {
  auto* hello = static_cast<Hello*>(SSL_get_app_data(ssl));
  hello->seen = true;
  const unsigned char* ext = nullptr;
  std::size_t len = 0;
  if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &ext, &len) && len >= 5) {
    const std::size_t list = (std::size_t{ext[0]} << 8) | ext[1];
    const std::size_t name_len = (std::size_t{ext[3]} << 8) | ext[4];
    if (list + 2 <= len && ext[2] == TLSEXT_NAMETYPE_host_name && 5 + name_len <= len)
      hello->sni = std::string(reinterpret_cast<const char*>(ext + 5), name_len);
    else
      hello->sni = std::string();  // present but unreadable: never matches
  }
  return SSL_CLIENT_HELLO_ERROR;  // stop here: only the hello was wanted
}

SSL_CTX* hello_context() {
  // Invariant: one context for the process, never freed; SSL_CTX is thread-safe
  // for creating SSL objects.
  static SSL_CTX* ctx = [] {
    SSL_CTX* c = SSL_CTX_new(TLS_server_method());
    if (c) SSL_CTX_set_client_hello_cb(c, on_client_hello, nullptr);
    return c;
  }();
  return ctx;
}

// RFC 9110 5.6.2: the characters of a token, such as a method.
bool is_tchar(char c) {
  constexpr std::string_view others = "!#$%&'*+-.^_`|~";
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         others.find(c) != std::string_view::npos;
}

// Whether bytes start an HTTP/1 request line (RFC 9112 3): need_more while
// they could still be one, http once one has ended, allow as soon as they
// cannot be one (another protocol, or HTTP/2's preface, which is opaque).
FirstFlight http_request_line(std::string_view bytes) {
  constexpr std::size_t longest_method = 32;
  std::size_t i = 0;
  while (i < bytes.size() && i <= longest_method && is_tchar(bytes[i])) ++i;
  if (i == bytes.size()) return i <= longest_method ? FirstFlight::need_more : FirstFlight::allow;
  if (i == 0 || bytes[i] != ' ') return FirstFlight::allow;
  const auto target = ++i;
  // The target: visible ASCII. A control byte or a byte above 0x7e is not a
  // request line (and a client that sent one would be refused anyway).
  while (i < bytes.size() && bytes[i] > ' ' && bytes[i] < 0x7f) ++i;
  if (i == bytes.size()) return bytes.size() >= max_first_flight ? FirstFlight::http : FirstFlight::need_more;
  if (i == target || bytes[i] != ' ') return FirstFlight::allow;
  constexpr std::string_view version = "HTTP/1.?\r\n";
  for (std::size_t k = 0; k < version.size(); ++k) {
    if (++i == bytes.size()) return FirstFlight::need_more;
    const char want = version[k];
    if (want == '?' ? !(bytes[i] >= '0' && bytes[i] <= '9') : bytes[i] != want) return FirstFlight::allow;
  }
  return FirstFlight::http;
}

}  // namespace

FirstFlight check_first_flight(std::string_view bytes, std::string_view target_host) {
  if (bytes.empty()) return FirstFlight::need_more;
  if (static_cast<unsigned char>(bytes[0]) != 0x16) return http_request_line(bytes);  // not a TLS handshake
  if (bytes.size() < 5) return FirstFlight::need_more;
  const std::size_t record = (std::size_t{static_cast<unsigned char>(bytes[3])} << 8) |
                             static_cast<unsigned char>(bytes[4]);
  if (bytes.size() < 5 + record && bytes.size() < max_first_flight) return FirstFlight::need_more;

  SSL_CTX* ctx = hello_context();
  if (!ctx) return FirstFlight::refuse;
  std::unique_ptr<SSL, decltype(&SSL_free)> ssl(SSL_new(ctx), SSL_free);
  if (!ssl) return FirstFlight::refuse;
  BIO* in = BIO_new_mem_buf(bytes.data(), static_cast<int>(std::min(bytes.size(), 5 + record)));
  BIO* out = BIO_new(BIO_s_mem());
  if (!in || !out) {
    BIO_free(in);
    BIO_free(out);
    return FirstFlight::refuse;
  }
  SSL_set_bio(ssl.get(), in, out);  // the SSL owns both BIOs from here
  Hello hello;
  SSL_set_app_data(ssl.get(), &hello);
  SSL_set_accept_state(ssl.get());
  (void)SSL_do_handshake(ssl.get());
  ERR_clear_error();  // the stopped handshake leaves errors on this thread's queue
  if (!hello.seen) return FirstFlight::refuse;  // not a ClientHello OpenSSL can read
  if (!hello.sni) return FirstFlight::allow;     // no SNI: nothing to compare
  auto named = policy::normalize_host(*hello.sni);
  return named && named->host == target_host ? FirstFlight::allow : FirstFlight::refuse;
}

}  // namespace sandgate::proxy::detail
