// The writer thread: drains the producers' rings, formats each event as one
// JSON line with the previous line's SHA-256, writes in batches, checkpoints,
// rotates and fsyncs on its own schedule.
#include "sandgate/netlog/writer.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <openssl/rand.h>

#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "chain.h"
#include "files.h"
#include "json_line.h"

namespace sandgate::netlog {

std::string_view to_string(EndReason r) noexcept {
  switch (r) {
    case EndReason::complete: return "complete";
    case EndReason::client_close: return "client-close";
    case EndReason::upstream_close: return "upstream-close";
    case EndReason::idle_timeout: return "idle-timeout";
    case EndReason::reload: return "reload";
    case EndReason::shutdown: return "shutdown";
    case EndReason::sni_mismatch: return "sni-mismatch";
    case EndReason::error: return "error";
  }
  return "error";
}

std::string_view to_string(ProxyType t) noexcept { return t == ProxyType::connect ? "connect" : "http"; }

// --- Producer ---

Producer::Producer(Writer& writer, std::uint64_t index, std::size_t slots, bool drop_when_full)
    : writer_(writer), index_(index), drop_when_full_(drop_when_full) {
  std::size_t n = 16;
  while (n < slots) n <<= 1;
  slots_ = std::make_unique<Event[]>(n);
  mask_ = n - 1;
}

Producer::~Producer() = default;

Event* Producer::claim() noexcept {
  const auto head = head_.load(std::memory_order_relaxed);
  if (head - cached_tail_ > mask_) {
    cached_tail_ = tail_.load(std::memory_order_acquire);
    if (head - cached_tail_ > mask_) {
      writer_.wake();
      return nullptr;
    }
  }
  return &slots_[head & mask_];
}

void Producer::publish() noexcept {
  const auto head = head_.load(std::memory_order_relaxed) + 1;
  head_.store(head, std::memory_order_release);
  // Past half full: wake the writer rather than wait for its next round.
  if (head - cached_tail_ == (mask_ + 1) / 2) writer_.wake();
}

// --- Writer ---

struct Writer::Impl {
  WriterConfig config;
  std::string run_id;
  std::string key;
  std::vector<Producer*> producers;
  std::deque<Source> sources;
  std::mutex sources_mutex;

  // Rare records (policy loads), as preformatted members.
  std::mutex control_mutex;
  std::vector<std::pair<std::string, std::string>> control;  // (type, members)

  std::mutex wake_mutex;
  std::condition_variable wake_cv;
  bool wake_flag = false;  // guarded by wake_mutex
  std::atomic<bool> stop{false};
  std::atomic<bool> reopen{false};
  std::thread thread;

  // Writer-thread state.
  int fd = -1;
  std::uint64_t file_bytes = 0;
  std::uint64_t seq = 0;
  detail::DigestHex prev{};
  std::uint64_t since_checkpoint = 0;
  std::uint64_t drops_logged = 0;
  std::chrono::steady_clock::time_point last_checkpoint = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point last_fsync = std::chrono::steady_clock::now();
  bool dirty = false;
  detail::LineBuffer out;
  detail::JsonLine json{out};
  detail::Sha256 sha;
  std::int64_t cached_second = -1;
  char cached_time[20] = {};

  std::atomic<std::uint64_t> records{0}, bytes{0}, rotations{0}, write_errors{0};

  static constexpr std::size_t write_chunk = 256 << 10;

  // --- record framing ---

  void time_field(detail::JsonLine& j, std::int64_t us) {
    const std::int64_t s = us / 1'000'000;
    if (s != cached_second) {
      const time_t t = s;
      tm parts{};
      gmtime_r(&t, &parts);
      std::strftime(cached_time, sizeof cached_time, "%Y-%m-%dT%H:%M:%S", &parts);
      cached_second = s;
    }
    char frac[] = ".000000Z\"";
    for (std::int64_t v = us % 1'000'000, i = 6; i >= 1; --i, v /= 10) frac[i] = static_cast<char>('0' + v % 10);
    j.key("time").raw("\"").raw(std::string_view(cached_time, 19)).raw(frac);
  }

