// One client connection, from accept to close.
#pragma once

#include <array>
#include <atomic>
#include <memory>
#include <string>
#include <chrono>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/io_context.hpp>

#include "descriptors.h"
#include "metrics.h"
#include "hosts_file.h"
#include "resolver.h"
#include "sandgate/netlog/writer.h"
#include "sandgate/proxy/server.h"

namespace sandgate::proxy::detail {

// An open connection, as its thread's registries see it.
struct OpenConnection {
  virtual ~OpenConnection() = default;
  // Decides the connection's open destination (a tunnel's, or a plain-HTTP
  // exchange's) again under `set`, and ends it if denied.
  virtual void recheck(const config::PolicySet& set) = 0;
  // The proxy is stopping and the drain time is up: close both sides now
  // (the session still writes its close record).
  virtual void end_for_shutdown() = 0;
};

// Open connections per client address, approximately: addresses hash into
// a fixed table of atomic counters shared by all threads (no lock; two
// clients that collide share a budget).
struct ClientCounts {
  static constexpr std::size_t buckets = 4096;
  std::array<std::atomic<std::uint32_t>, buckets> open{};
};

// Shared by the sessions of one thread (one io_context): nothing here is
// written by two threads, except the relaxed counters the Server sums.
struct ThreadContext {
  boost::asio::io_context io{1};
  // The policy in force, as this thread sees it: a reload posts the new one
  // to each thread (so a request that follows a reload's report sees it), and
  // each request compares pointers, touching no atomic shared across threads.
  std::shared_ptr<const config::PolicySet> policy;
  std::shared_ptr<const HostsFile> hosts;
  Limits limits;
  std::atomic<std::size_t> open_connections{0};  // written by this thread, read by the drain
  std::unordered_set<OpenConnection*> sessions;    // every open session; touched only on this thread
  netlog::Producer* log = nullptr;                 // this thread's queue to the network log, if any
  std::unique_ptr<Dns> dns;                        // this thread's cache, /etc/hosts and DNS
  ClientCounts* clients = nullptr;                 // shared by all threads (atomics)
  struct Counters {
    std::atomic<std::uint64_t> connections{0}, requests{0}, denied{0}, spliced{0}, buffered{0}, http{0};
    std::atomic<std::uint64_t> log_waits{0};  // times a session waited for room in the log queue
  } counters;
  Metrics metrics;  // written by this thread, summed by /metrics
  SpareDescriptor spare;
};

// Starts serving one accepted connection; the session keeps itself alive.
// open_tunnels counts the listener's open tunnels across all threads.
// client_slot, when not null, is the client's counter; the session releases it.
// source names the listener in the network log; peer is the client's address
// as accept(2) returned it.
void start_session(boost::asio::generic::stream_protocol::socket client,
                   const boost::asio::generic::stream_protocol::endpoint& peer, ThreadContext& ctx,
                   const Listener& listener, const netlog::Source* source, std::atomic<std::size_t>& open_tunnels,
                   std::atomic<std::uint32_t>* client_slot);

}  // namespace sandgate::proxy::detail
