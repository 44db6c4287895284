#include "resolver.h"

#include <ares.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <boost/asio/post.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <mutex>

#include "descriptors.h"
#include "sandgate/policy/target.h"

namespace sandgate::proxy::detail {

namespace {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

// c-ares statuses as error codes: the message is c-ares's own.
class DnsCategory : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "dns"; }
  std::string message(int status) const override { return ares_strerror(status); }
};
const DnsCategory dns_category;

boost::system::error_code dns_error(int status) { return {status, dns_category}; }

// An address as the C APIs hold it: 4 bytes (AF_INET) or 16, network order.
policy::Address to_address(int family, const void* bytes) {
  if (family == AF_INET) return policy::Address::from_v4(ntohl(static_cast<const in_addr*>(bytes)->s_addr));
  return policy::Address::from_bytes(std::span<const std::uint8_t, 16>(static_cast<const std::uint8_t*>(bytes), 16));
}

void add_once(std::vector<policy::Address>& list, const policy::Address& a) {
  if (std::find(list.begin(), list.end(), a) == list.end()) list.push_back(a);
}

// The answer's addresses, IPv4 first (each family in the order given), and
// its lifetime: the least TTL of its records, CNAMEs included.
struct Parsed {
  std::vector<policy::Address> addresses;
  int ttl = INT_MAX;
};

Parsed parse(const ares_addrinfo* r) {
  Parsed p;
  if (!r) return p;
  for (const auto* n = r->nodes; n; n = n->ai_next) {
    if (n->ai_family != AF_INET && n->ai_family != AF_INET6) continue;
    const void* bytes = n->ai_family == AF_INET
                            ? static_cast<const void*>(&reinterpret_cast<const sockaddr_in*>(n->ai_addr)->sin_addr)
                            : &reinterpret_cast<const sockaddr_in6*>(n->ai_addr)->sin6_addr;
    add_once(p.addresses, to_address(n->ai_family, bytes));
    p.ttl = std::min(p.ttl, n->ai_ttl);
  }
  for (const auto* c = r->cnames; c; c = c->next) p.ttl = std::min(p.ttl, c->ttl);
  std::stable_partition(p.addresses.begin(), p.addresses.end(), [](const policy::Address& a) { return a.is_v4(); });
  return p;
}

// "ADDR[:PORT],...", each item an IP address (port 53 unless given), checked
// and spelled for c-ares into `csv` (its own parser lets a port over 65535
// wrap). Returns what is wrong, or "".
std::string server_list(std::string_view text, std::string& csv) {
  for (std::size_t at = 0; at <= text.size();) {
    const auto comma = std::min(text.find(',', at), text.size());
    const auto item = text.substr(at, comma - at);
    const auto t = policy::parse_target(item, 53);
    if (!t) return "'" + std::string(item) + "': " + std::string(policy::describe(t.error()));
    if (!t->address) return "'" + std::string(item) + "' is not an IP address";
    if (!csv.empty()) csv += ',';
    csv += policy::authority(*t);
    at = comma + 1;
  }
  return {};
}

struct ChannelDeleter {
  void operator()(ares_channel c) const noexcept { ares_destroy(c); }
};
using Channel = std::unique_ptr<std::remove_pointer_t<ares_channel>, ChannelDeleter>;

}  // namespace

struct Dns::Query {
  Impl* dns;
  std::string name;
  std::vector<Wait*> waits;
};

struct Dns::Impl {
  asio::io_context& io;
  std::chrono::milliseconds longest;
  struct Entry {
    std::vector<policy::Address> addresses;
    Clock::time_point expires;
    int status = ARES_SUCCESS;  // else DNS's word that the name has no address (no addresses)
  };
  std::unordered_map<std::string, Entry, NameHash, std::equal_to<>> cache;
  std::unordered_map<std::string, std::unique_ptr<Query>, NameHash, std::equal_to<>> pending;
  std::atomic<std::uint64_t> questions{0};  // written by this thread, read by /metrics
  // EMFILE or ENFILE when c-ares's last socket(2) failed for want of a
  // descriptor, else 0. A lookup that fails meanwhile fails for that: the
  // proxy's limit (503), not DNS's fault (502).
  int socket_error = 0;

  // A socket c-ares opened, watched by the reactor for what c-ares wants.
  struct Socket {
    explicit Socket(asio::io_context& io, int fd) : descriptor(io, fd) {}
    asio::posix::stream_descriptor descriptor;  // does not own the fd: released before c-ares closes it
    bool want_read = false, want_write = false, reading = false, writing = false, closed = false;
  };
  std::unordered_map<ares_socket_t, std::shared_ptr<Socket>> sockets;
  asio::steady_timer timer{io};
  bool timer_set = false;

