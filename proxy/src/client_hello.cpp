#include "client_hello.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/tls1.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <string>

#include "sandgate/policy/target.h"
#include "token.h"

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

// Bytes some HTTP/1 server takes for the space between a request line's
// words: SP and HTAB (RFC 9112 3 lets a lenient parser take whitespace),
// CR, and the rest of what Python's http.server splits its request line on
// (str.split() of Latin-1: VT, FF, 0x1c-0x1f, 0x85, 0xa0).
bool is_separator(unsigned char c) {
  return c == ' ' || (c >= '\t' && c <= '\r' && c != '\n') || (c >= 0x1c && c <= 0x1f) || c == 0x85 ||
         c == 0xa0;
}

bool starts_http_version(std::string_view word) {
  constexpr std::string_view http = "http/";
  return word.size() >= http.size() && equals_lower(word.substr(0, http.size()), http);
}

// Whether bytes start an HTTP/1 request as any server might read it, for the
// tunnel to follow it and check its Host (tunnel_http.h). The threat is a
// Host naming another site of the same origin, hidden from a strict
// reading: a lenient server such as nginx or Python's http.server also
// takes blank lines before the request line, runs of spaces or tabs between
// its words, spaces in the target, bytes above 0x7e, a lower-case
// "http/1.1", any version digits, a bare LF, and an HTTP/0.9 "GET target"
// followed by fields. So: a method token after any blank lines, a separator,
// then a first line holding a word that starts with "HTTP/" in any case, or
// a GET: http, and the follower, reading strictly, refuses whatever is not
// canonical. HTTP/2's cleartext preface ("PRI * HTTP/2.0") is such a line,
// and refused too: its requests name their hosts in HPACK, out of sight.
// need_more until that line has ended; allow as soon as the bytes cannot be
// one (another protocol).
FirstFlight http_request_line(std::string_view bytes) {
  // Waiting ends at max_first_flight: a line that long counts as HTTP.
  const auto wait = bytes.size() >= max_first_flight ? FirstFlight::http : FirstFlight::need_more;
  constexpr std::size_t longest_method = 32;
  std::size_t start = 0;
  while (start < bytes.size() && (bytes[start] == '\n' || is_separator(bytes[start]))) ++start;
  if (start == bytes.size()) return wait;
  std::size_t i = start;
  while (i < bytes.size() && i - start <= longest_method && is_tchar(bytes[i])) ++i;
  if (i - start > longest_method) return FirstFlight::allow;
  if (i == bytes.size()) return wait;
  if (i == start || !is_separator(bytes[i])) return FirstFlight::allow;
  const auto method = bytes.substr(start, i - start);
  const auto line_end = bytes.find('\n', i);
  const auto line = bytes.substr(i, line_end == std::string_view::npos ? std::string_view::npos : line_end - i);
  bool target = false;
  for (std::size_t k = 1; k < line.size(); ++k) {
    if (!is_separator(line[k - 1]) || is_separator(line[k])) continue;  // not a word's start
    if (target && starts_http_version(line.substr(k))) return FirstFlight::http;
    target = true;
  }
  // A version may still come, or be cut off at the end of the bytes so far.
  if (line_end == std::string_view::npos) return wait;
  return method == "GET" && target ? FirstFlight::http : FirstFlight::allow;
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
