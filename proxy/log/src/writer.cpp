// The writer: drains the producers' rings, formats each event as one JSON
// line ending in the previous line's SHA-256, writes in batches,
// checkpoints, rotates and fsyncs on its own schedule.
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
#include <mutex>
#include <optional>
#include <sstream>
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
    case EndReason::request_refused: return "request-refused";
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
  slots_ = std::allocator<Event>().allocate(n);
  mask_ = n - 1;
}

Producer::~Producer() {
  std::destroy_n(slots_, built_);
  std::allocator<Event>().deallocate(slots_, mask_ + 1);
}

Event* Producer::claim() noexcept {
  const auto head = head_.load(std::memory_order_relaxed);
  if (head - cached_tail_ > mask_) {
    cached_tail_ = tail_.load(std::memory_order_acquire);
    if (head - cached_tail_ > mask_) {
      writer_.wake();
      return nullptr;
    }
  }
  if (head == built_ && built_ <= mask_) std::construct_at(&slots_[built_++]);
  return &slots_[head & mask_];
}

void Producer::publish() noexcept {
  const auto head = head_.load(std::memory_order_relaxed) + 1;
  head_.store(head, std::memory_order_release);
  // Past half full: wake the writer rather than wait for its next round.
  if (head - cached_tail_ == (mask_ + 1) / 2) writer_.wake();
}

// --- Writer ---
//
// Three threads, so that one record's SHA-256 (about 400 ns for 600 bytes,
// the largest single cost) is not in series with formatting the next one,
// and fdatasync(2) never stalls the writing:
//
//   formatter ("sandgate-log"): drains the producers' rings and the rare
//     records, writes each record's body (everything but its chain tail)
//     into a Batch and hashes that body into the record's own SHA-256
//     context;
//   chainer ("sandgate-chain"): appends each record's tail
//     `,"seq":N,"prev":"<hex>"}`, finishes its hash (two blocks, about
//     90 ns), writes, checkpoints and rotates;
//   syncer ("sandgate-sync"): fdatasync every fsync_interval.
//
// The chain link is the tail, so the body's hash can start before the
// previous line's hash is known: SHA-256 absorbs a prefix, and its state
// carries over.

namespace {

// Record bodies on their way from the formatter to the chainer.
struct Batch {
  detail::LineBuffer text;  // bodies back to back, each without its tail
  detail::JsonLine json{text};
  std::vector<std::uint32_t> ends;  // where each body ends in text
  std::vector<std::unique_ptr<detail::Sha256>> hashes;  // hashes[i] has absorbed body i; reused
  std::size_t chained = 0;  // bodies the chainer has taken (fewer than count() while it waits for a file)
  static constexpr std::size_t soft_limit = 256 << 10;

  std::size_t count() const noexcept { return ends.size(); }
  bool full() const noexcept { return text.size() >= soft_limit; }
  void clear() noexcept {
    text.consume(text.size());
    ends.clear();
    chained = 0;
  }
};

// `{"schema_version":1,"type":"<type>","time":"...Z"` and the body's own members.
class RecordHead {
 public:
  void write(detail::JsonLine& j, std::string_view type, std::int64_t us) {
    j.raw("{\"schema_version\":1,\"type\":\"").raw(type).raw("\"");
    const std::int64_t s = us / 1'000'000;
    if (s != cached_second_) {
      const time_t t = s;
      tm parts{};
      gmtime_r(&t, &parts);
      std::strftime(cached_time_, sizeof cached_time_, "%Y-%m-%dT%H:%M:%S", &parts);
      cached_second_ = s;
    }
    char frac[] = ".000000Z\"";
    for (std::int64_t v = us % 1'000'000, i = 6; i >= 1; --i, v /= 10) frac[i] = static_cast<char>('0' + v % 10);
    j.key("time").raw("\"").raw(std::string_view(cached_time_, 19)).raw(frac);
  }

 private:
  std::int64_t cached_second_ = -1;
  char cached_time_[20] = {};
};

std::int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

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

  // Batches between the threads: at most batch_count exist, so a chainer
  // stalled on a full disk stops the formatter, whose rings then fill
  // (back-pressure) or drop.
  static constexpr std::size_t batch_count = 4;
  std::mutex batch_mutex;
  std::condition_variable to_chainer, to_formatter;
  std::deque<std::unique_ptr<Batch>> full_batches, free_batches;  // guarded by batch_mutex
  bool formatter_done = false;                                     // guarded by batch_mutex