  // /etc/resolv.conf as the DNS channel read it (when no --dns-server), and
  // when it was last looked at.
  struct stat conf {};
  Clock::time_point conf_checked = Clock::now();

  // Declared last: destroyed first, while the above still stand for the
  // callbacks ares_destroy makes. It asks DNS only; /etc/hosts is read
  // through it before (ares_gethostbyname_file).
  Channel dns;

  Impl(asio::io_context& io_, std::chrono::milliseconds longest_) : io(io_), longest(longest_) {}

  std::string open_channel(const std::string& servers);

  // c-ares reads /etc/resolv.conf once; a DHCP or VPN client may rewrite it.
  // Before a question, at most every 2 s and only with nothing in flight:
  // if the file changed, a new channel reads it.
  void follow_resolv_conf() {
    if (conf.st_ino == 0 || !pending.empty() || Clock::now() - conf_checked < std::chrono::seconds(2)) return;
    conf_checked = Clock::now();
    struct stat now {};
    if (::stat("/etc/resolv.conf", &now) != 0 ||
        (now.st_ino == conf.st_ino && now.st_mtim.tv_sec == conf.st_mtim.tv_sec &&
         now.st_mtim.tv_nsec == conf.st_mtim.tv_nsec && now.st_size == conf.st_size))
      return;
    Channel old = std::move(dns);
    if (!open_channel("").empty()) dns = std::move(old);  // keep asking as before
  }