  template <class Body>
  void emit(std::string_view type, std::int64_t time_us, Body&& body) {
    const auto start = out.size();
    out.append("{\"schema_version\":1,\"type\":\"");
    out.append(type);
    out.append("\"");
    auto& j = json;
    j.num("seq", static_cast<std::int64_t>(++seq));
    time_field(j, time_us);
    body(j);
    j.key("prev").raw("\"").raw(std::string_view(prev.data(), prev.size())).raw("\"}");
    prev = detail::to_hex(sha.digest(out.view().substr(start)));
    out.append("\n");
    records.fetch_add(1, std::memory_order_relaxed);
    // Every checkpoint_records records (of any type) a checkpoint follows:
    // the bound `verify` holds each file to, from its `file` record.
    if (type != "checkpoint" && ++since_checkpoint >= config.checkpoint_records) emit_checkpoint(false);
  }

  static std::int64_t now_us() {
    return std::chrono::duration_cast<std::chrono::microseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }

  void emit_file_record(std::string_view reason, std::string_view previous_file, bool previous_torn) {
    emit("file", now_us(), [&](detail::JsonLine& j) {
      j.str("run", run_id).str("reason", reason).str("previous_file", previous_file);
      j.boolean("previous_torn", previous_torn);
      j.num("pid", ::getpid()).num("checkpoint_records", static_cast<std::int64_t>(config.checkpoint_records));
      j.boolean("hmac", !key.empty());
    });
  }

  void emit_checkpoint(bool final) {
    // The HMAC covers the hash of the line before it, so the whole chain.
    const std::string mac = key.empty() ? std::string() : detail::hmac_hex(key, {prev.data(), prev.size()});
    const auto covered = since_checkpoint;
    emit("checkpoint", now_us(), [&](detail::JsonLine& j) {
      j.num("records", static_cast<std::int64_t>(covered)).boolean("final", final);
      if (mac.empty()) j.null("hmac");
      else j.str("hmac", mac);
    });
    since_checkpoint = 0;
    last_checkpoint = std::chrono::steady_clock::now();
  }

  void emit_event(const Event& e) {
    // "<run>-<16 hex digits>": unique across threads and runs.
    char id_buf[40];
    const auto run = run_id.size();
    std::memcpy(id_buf, run_id.data(), run);
    id_buf[run] = '-';
    for (int i = 0; i < 16; ++i) id_buf[run + 1 + i] = "0123456789abcdef"[(e.id >> (60 - 4 * i)) & 15];
    const std::string_view id(id_buf, run + 17);
    if (e.kind == Event::Kind::close) {
      emit("close", e.time_us, [&](detail::JsonLine& j) {
        j.code("id", id).str("sandbox", e.source ? e.source->sandbox : "");
        j.num("bytes_up", static_cast<std::int64_t>(e.bytes_up)).num("bytes_down", static_cast<std::int64_t>(e.bytes_down));
        j.num("duration_us", e.duration_us).code("end", to_string(e.end));
        if (e.http_status) j.num("status", e.http_status);
      });
      return;
    }
    emit("decision", e.time_us, [&](detail::JsonLine& j) {
      j.code("id", id).str("sandbox", e.source ? e.source->sandbox : "").str("listener", e.source ? e.source->listener : "");
      if (e.client_is_ip) j.key("client").address(e.client, e.client_port);
      else j.null("client");
      j.code("proxy_type", to_string(e.proxy_type));
      if (e.proxy_type == ProxyType::http) j.str("method", e.method.view());
      j.str("requested", e.requested.view());
      if (e.host.size > 0) {
        // host:port, IPv6 in brackets; hosts are normalized, nothing to escape.
        const auto h = e.host.view();
        const bool v6 = h.find(':') != std::string_view::npos;
        j.key("target").raw(v6 ? "\"[" : "\"").raw(h).raw(v6 ? "]:" : ":").number(e.port).raw("\"");
      } else {
        j.null("target");
      }
      j.key("addresses").raw("[");
      for (std::uint8_t i = 0; i < e.address_count; ++i) {
        if (i) j.raw(",");
        j.address(e.addresses[i]);
      }
      j.raw("]");
      if (e.addresses_cut) j.num("addresses_cut", e.addresses_cut);
      if (e.has_used) j.key("address").address(e.used);
      else j.null("address");
      // The address that decided an address-phase verdict (a blocked one, say).
      // The address that decided an address-phase verdict, when it is not
      // the one dialed (a blocked one, say).
      if (e.decided && e.decision.phase == policy::Phase::address && !(e.has_used && e.used == e.decision.address))
        j.key("decided_address").address(e.decision.address);

      // The outcome: deny and report are policy verdicts; error is a refusal
      // for any other reason (malformed, lookup or connect failure, limits).
      const auto verdict = outcome(e.decided, e.decision.verdict, e.status);
      j.code("verdict", verdict).boolean("would_deny", e.decided && e.decision.would_deny());
      const policy::RuleInfo* rule = e.decided && e.policy ? e.policy->rule(e.decision.rule) : nullptr;
      if (rule) {
        j.key("rule").raw("{\"text\":").string(rule->text);
        j.code("action", policy::to_string(rule->action));
        j.str("file", rule->source.file.empty() ? "<built-in>" : rule->source.file);
        j.num("line", rule->source.line);
        if (!rule->comment.empty()) j.str("comment", rule->comment);
        j.raw("}");
      } else {
        j.null("rule");
      }
      if (e.policy_set) j.code("policy_sha256", e.policy_set->sha256);
      else j.null("policy_sha256");
      j.code("phase", !e.decided ? "request" : policy::to_string(e.decision.phase));
      // For a refusal this is also the X-Proxy-Error code the client got.
      j.code("reason", reason_code(e.decided, e.decision.reason, e.status, e.error));
      if (e.status) j.num("status", e.status);
      if (e.dns_us >= 0) j.num("dns_us", e.dns_us);
      if (e.connect_us >= 0) j.num("connect_us", e.connect_us);
    });
  }