  std::thread formatter_thread, chainer_thread;
  std::atomic<std::uint64_t> records{0}, bytes{0}, rotations{0}, write_errors{0};

  // --- formatter thread ---

  std::unique_ptr<Batch> batch;  // being filled
  RecordHead head;
  std::uint64_t drops_logged = 0;

  // Appends one record's body to the batch and hashes it.
  template <class Body>
  void format(std::string_view type, std::int64_t time_us, Body&& body) {
    auto& b = *batch;
    const auto start = b.text.size();
    head.write(b.json, type, time_us);
    body(b.json);
    const auto i = b.count();
    if (b.hashes.size() == i) b.hashes.push_back(std::make_unique<detail::Sha256>());
    b.hashes[i]->start();
    b.hashes[i]->update(b.text.view().substr(start));
    b.ends.push_back(static_cast<std::uint32_t>(b.text.size()));
    if (b.full()) hand_over();
  }

  // Gives the batch to the chainer and takes an empty one, waiting when all
  // are in use.
  void hand_over() {
    std::unique_lock lock(batch_mutex);
    if (batch->count() > 0) {
      full_batches.push_back(std::move(batch));
      to_chainer.notify_one();
    }
    if (!batch) {
      to_formatter.wait(lock, [&] { return !free_batches.empty(); });
      batch = std::move(free_batches.front());
      free_batches.pop_front();
    }
  }

