// The network log's writer: bounded per-thread queues drained by the log's
// own threads into a hash-chained JSON Lines file.
//
// Each I/O thread owns one Producer (a single-producer ring of Event slots):
// claim() a slot, fill it, publish(). Neither allocates nor takes a lock; a
// full ring makes claim() return nullptr and the caller chooses to wait
// (back-pressure, the default) or to drop (counted, and logged as a `drops`
// record). The writer's threads format, hash and write (writer.cpp says
// how the work is split); rare records (policy loads) go through a small
// locked queue.
//
// Every record carries `prev`, the SHA-256 of the line before it, across
// files and restarts; checkpoint records carry an HMAC of that chain under a
// key kept outside the log folder. docs/log.md has the schema.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/system/result.hpp>

#include "sandgate/netlog/event.h"

namespace sandgate::netlog {

struct WriterConfig {
  std::string path;      // the live file; rotated files sit beside it as PATH.1, PATH.2, ...
  std::string key_file;  // HMAC key (created with mode 0600 if missing); must not be in path's folder
  // Records reach the file (write(2)) at least this often: a kill -9 loses at most this much.
  std::chrono::milliseconds flush_interval{200};
  // fsync(2) at least this often (0: after every write): a power loss loses at most this much.
  std::chrono::milliseconds fsync_interval{1000};
  std::uint64_t max_file_bytes = 256ull << 20;  // rotate past this size (0: only on reopen())
  // A checkpoint (HMAC) after this many records, or this long after the last one.
  std::uint64_t checkpoint_records = 10'000;
  std::chrono::milliseconds checkpoint_interval{10'000};
  std::size_t queue_slots = 1024;  // per producer, rounded up to a power of two (~0.9 KiB each)
  bool drop_when_full = false;     // count drops instead of back-pressure
};

class Writer;

// One I/O thread's queue. Only that thread calls claim/publish/next_id.
class Producer {
 public:
  // A free slot to fill, or nullptr when the ring is full. Cost: two loads.
  Event* claim() noexcept;
  // Hands the claimed slot to the writer. Cost: one release store.
  void publish() noexcept;
  // Counts an event the caller gave up on (drop_when_full).
  void drop() noexcept { dropped_.fetch_add(1, std::memory_order_relaxed); }
  // A log-wide unique decision id (combined with the run id when written).
  std::uint64_t next_id() noexcept { return (index_ << 48) | ++ids_; }
  bool drop_when_full() const noexcept { return drop_when_full_; }
  std::size_t depth() const noexcept {
    return head_.load(std::memory_order_relaxed) - tail_.load(std::memory_order_relaxed);
  }

  Producer(Writer& writer, std::uint64_t index, std::size_t slots, bool drop_when_full);
  ~Producer();
  Producer(const Producer&) = delete;
  Producer& operator=(const Producer&) = delete;

 private:
  friend class Writer;
  Writer& writer_;
  std::uint64_t index_;
  std::uint64_t ids_ = 0;
  bool drop_when_full_;
  // Raw storage: a slot is constructed when the ring first reaches it, so
  // an idle proxy's ring costs memory only for the slots it has used.
  Event* slots_;
  std::size_t mask_;
  std::size_t built_ = 0;  // slots constructed so far (producer thread)
  std::uint64_t cached_tail_ = 0;        // producer's view of tail_
  alignas(64) std::atomic<std::uint64_t> head_{0};   // next slot to publish (producer writes)
  alignas(64) std::atomic<std::uint64_t> tail_{0};   // next slot to drain (writer writes)
  alignas(64) std::atomic<std::uint64_t> dropped_{0};
};

struct WriterStats {
  std::uint64_t records = 0;      // lines written, all types
  std::uint64_t dropped = 0;      // events given up on a full queue
  std::uint64_t queue_depth = 0;  // events waiting, all producers
  std::uint64_t bytes = 0;        // bytes written
  std::uint64_t rotations = 0;
  std::uint64_t write_errors = 0;
};

class Writer {
 public:
  // Opens (or continues) the log: reads the last record of an existing file to
  // continue its chain and sequence; a torn last line is left where it is (the
  // file is rotated away) so `verify` reports it. Starts the writer's threads.
  // Fails with a message naming the path and errno.
  static boost::system::result<std::unique_ptr<Writer>, std::string> open(WriterConfig config,
                                                                          unsigned producers);
  // Writes every queued event, a final checkpoint, fsyncs and closes.
  ~Writer();

  Producer& producer(unsigned i) noexcept { return *producers_[i]; }
  // Registers a listener; the pointer stays valid for the writer's life.
  const Source* add_source(std::string sandbox, std::string listener);

  // The --hosts-file a `policy` record names beside the policy: its names
  // decide where allowed requests go.
  struct HostsLoad {
    std::string file;
    std::string sha256;  // of the file loaded; "" when it did not load
    std::size_t names = 0;
    std::string error;   // why it did not load; "" when it did
  };
  // A `policy` record (start or reload; errors on failure), with the hosts
  // file when there is one. Any thread; takes a lock.
  void policy_loaded(std::string_view event, const config::PolicySet* set, std::string_view file,
                     const config::Diagnostics& errors, const std::optional<HostsLoad>& hosts = std::nullopt);
  // Reopens the file (SIGUSR1, after logrotate renamed it). Any thread.
  void reopen() noexcept;
  // Wakes the writer to drain now (used when a producer passes its watermark).
  void wake() noexcept;

  WriterStats stats() const noexcept;
  // Why the file is not being written right now (opening or writing it
  // fails: its records are held), or "" while it is. Any thread; takes a lock.
  std::string problem() const;
  const std::string& run_id() const noexcept;
  const std::string& path() const noexcept;

 private:
  struct Impl;
  explicit Writer(std::unique_ptr<Impl> impl);
  std::vector<std::unique_ptr<Producer>> producers_;
  std::unique_ptr<Impl> impl_;
};

// Loads the HMAC key from `path`, creating it (32 random bytes, hex, mode
// 0600) when it does not exist, into `key`. Refuses a key inside `log_dir`.
// Returns an error message, or "" on success.
std::string load_or_create_key(const std::string& path, const std::string& log_dir, std::string& key);
// Reads the HMAC key at `path` (its first word, at least 32 characters)
// into `key`. Returns why it cannot ("cannot read the log key PATH: No such
// file or directory"), or "" on success.
std::string read_key(const std::string& path, std::string& key);

}  // namespace sandgate::netlog