  // --- the file ---

  boost::system::result<void, std::string> open_file(std::string_view reason, std::string_view previous_file,
                                                     bool previous_torn) {
    const int f = ::open(config.path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (f < 0) return "cannot open the log " + config.path + ": " + std::strerror(errno);
    // One writer per log: a second proxy on the same file would fork the chain.
    if (::flock(f, LOCK_EX | LOCK_NB) != 0) {
      ::close(f);
      return "the log " + config.path + " is locked by another sandgate process; give each proxy its own --log";
    }
    struct stat st {};
    ::fstat(f, &st);
    fd = f;
    file_bytes = static_cast<std::uint64_t>(st.st_size);
    emit_file_record(reason, previous_file, previous_torn);
    return {};
  }

  void close_file(bool final) {
    if (fd < 0) return;
    emit_checkpoint(final);
    flush();
    ::fsync(fd);
    ::close(fd);  // releases the flock
    fd = -1;
  }

  void flush() {
    std::size_t done = 0;
    while (done < out.size()) {
      const ssize_t n = ::write(fd, out.data() + done, out.size() - done);
      if (n < 0) {
        if (errno == EINTR) continue;
        // Disk full or I/O error: keep the bytes and try again next round;
        // the rings fill meanwhile and hold back new connections.
        write_errors.fetch_add(1, std::memory_order_relaxed);
        break;
      }
      done += static_cast<std::size_t>(n);
    }
    out.consume(done);
    file_bytes += done;
    bytes.fetch_add(done, std::memory_order_relaxed);
    dirty |= done > 0;
  }

  void rotate(std::string_view reason) {
    close_file(false);
    const auto previous = detail::rotate_siblings(config.path);
    rotations.fetch_add(1, std::memory_order_relaxed);
    if (auto r = open_file(reason, previous, false); !r) write_errors.fetch_add(1, std::memory_order_relaxed);
  }

  void reopen_file() {
    // logrotate has renamed the file we hold; finish it and start a new one.
    close_file(false);
    rotations.fetch_add(1, std::memory_order_relaxed);
    if (auto r = open_file("reopen", "", false); !r) write_errors.fetch_add(1, std::memory_order_relaxed);
  }

  // --- the loop ---

  bool drain_once() {
    bool any = false;
    std::vector<std::pair<std::string, std::string>> rare;
    {
      std::lock_guard lock(control_mutex);
      rare.swap(control);
    }
    for (const auto& record : rare) {
      emit(record.first, now_us(), [&](detail::JsonLine& j) { j.raw(record.second); });
      any = true;
    }
    for (auto* p : producers) {
      auto tail = p->tail_.load(std::memory_order_relaxed);
      const auto head = p->head_.load(std::memory_order_acquire);
      // Bounded batch: a stalled disk lets the rings fill (back-pressure).
      for (; tail != head && out.size() < (8u << 20); ++tail) {
        Event& e = p->slots_[tail & p->mask_];
        emit_event(e);
        e.policy_set.reset();  // release the policy on this thread, not the I/O one
        // Write in cache-sized pieces: a batch that outgrows the CPU caches
        // costs more to copy into the page cache than to format.
        if (out.size() >= write_chunk && fd >= 0) flush();
        if (config.max_file_bytes && fd >= 0 && file_bytes + out.size() >= config.max_file_bytes) rotate("rotate");
      }
      any |= tail != p->tail_.load(std::memory_order_relaxed);
      p->tail_.store(tail, std::memory_order_release);
    }
    std::uint64_t dropped = 0;
    for (auto* p : producers) dropped += p->dropped_.load(std::memory_order_relaxed);
    if (dropped != drops_logged) {
      const auto lost = dropped - drops_logged;
      emit("drops", now_us(), [&](detail::JsonLine& j) {
        j.num("count", static_cast<std::int64_t>(lost)).num("total", static_cast<std::int64_t>(dropped));
      });
      drops_logged = dropped;
    }
    return any;
  }

  void run() {
    using namespace std::chrono;
    for (;;) {
      // One round per wake: a producer's ring half full, a rare record, a
      // stop, or the flush interval. Under load that batches hundreds of
      // records into one write(); a writer that looped without sleeping
      // would make a system call for every record or two.
      {
        std::unique_lock lock(wake_mutex);
        wake_cv.wait_for(lock, config.flush_interval, [&] { return wake_flag || stop.load(); });
        wake_flag = false;
      }
      const bool stopping = stop.load();
      if (reopen.exchange(false)) reopen_file();
      bool busy = drain_once();
      // On stop, drain until every producer is empty.
      while (busy && stopping) busy = drain_once();
      const auto now = steady_clock::now();
      if (since_checkpoint > 0 && now - last_checkpoint >= config.checkpoint_interval) emit_checkpoint(false);
      if (stopping) {
        close_file(true);
        return;
      }
      if (!out.empty() && fd >= 0) flush();
      // A burst may have grown the buffer to its 8 MiB cap: give that back.
      if (out.empty() && out.capacity() > (2u << 20)) out.shrink(1 << 20);
      if (dirty && now - last_fsync >= config.fsync_interval) {
        ::fdatasync(fd);
        dirty = false;
        last_fsync = now;
      }
    }
  }
};

Writer::Writer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Writer::~Writer() {
  impl_->stop = true;
  wake();
  if (impl_->thread.joinable()) impl_->thread.join();
}

boost::system::result<std::unique_ptr<Writer>, std::string> Writer::open(WriterConfig config, unsigned producers) {
  auto impl = std::make_unique<Impl>();
  if (config.path.empty()) return std::string("no log path given");
  const auto dir = std::filesystem::path(config.path).parent_path();
  if (!dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) return "cannot create the log folder " + dir.string() + ": " + ec.message();
  }
  if (!config.key_file.empty()) {
    if (auto e = load_or_create_key(config.key_file, dir.empty() ? "." : dir.string(), impl->key); !e.empty())
      return e;
  }
  unsigned char rnd[4];
  RAND_bytes(rnd, sizeof rnd);
  impl->run_id = detail::to_hex(std::string_view(reinterpret_cast<const char*>(rnd), sizeof rnd));