  void remember(const std::string& name, const std::vector<policy::Address>& addresses,
                std::chrono::milliseconds lifetime, int status = ARES_SUCCESS) {
    if (lifetime.count() <= 0) return;
    // Bounded: a full cache starts over rather than growing without limit.
    if (cache.size() >= 10'000) cache.clear();
    cache.insert_or_assign(name, Entry{addresses, Clock::now() + lifetime, status});
  }

  // Every handler waiting here belongs to a session of this thread.
  void complete(Wait& w, boost::system::error_code ec) {
    w.query_ = nullptr;
    w.out_ = nullptr;
    asio::post(io, [h = std::move(w.handler_), ec]() mutable { std::move(h)(ec); });
  }

  static void on_answer(void* arg, int status, int /*timeouts*/, ares_addrinfo* result) {
    std::unique_ptr<Query> owned;
    auto* q = static_cast<Query*>(arg);
    auto& im = *q->dns;
    if (auto it = im.pending.find(q->name); it != im.pending.end() && it->second.get() == q) {
      owned = std::move(it->second);
      im.pending.erase(it);
    }
    auto p = parse(result);
    if (result) ares_freeaddrinfo(result);
    if (status == ARES_SUCCESS && p.addresses.empty()) status = ARES_ENODATA;
    if (status == ARES_SUCCESS)
      im.remember(q->name, p.addresses,
                  std::min<std::chrono::milliseconds>(std::chrono::seconds(std::max(p.ttl, 0)), im.longest));
    // A name that does not exist, or has no address, is DNS's answer too
    // (RFC 2308): kept for --dns-cache, since c-ares does not report the
    // SOA's lifetime. A failure to get an answer (SERVFAIL, a timeout) is not.
    else if (status == ARES_ENOTFOUND || status == ARES_ENODATA)
      im.remember(q->name, {}, im.longest, status);
    boost::system::error_code ec = dns_error(status);
    if (status == ARES_EDESTRUCTION) ec = asio::error::operation_aborted;
    else if (status != ARES_SUCCESS && im.socket_error) ec.assign(im.socket_error, boost::system::system_category());
    for (auto* w : q->waits) {
      if (status == ARES_SUCCESS) *w->out_ = p.addresses;
      im.complete(*w, ec);
    }
  }

  // c-ares's socket calls, made through these only to learn when socket(2)
  // fails for want of a descriptor (c-ares reports that as "Could not
  // contact DNS servers").
  static ares_socket_t open_socket(int domain, int type, int protocol, void* data) {
    const int fd = ::socket(domain, type, protocol);
    static_cast<Impl*>(data)->socket_error = fd < 0 && out_of_descriptors(errno) ? errno : 0;
    return fd < 0 ? ARES_SOCKET_BAD : fd;
  }
  static int close_socket(ares_socket_t fd, void*) { return ::close(fd); }
  static int connect_socket(ares_socket_t fd, const sockaddr* to, ares_socklen_t length, void*) {
    return ::connect(fd, to, length);
  }
  static ares_ssize_t receive(ares_socket_t fd, void* buffer, std::size_t size, int flags, sockaddr* from,
                              ares_socklen_t* length, void*) {
    return ::recvfrom(fd, buffer, size, flags, from, length);
  }
  static ares_ssize_t send(ares_socket_t fd, const iovec* parts, int count, void*) {
    return ::writev(fd, parts, count);
  }
  static constexpr ares_socket_functions socket_functions{&open_socket, &close_socket, &connect_socket, &receive,
                                                          &send};

  static void on_socket_state(void* data, ares_socket_t fd, int readable, int writable) {
    auto& im = *static_cast<Impl*>(data);
    auto it = im.sockets.find(fd);
    if (!readable && !writable) {  // about to be closed
      if (it == im.sockets.end()) return;
      it->second->closed = true;
      it->second->descriptor.release();  // ends its waits; c-ares closes the fd
      im.sockets.erase(it);
      return;
    }
    if (it == im.sockets.end()) it = im.sockets.emplace(fd, std::make_shared<Socket>(im.io, fd)).first;
    it->second->want_read = readable;
    it->second->want_write = writable;
    im.watch(it->second);
  }

  void watch(const std::shared_ptr<Socket>& s) {
    wait_for(s, asio::posix::descriptor_base::wait_read, s->want_read, s->reading);
    wait_for(s, asio::posix::descriptor_base::wait_write, s->want_write, s->writing);
  }

  // One readiness wait, when c-ares wants it and none is pending; `waiting`
  // is a flag of *s, which the handler keeps alive.
  void wait_for(const std::shared_ptr<Socket>& s, asio::posix::descriptor_base::wait_type type, bool wanted,
                bool& waiting) {
    if (!wanted || waiting) return;
    waiting = true;
    s->descriptor.async_wait(type, [this, s, type, &waiting](boost::system::error_code ec) {
      waiting = false;
      if (s->closed || ec) return;
      const auto fd = s->descriptor.native_handle();
      const bool read = type == asio::posix::descriptor_base::wait_read;
      ares_process_fd(dns.get(), read ? fd : ARES_SOCKET_BAD, read ? ARES_SOCKET_BAD : fd);
      if (!s->closed) watch(s);
      schedule();
    });
  }

  // Wakes c-ares when its next timeout (a resend, a query given up) is due.
  void schedule() {
    timeval tv{};
    if (!ares_timeout(dns.get(), nullptr, &tv)) return;  // nothing pending
    const auto at = Clock::now() + std::chrono::seconds(tv.tv_sec) + std::chrono::microseconds(tv.tv_usec);
    if (timer_set && timer.expiry() <= at) return;
    timer_set = true;
    timer.expires_at(at);
    timer.async_wait([this](boost::system::error_code ec) {
      if (ec) return;  // moved or destroyed
      timer_set = false;
      ares_process_fd(dns.get(), ARES_SOCKET_BAD, ARES_SOCKET_BAD);
      schedule();
    });
  }
};

boost::system::result<std::unique_ptr<Dns>, std::string> Dns::create(asio::io_context& io, const std::string& servers,
                                                                      std::chrono::milliseconds longest) {
  static std::once_flag once;
  static int init_status = ARES_SUCCESS;
  std::call_once(once, [] { init_status = ares_library_init(ARES_LIB_INIT_ALL); });
  if (init_status != ARES_SUCCESS) return std::string("cannot start c-ares: ") + ares_strerror(init_status);
  auto impl = std::make_unique<Impl>(io, longest);
  if (auto e = impl->open_channel(servers); !e.empty()) return e;
  return std::unique_ptr<Dns>(new Dns(std::move(impl)));
}

// Opens the DNS channel, asking `servers` when given, else those of
// /etc/resolv.conf, whose state it notes.
std::string Dns::Impl::open_channel(const std::string& servers) {
  struct stat before {};
  const bool own_servers = !servers.empty();
  if (!own_servers && ::stat("/etc/resolv.conf", &before) != 0) before = {};
  ares_options o{};
  o.lookups = const_cast<char*>("b");
  o.sock_state_cb = &Impl::on_socket_state;
  o.sock_state_cb_data = this;
  ares_channel c = nullptr;
  if (const int s = ares_init_options(&c, &o, ARES_OPT_LOOKUPS | ARES_OPT_SOCK_STATE_CB); s != ARES_SUCCESS)
    return std::string("cannot set up DNS: ") + ares_strerror(s);
  dns.reset(c);
  ares_set_socket_functions(c, &socket_functions, this);
  if (own_servers) {
    std::string csv;
    if (auto e = server_list(servers, csv); !e.empty())
      return "--dns-server " + servers + ": " + e + " (give IP, IP:PORT or [IPv6]:PORT, comma-separated)";
    if (const int s = ares_set_servers_ports_csv(dns.get(), csv.c_str()); s != ARES_SUCCESS)
      return "--dns-server " + servers + ": " + ares_strerror(s);
  }
  conf = before;
  return {};
}

Dns::Dns(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Dns::~Dns() = default;  // Impl destroys its channel first (declared last)

const std::vector<policy::Address>* Dns::cached(std::string_view name) {
  auto& cache = impl_->cache;
  const auto it = cache.find(name);
  if (it == cache.end()) return nullptr;
  if (Clock::now() < it->second.expires)
    return it->second.status == ARES_SUCCESS ? &it->second.addresses : nullptr;  // (a negative one: start())
  cache.erase(it);
  return nullptr;
}

std::uint64_t Dns::questions() const noexcept { return impl_->questions.load(std::memory_order_relaxed); }

void Dns::start(const std::string& name, Wait& wait, std::vector<policy::Address>& out,
                asio::any_completion_handler<void(boost::system::error_code)> handler) {
  auto& im = *impl_;
  // Swapped in: Boost 1.81's move assignment recurses (it copies from an lvalue).
  wait.handler_.swap(handler);
  wait.out_ = &out;
  // RFC 6761 6.3: localhost and the names under it are the loopback
  // addresses, and no DNS server is asked about them (one would answer
  // what it likes, and learn what the sandbox looks for).
  if (name == "localhost" || name.ends_with(".localhost")) {
    out = {policy::Address::from_v4(0x7f000001), policy::Address{0, 1}};
    im.complete(wait, {});
    return;
  }
  // This thread's cache, whose addresses the caller took from cached():
  // DNS said lately that the name has no address. The same answer, with no
  // question and no read of /etc/hosts (an agent retrying a dead name costs
  // one of each per lifetime).
  if (auto it = im.cache.find(name);
      it != im.cache.end() && it->second.status != ARES_SUCCESS && Clock::now() < it->second.expires) {
    im.complete(wait, dns_error(it->second.status));
    return;
  }
  // /etc/hosts, read by c-ares (a few microseconds, on a cache miss only).
  std::vector<policy::Address> listed;
  for (const int family : {AF_INET, AF_INET6}) {
    hostent* h = nullptr;
    const int status = ares_gethostbyname_file(im.dns.get(), name.c_str(), family, &h);
    // Unread for want of a descriptor: not "not listed", and DNS could not be asked either.
    if (status == ARES_EFILE && out_of_descriptors(errno)) {
      im.complete(wait, {errno, boost::system::system_category()});
      return;
    }
    if (status != ARES_SUCCESS || !h) continue;
    for (char** a = h->h_addr_list; *a; ++a) add_once(listed, to_address(family, *a));
    ares_free_hostent(h);
  }
  if (!listed.empty()) {
    im.remember(name, listed, im.longest);
    out = std::move(listed);
    im.complete(wait, {});
    return;
  }
  if (auto it = im.pending.find(name); it != im.pending.end()) {
    wait.query_ = it->second.get();
    it->second->waits.push_back(&wait);
    return;
  }
  im.follow_resolv_conf();
  auto q = std::make_unique<Query>(Query{&im, name, {&wait}});
  wait.query_ = q.get();
  auto* raw = q.get();
  im.pending.emplace(name, std::move(q));
  im.questions.fetch_add(1, std::memory_order_relaxed);
  // A and AAAA at once; unsorted: sorting would connect(2) a UDP socket to
  // each address, and the order here is the proxy's own (IPv4 first).
  const ares_addrinfo_hints hints{ARES_AI_NOSORT, AF_UNSPEC, 0, 0};
  ares_getaddrinfo(im.dns.get(), name.c_str(), nullptr, &hints, &Impl::on_answer, raw);
  im.schedule();
}

void Dns::Wait::cancel() {
  if (!query_) return;
  auto& waits = query_->waits;
  waits.erase(std::remove(waits.begin(), waits.end(), this), waits.end());
  query_->dns->complete(*this, asio::error::operation_aborted);
}

}  // namespace sandgate::proxy::detail