  void format_event(const Event& e) {
    // "<run>-<16 hex digits>": unique across threads and runs.
    char id_buf[40];
    const auto run = run_id.size();
    std::memcpy(id_buf, run_id.data(), run);
    id_buf[run] = '-';
    for (int i = 0; i < 16; ++i) id_buf[run + 1 + i] = "0123456789abcdef"[(e.id >> (60 - 4 * i)) & 15];
    const std::string_view id(id_buf, run + 17);
    if (e.kind == Event::Kind::close) {
      format("close", e.time_us, [&](detail::JsonLine& j) {
        j.code("id", id).str("sandbox", e.source ? e.source->sandbox : "");
        j.num("bytes_up", static_cast<std::int64_t>(e.bytes_up)).num("bytes_down", static_cast<std::int64_t>(e.bytes_down));
        j.num("duration_us", e.duration_us).code("end", to_string(e.end));
        if (e.http_status) j.num("status", e.http_status);
      });
      return;
    }
    format("decision", e.time_us, [&](detail::JsonLine& j) {
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

  // One pass over the rare records and every ring; returns how many it found.
  std::uint64_t drain_once() {
    std::uint64_t found = 0;
    std::vector<std::pair<std::string, std::string>> rare;
    {
      std::lock_guard lock(control_mutex);
      rare.swap(control);
    }
    for (const auto& record : rare) {
      format(record.first, now_us(), [&](detail::JsonLine& j) { j.raw(record.second); });
      ++found;
    }
    for (auto* p : producers) {
      const auto first = p->tail_.load(std::memory_order_relaxed);
      auto tail = first;
      const auto head_seen = p->head_.load(std::memory_order_acquire);
      for (; tail != head_seen; ++tail) {
        Event& e = p->slots_[tail & p->mask_];
        format_event(e);
        e.policy_set.reset();  // release the policy on this thread, not the I/O one
        // Free the slots as each batch leaves, not only at the end of the pass.
        if (batch->count() == 0) p->tail_.store(tail + 1, std::memory_order_release);
      }
      found += tail - first;
      p->tail_.store(tail, std::memory_order_release);
    }
    std::uint64_t dropped = 0;
    for (auto* p : producers) dropped += p->dropped_.load(std::memory_order_relaxed);
    if (dropped != drops_logged) {
      const auto lost = dropped - drops_logged;
      format("drops", now_us(), [&](detail::JsonLine& j) {
        j.num("count", static_cast<std::int64_t>(lost)).num("total", static_cast<std::int64_t>(dropped));
      });
      drops_logged = dropped;
    }
    return found;
  }

  void run_formatter() {
    for (;;) {
      // One round per wake: a producer's ring half full, a rare record, a
      // stop, or the flush interval. Under load that batches hundreds of
      // records per hand-over and per write().
      {
        std::unique_lock lock(wake_mutex);
        wake_cv.wait_for(lock, config.flush_interval, [&] { return wake_flag || stop.load(); });
        wake_flag = false;
      }
      const bool stopping = stop.load();
      auto found = drain_once();
      // On stop, drain until every producer is empty.
      while (found > 0 && stopping) found = drain_once();
      if (batch->count() > 0) hand_over();
      if (stopping) {
        std::lock_guard lock(batch_mutex);
        formatter_done = true;
        to_chainer.notify_one();
        return;
      }
    }
  }

  // --- chainer thread ---

  int fd = -1;
  std::uint64_t file_bytes = 0;
  std::uint64_t seq = 0;
  detail::DigestHex prev{};
  std::uint64_t since_checkpoint = 0;
  std::chrono::steady_clock::time_point last_checkpoint = std::chrono::steady_clock::now();
  std::atomic<bool> dirty{false};  // written since the last fdatasync
  std::mutex fd_mutex;             // the syncer's hold on fd; the chainer changes fd only under it
  std::atomic<std::uint64_t> written{0};  // fd's size after the last write(2)
  std::uint64_t released = 0;             // fd's pages before this were dropped; under fd_mutex
  detail::LineBuffer out;
  std::uint64_t unwritten_records = 0;  // lines in out; `records` counts them once all of out is written
  detail::JsonLine json{out};
  RecordHead own_head;
  detail::Sha256 sha;

  static constexpr std::size_t write_chunk = 256 << 10;
  static constexpr std::size_t max_unwritten = 8 << 20;

  // A file that did not open at a rotation or reopen (its folder removed, no
  // descriptor free, ...): tried again every second. Meanwhile nothing is
  // chained, so the file still starts with its `file` record once it opens,
  // and the records back up into the batches and rings (back-pressure).
  struct PendingOpen {
    std::string reason, previous_file;
    std::chrono::steady_clock::time_point next_try;
  };
  std::optional<PendingOpen> pending_open;
  std::unique_ptr<Batch> held;  // a batch part chained when the file closed; goes on first

  // One line on stderr, in one write(2): no stream state that a failed
  // write (a full disk under a redirected stderr) would leave set, silencing
  // every later line, and no interleaving with the proxy's threads.
  static void say(const std::string& what) {
    const std::string line = "sandgate: network log: " + what + "\n";
    (void)!::write(2, line.data(), line.size());
  }

  // What fails with the file (opening or writing it), "" while nothing
  // does: said on stderr as it starts and ends and each minute it lasts,
  // and read by Writer::problem from any thread.
  mutable std::mutex problem_mutex;
  std::string problem;                                 // guarded by problem_mutex
  std::chrono::steady_clock::time_point problem_said;  // chainer thread

  std::string current_problem() const {
    std::lock_guard lock(problem_mutex);
    return problem;
  }
  void report_problem(const std::string& what) {
    const auto now = std::chrono::steady_clock::now();
    {
      std::lock_guard lock(problem_mutex);
      if (what == problem && now - problem_said < std::chrono::minutes(1)) return;
      problem = what;
    }
    problem_said = now;
    say(what + "; its records are held and it is tried again shortly (new connections wait once the writer's"
               " buffers are full)");
  }
  void report_recovery() {
    {
      std::lock_guard lock(problem_mutex);
      if (problem.empty()) return;
      problem.clear();
    }
    say(config.path + " is written again, and what was held meanwhile is in it");
  }

  // Appends `,"seq":N,"prev":"<hex>"}` and the newline to out, and moves the
  // chain on to the hash of the line `hash` has absorbed up to the tail.
  void close_record(detail::Sha256& hash) {
    const auto start = out.size();
    json.num("seq", static_cast<std::int64_t>(++seq));
    json.key("prev").raw("\"").raw(std::string_view(prev.data(), prev.size())).raw("\"}");
    hash.update(out.view().substr(start));
    prev = detail::to_hex(hash.finish());
    out.append("\n");
    ++unwritten_records;
  }

  // A record of the chainer's own (file, checkpoint), formatted whole here.
  template <class Body>
  void emit(std::string_view type, Body&& body) {
    const auto start = out.size();
    own_head.write(json, type, now_us());
    body(json);
    sha.start();
    sha.update(out.view().substr(start));
    close_record(sha);
  }

  // Chains b's records into out; false when a rotation's new file did not
  // open, with b.chained saying where to go on once it does.
  bool chain_batch(Batch& b) {
    std::uint32_t begin = b.chained ? b.ends[b.chained - 1] : 0;
    for (std::size_t i = b.chained; i < b.count(); ++i) {
      if (fd < 0 && !stop.load()) {
        b.chained = i;
        return false;
      }
      const auto end = b.ends[i];
      out.append(b.text.view().substr(begin, end - begin));
      close_record(*b.hashes[i]);
      begin = end;
      // Every checkpoint_records records (of any type) a checkpoint follows:
      // the bound `verify` holds each file to, from its `file` record.
      if (++since_checkpoint >= config.checkpoint_records) emit_checkpoint(false);
      // Write in cache-sized pieces: a batch that outgrows the CPU caches
      // costs more to copy into the page cache than to format.
      if (out.size() >= write_chunk && fd >= 0) flush();
      if (config.max_file_bytes && fd >= 0 && file_bytes + out.size() >= config.max_file_bytes) rotate("rotate");
    }
    b.chained = b.count();
    return true;
  }

  void emit_file_record(std::string_view reason, std::string_view previous_file, bool previous_torn) {
    emit("file", [&](detail::JsonLine& j) {
      j.str("run", run_id).str("reason", reason).str("previous_file", previous_file);
      j.boolean("previous_torn", previous_torn);
      j.num("pid", ::getpid()).num("checkpoint_records", static_cast<std::int64_t>(config.checkpoint_records));
      j.boolean("hmac", !key.empty());
    });
    ++since_checkpoint;  // `verify` counts a file's records from its file record
  }

  void emit_checkpoint(bool final) {
    // The HMAC covers the hash of the line before it, so the whole chain.
    const std::string mac = key.empty() ? std::string() : detail::hmac_hex(key, {prev.data(), prev.size()});
    const auto covered = since_checkpoint;
    emit("checkpoint", [&](detail::JsonLine& j) {
      j.num("records", static_cast<std::int64_t>(covered)).boolean("final", final);
      if (mac.empty()) j.null("hmac");
      else j.str("hmac", mac);
    });
    since_checkpoint = 0;
    last_checkpoint = std::chrono::steady_clock::now();
  }

  // --- the file (chainer thread) ---

  boost::system::result<void, std::string> open_file(std::string_view reason, std::string_view previous_file,
                                                     bool previous_torn) {
    // The folder too: one removed while the proxy runs comes back at the next rotation or reopen.
    if (const auto dir = std::filesystem::path(config.path).parent_path(); !dir.empty()) {
      std::error_code ec;
      std::filesystem::create_directories(dir, ec);
      if (ec) return "cannot create the log folder " + dir.string() + ": " + ec.message();
    }
    const int f = ::open(config.path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (f < 0) return "cannot open the log " + config.path + ": " + std::strerror(errno);
    // One writer per log: a second proxy on the same file would fork the chain.
    if (::flock(f, LOCK_EX | LOCK_NB) != 0) {
      ::close(f);
      return "the log " + config.path + " is locked by another sandgate process; give each proxy its own --log";
    }
    struct stat st {};
    ::fstat(f, &st);
    file_bytes = static_cast<std::uint64_t>(st.st_size);
    {
      std::lock_guard lock(fd_mutex);
      fd = f;
      written.store(file_bytes, std::memory_order_relaxed);
      released = 0;
    }
    emit_file_record(reason, previous_file, previous_torn);
    return {};
  }

  void close_file(bool final) {
    if (fd < 0) return;
    emit_checkpoint(final);
    flush();
    ::fsync(fd);
    std::lock_guard lock(fd_mutex);
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
        // the batches and then the rings fill meanwhile and hold back new
        // connections.
        write_errors.fetch_add(1, std::memory_order_relaxed);
        report_problem("cannot write " + config.path + ": " + std::strerror(errno));
        break;
      }
      done += static_cast<std::size_t>(n);
    }
    if (done == out.size()) {
      records.fetch_add(unwritten_records, std::memory_order_relaxed);
      unwritten_records = 0;
      report_recovery();
    }
    out.consume(done);
    file_bytes += done;
    written.store(file_bytes, std::memory_order_release);
    bytes.fetch_add(done, std::memory_order_relaxed);
    if (done > 0) dirty.store(true, std::memory_order_relaxed);
  }

  void rotate(std::string_view reason) {
    close_file(false);
    const auto previous = detail::rotate_siblings(config.path);
    rotations.fetch_add(1, std::memory_order_relaxed);
    open_or_hold(reason, previous);
  }

  void reopen_file() {
    // logrotate has renamed the file we hold; finish it and start a new one.
    close_file(false);
    rotations.fetch_add(1, std::memory_order_relaxed);
    open_or_hold("reopen", "");
  }

  void open_or_hold(std::string_view reason, std::string_view previous_file) {
    if (auto r = open_file(reason, previous_file, false); !r) {
      write_errors.fetch_add(1, std::memory_order_relaxed);
      report_problem(r.error());
      pending_open = PendingOpen{std::string(reason), std::string(previous_file),
                                 std::chrono::steady_clock::now() + std::chrono::seconds(1)};
      return;
    }
    pending_open.reset();
    if (out.empty()) report_recovery();  // else once what is held is written
  }

  void run_chainer() {
    using namespace std::chrono;
    for (;;) {
      std::unique_ptr<Batch> b;
      bool done = false;
      {
        std::unique_lock lock(batch_mutex);
        // While the disk refuses writes (full, I/O errors) take no more:
        // the batches, then the rings fill and hold back new connections.
        // At a stop, take them anyway: the rings are drained once more and
        // what cannot be written is lost, rather than hang the exit.
        const auto may_take = [&] { return !held && ((out.size() < max_unwritten && fd >= 0) || stop.load()); };
        to_chainer.wait_for(lock, config.flush_interval, [&] {
          return reopen.load() || (may_take() && (!full_batches.empty() || formatter_done));
        });
        if (may_take() && !full_batches.empty()) {
          b = std::move(full_batches.front());
          full_batches.pop_front();
        }
        done = formatter_done && full_batches.empty() && !b && !held;
      }
      if (reopen.exchange(false)) reopen_file();
      if (pending_open && (steady_clock::now() >= pending_open->next_try || stop.load())) {
        const auto p = std::move(*pending_open);
        open_or_hold(p.reason, p.previous_file);
      }
      if (!b && held && (fd >= 0 || stop.load())) b = std::move(held);
      if (b && !chain_batch(*b)) held = std::move(b);
      if (b) {
        b->clear();
        std::lock_guard lock(batch_mutex);
        free_batches.push_back(std::move(b));
        to_formatter.notify_one();
      }
      if (done) {
        if (fd < 0 && unwritten_records > 0)
          say(std::to_string(unwritten_records) + " records could not be written to " + config.path +
              " before the stop (" + current_problem() + ")");
        close_file(true);
        return;
      }
      const auto now = steady_clock::now();
      if (fd >= 0 && since_checkpoint > 0 && now - last_checkpoint >= config.checkpoint_interval)
        emit_checkpoint(false);
      if (!out.empty() && fd >= 0) flush();
      // Writes failed for a while and the buffer grew: give that back.
      if (out.empty() && out.capacity() > (2u << 20)) out.shrink(1 << 20);
      if (config.fsync_interval.count() == 0 && dirty.exchange(false) && fd >= 0) sync_file();
    }
  }

  // fdatasync, then drop the pages it made clean from the page cache. Nobody
  // reads them back soon (a follower reads before the sync), and without
  // this every write(2) lands in newly allocated page cache: here about three
  // times the cost of one that reuses the pages just dropped, and the cache
  // fills with log at the expense of what the host caches for others.
  // A partly written last page stays: the next write would read it back.
  void sync_file() {
    std::lock_guard hold(fd_mutex);
    if (fd < 0) return;
    const auto end = written.load(std::memory_order_acquire);  // covered by this sync
    if (::fdatasync(fd) != 0) return;
    static const auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
    const auto clean = end / page * page;
    if (clean <= released) return;
    ::posix_fadvise(fd, static_cast<off_t>(released), static_cast<off_t>(clean - released), POSIX_FADV_DONTNEED);
    released = clean;
  }

  // --- syncer thread (when fsync_interval > 0) ---
  //
  // fdatasync(2) of a busy log takes a fifth of a second here; on the
  // chainer it would stall the pipeline for that long and fill the rings.

  std::mutex sync_mutex;
  std::condition_variable sync_cv;
  bool sync_stop = false;  // guarded by sync_mutex
  std::thread syncer_thread;

  void run_syncer() {
    std::unique_lock lock(sync_mutex);
    while (!sync_cv.wait_for(lock, config.fsync_interval, [&] { return sync_stop; })) {
      lock.unlock();
      if (dirty.exchange(false)) sync_file();
      lock.lock();
    }
  }
};

Writer::Writer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Writer::~Writer() {
  impl_->stop = true;
  wake();
  if (impl_->formatter_thread.joinable()) impl_->formatter_thread.join();
  if (impl_->chainer_thread.joinable()) impl_->chainer_thread.join();  // it fsyncs and closes the file
  {
    std::lock_guard lock(impl_->sync_mutex);
    impl_->sync_stop = true;
  }
  impl_->sync_cv.notify_one();
  if (impl_->syncer_thread.joinable()) impl_->syncer_thread.join();
}

boost::system::result<std::unique_ptr<Writer>, std::string> Writer::open(WriterConfig config, unsigned producers) {
  auto impl = std::make_unique<Impl>();
  if (config.path.empty()) return std::string("no log path given");
  const auto dir = std::filesystem::path(config.path).parent_path();  // made by open_file
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

  impl->batch = std::make_unique<Batch>();
  for (std::size_t i = 1; i < Impl::batch_count; ++i) impl->free_batches.push_back(std::make_unique<Batch>());

  std::unique_ptr<Writer> w(new Writer(std::move(impl)));
  for (unsigned i = 0; i < producers; ++i) {
    w->producers_.push_back(
        std::make_unique<Producer>(*w, i, w->impl_->config.queue_slots, w->impl_->config.drop_when_full));
    w->impl_->producers.push_back(w->producers_.back().get());
  }
  // Named for top, perf and gdb.
  w->impl_->formatter_thread = std::thread([im = w->impl_.get()] {
    ::pthread_setname_np(::pthread_self(), "sandgate-log");
    im->run_formatter();
  });
  w->impl_->chainer_thread = std::thread([im = w->impl_.get()] {
    ::pthread_setname_np(::pthread_self(), "sandgate-chain");
    im->run_chainer();
  });
  if (w->impl_->config.fsync_interval.count() > 0)
    w->impl_->syncer_thread = std::thread([im = w->impl_.get()] {
      ::pthread_setname_np(::pthread_self(), "sandgate-sync");
      im->run_syncer();
    });
  return w;
}

const Source* Writer::add_source(std::string sandbox, std::string listener) {
  std::lock_guard lock(impl_->sources_mutex);
  return &impl_->sources.emplace_back(Source{std::move(sandbox), std::move(listener)});
}

void Writer::policy_loaded(std::string_view event, const config::PolicySet* set, std::string_view file,
                           const config::Diagnostics& errors, const std::optional<HostsLoad>& hosts) {
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
  if (hosts) {
    const bool ok = hosts->error.empty();
    j.key("hosts_file").raw("{\"file\":").string(hosts->file).str("result", ok ? "ok" : "error");
    if (ok) j.code("sha256", hosts->sha256).num("names", static_cast<std::int64_t>(hosts->names)).null("error");
    else j.null("sha256").str("error", hosts->error);
    j.raw("}");
  }
  {
    std::lock_guard lock(impl_->control_mutex);
    impl_->control.emplace_back("policy", std::string(members.view()));
  }
  wake();
}

void Writer::reopen() noexcept {
  {
    std::lock_guard lock(impl_->batch_mutex);  // so the chainer cannot miss it between check and sleep
    impl_->reopen = true;
  }
  impl_->to_chainer.notify_one();
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

std::string Writer::problem() const { return impl_->current_problem(); }

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
  return read_key(path, key);
}

std::string read_key(const std::string& path, std::string& key) {
  const auto text = config::read_whole_file(path);
  if (!text) return "cannot read the log key " + path + ": " + text.error().message();
  std::istringstream in(*text);
  if (!(in >> key) || key.size() < 32) {
    key.clear();
    return "the log key " + path + " is shorter than 32 characters";
  }
  return {};
}

}  // namespace sandgate::netlog