  // Continue the chain and sequence of an existing log.
  auto tail = detail::read_tail(config.path);
  if (!tail) return tail.error();
  impl->prev = tail->last_hash;
  impl->seq = tail->last_seq;
  std::string previous_file;
  if (tail->torn) {
    // Leave the torn line where `verify` will find it, at the end of a rotated file.
    previous_file = detail::rotate_siblings(config.path);
  }
  impl->config = std::move(config);
  impl->out.reserve(1 << 20);  // room for a burst before the first grow
  if (auto r = impl->open_file("start", previous_file, tail->torn); !r) return r.error();
  impl->flush();

  std::unique_ptr<Writer> w(new Writer(std::move(impl)));
  for (unsigned i = 0; i < producers; ++i) {
    w->producers_.push_back(
        std::make_unique<Producer>(*w, i, w->impl_->config.queue_slots, w->impl_->config.drop_when_full));
    w->impl_->producers.push_back(w->producers_.back().get());
  }
  w->impl_->thread = std::thread([im = w->impl_.get()] {
    ::pthread_setname_np(::pthread_self(), "sandgate-log");  // for top, perf and gdb
    im->run();
  });
  return w;
}

const Source* Writer::add_source(std::string sandbox, std::string listener) {
  std::lock_guard lock(impl_->sources_mutex);
  return &impl_->sources.emplace_back(Source{std::move(sandbox), std::move(listener)});
}

void Writer::policy_loaded(std::string_view event, const config::PolicySet* set, std::string_view file,
                           const config::Diagnostics& errors) {
  detail::LineBuffer members;
  detail::JsonLine j(members);
  j.str("event", event).str("file", file).str("result", set ? "ok" : "error");
  if (set) {
    j.str("sha256", set->sha256).str("mode", policy::to_string(set->default_policy->mode()));
    j.boolean("report", set->default_policy->report());
    j.key("sandboxes").raw("[");
    bool first = true;
    for (const auto& [name, p] : set->named) {
      if (!first) j.raw(",");
      first = false;
      j.string(name);
    }
    j.raw("]");
  } else {
    j.null("sha256");
  }
  j.key("errors").raw("[");
  for (std::size_t i = 0; i < errors.size(); ++i) {
    if (i) j.raw(",");
    j.string(errors[i].to_string());
  }
  j.raw("]");
  {
    std::lock_guard lock(impl_->control_mutex);
    impl_->control.emplace_back("policy", std::string(members.view()));
  }
  wake();
}

void Writer::reopen() noexcept {
  impl_->reopen = true;
  wake();
}

void Writer::wake() noexcept {
  // Set under the mutex so the wake cannot fall between the writer's check
  // and its sleep. Rare: once per half ring, a full ring or a policy load.
  {
    std::lock_guard lock(impl_->wake_mutex);
    impl_->wake_flag = true;
  }
  impl_->wake_cv.notify_one();
}

WriterStats Writer::stats() const noexcept {
  WriterStats s;
  s.records = impl_->records.load(std::memory_order_relaxed);
  s.bytes = impl_->bytes.load(std::memory_order_relaxed);
  s.rotations = impl_->rotations.load(std::memory_order_relaxed);
  s.write_errors = impl_->write_errors.load(std::memory_order_relaxed);
  for (const auto& p : producers_) {
    s.dropped += p->dropped_.load(std::memory_order_relaxed);
    s.queue_depth += p->depth();
  }
  return s;
}

const std::string& Writer::run_id() const noexcept { return impl_->run_id; }
const std::string& Writer::path() const noexcept { return impl_->config.path; }

std::string load_or_create_key(const std::string& path, const std::string& log_dir, std::string& key) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const auto key_dir = fs::weakly_canonical(fs::absolute(path).parent_path(), ec);
  const auto logs = fs::weakly_canonical(fs::absolute(log_dir), ec);
  const auto rel = key_dir.lexically_relative(logs);
  if (!rel.empty() && *rel.begin() != "..")
    return "the log key " + path + " is inside the log folder " + logs.string() +
           "; keep it elsewhere (whoever can rewrite the log must not read the key)";
  if (!fs::exists(path, ec)) {
    fs::create_directories(fs::absolute(path).parent_path(), ec);
    unsigned char raw[32];
    if (RAND_bytes(raw, sizeof raw) != 1) return "cannot draw random bytes for the log key";
    const auto hex = detail::to_hex(std::string_view(reinterpret_cast<const char*>(raw), sizeof raw));
    // Invariant: the key file is created 0600 and closed before anyone reads it.
    const int f = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (f < 0) return "cannot create the log key " + path + ": " + std::strerror(errno);
    const std::string line = hex + "\n";
    const bool ok = ::write(f, line.data(), line.size()) == static_cast<ssize_t>(line.size());
    ::close(f);
    if (!ok) return "cannot write the log key " + path;
  }
  std::ifstream in(path);
  if (!(in >> key) || key.size() < 32)
    return "the log key " + path + " is unreadable or shorter than 32 characters";
  return {};
}

}  // namespace sandgate::netlog
