// Name resolution for the proxy, per thread, after the static hosts file
// (`--hosts-file`, hosts_file.h): answers cached within their lifetime,
// /etc/hosts, and DNS through c-ares on the thread's own io_context (no
// resolver thread), which reports each record's TTL. The proxy dials only
// addresses returned here, after the policy checked them: it never hands a
// name to another resolver.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/system/error_code.hpp>
#include <boost/system/result.hpp>

#include "hosts_file.h"

namespace sandgate::proxy::detail {

// The DNS of one thread: used only from that thread's io_context.
class Dns {
 public:
  // servers: "" for those of /etc/resolv.conf, else "ADDR[:PORT],..." with
  // IPv6 addresses bracketed. longest: no answer is reused longer, and an
  // /etc/hosts answer (it has no TTL) for exactly this; 0 caches nothing.
  static boost::system::result<std::unique_ptr<Dns>, std::string> create(boost::asio::io_context& io,
                                                                          const std::string& servers,
                                                                          std::chrono::milliseconds longest);
  // Pending lookups are given up (their waits complete with operation_aborted).
  ~Dns();
  Dns(const Dns&) = delete;
  Dns& operator=(const Dns&) = delete;

  // The cached addresses of `name` while their lifetime lasts, or nullptr
  // (also for a name cached as having none: async_lookup answers that).
  const std::vector<policy::Address>* cached(std::string_view name);

  struct Query;  // one name being asked, and who waits for it

  // One session's place in a lookup, reused from one lookup to the next.
  class Wait {
   public:
    // Completes a pending wait now with operation_aborted. The lookup goes
    // on, for the cache and for anyone else waiting on the same name.
    void cancel();

   private:
    friend class Dns;
    boost::asio::any_completion_handler<void(boost::system::error_code)> handler_;
    std::vector<policy::Address>* out_ = nullptr;
    Query* query_ = nullptr;
  };

  // Looks `name` up: localhost and *.localhost are 127.0.0.1 and ::1 (RFC
  // 6761), never asked; else /etc/hosts first, then DNS, and caches the
  // answer (a name DNS says has no address too, for the longest lifetime).
  // Completes on this thread with an error (category "dns": the message says
  // what failed) or success with the addresses in `out`: IPv4 first, then
  // IPv6, each in the order given. Lookups of one name at a time share one
  // query.
  template <class Token>
  auto async_lookup(const std::string& name, Wait& wait, std::vector<policy::Address>& out, Token&& token) {
    return boost::asio::async_initiate<Token, void(boost::system::error_code)>(
        [this, &name, &wait, &out](auto handler) { start(name, wait, out, std::move(handler)); }, token);
  }

  // Lookups sent to DNS so far; read from any thread.
  std::uint64_t questions() const noexcept;

  struct Impl;

 private:
  explicit Dns(std::unique_ptr<Impl> impl);
  void start(const std::string& name, Wait& wait, std::vector<policy::Address>& out,
             boost::asio::any_completion_handler<void(boost::system::error_code)> handler);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sandgate::proxy::detail
